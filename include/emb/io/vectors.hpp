// emb/io/vectors.hpp — what the word-vector loaders return and the options they take.
#pragma once

#include <optional>
#include <utility>

#include "../index_span.hpp"
#include "../vocabulary.hpp"
#include "file_error.hpp"

namespace emb::io {

enum class Word2VecFormat {
  detect,  // told apart from the bytes after the header
  text,    // word2vec's -binary 0, fastText's .vec
  binary,  // word2vec's -binary 1 (float32 little-endian rows)
};

class VectorsLoadOptions {
 public:
  // Called as rows arrive (see emb::io::Progress).
  VectorsLoadOptions& progress(Progress callback) {
    progress_ = std::move(callback);
    return *this;
  }
  const Progress& progress() const { return progress_; }

  // word2vec only: force text or binary instead of detecting it.
  VectorsLoadOptions& format(Word2VecFormat f) {
    format_ = f;
    return *this;
  }
  Word2VecFormat format() const { return format_; }

  // GloVe: the vector size, instead of counting the numbers at the end of the first line
  // (needed only when the first token ends in number-like words, such as "route 66"; it also
  // lets a first line of two integers be read as a row). word2vec: the header must say this.
  VectorsLoadOptions& dim(std::optional<Index> d) {
    dim_ = d;
    return *this;
  }
  std::optional<Index> dim() const { return dim_; }

 private:
  Progress progress_;
  Word2VecFormat format_ = Word2VecFormat::detect;
  std::optional<Index> dim_;
};

// Row i of weight is the vector of vocab.token(i). A token listed again later in the file keeps
// its first vector; `duplicates` counts the rows dropped that way.
template <class T = float>
struct Vectors {
  Vocabulary vocab;
  Matrix<T> weight;
  Index duplicates = 0;
};

}  // namespace emb::io
