// emb/io/detail/fasttext_format.hpp — the reader of fastText's model files (.bin, and .ftz
// with product-quantized matrices), through a ByteSource so that the fuzzer runs this code.
//
// Layout (fastText 0.9, format version 12; version 11 is the same bytes), little-endian:
//   int32 magic 793712314, int32 version
//   args: int32 dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn, maxn,
//         lrUpdateRate; float64 t
//   dictionary: int32 size, nwords, nlabels; int64 ntokens, pruneidx_size (-1: not pruned);
//         size x (NUL-terminated word, int64 count, int8 type: 0 word, 1 label), words first;
//         pruneidx_size x (int32 bucket, int32 row - nwords)
//   uint8 quantized input; input matrix; uint8 quantized output; output matrix
//   dense matrix: int64 rows, int64 cols, rows * cols float32
//   quantized matrix: uint8 qnorm, int64 rows, int64 cols, int32 codesize, codesize codes,
//         product quantizer (int32 dim, nsubq, dsub, lastdsub, 256 * dim float32 centroids),
//         then when qnorm: rows norm codes and a second quantizer for the norms
//
// Every count is checked against the bytes left before anything is allocated, every field
// against what the rest of the file needs, and any fault throws FileError with its offset.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../detail/error.hpp"
#include "../../detail/fasttext_text.hpp"
#include "../../detail/huge_pages.hpp"
#include "../../index_span.hpp"
#include "../file_error.hpp"
#include "file.hpp"
#include "parse.hpp"

namespace emb::io::detail {

inline constexpr const char* fasttext_where = "emb::FastText::load";
inline constexpr std::int32_t fasttext_magic = 793712314;

// The args block as stored (enums as their int codes: loss hs=1 ns softmax ova, model cbow=1
// sg sup).
struct FastTextFileArgs {
  std::int32_t dim = 0, ws = 0, epoch = 0, min_count = 0, neg = 0, word_ngrams = 0;
  std::int32_t loss = 0, model = 0, bucket = 0, minn = 0, maxn = 0, lr_update_rate = 0;
  double t = 0.0;
};

// A model file's contents, matrices dequantized to float.
struct FastTextFile {
  std::int32_t version = 0;
  FastTextFileArgs args;
  emb::detail::FastTextDictionary dictionary;
  std::int32_t nwords = 0;
  std::int32_t nlabels = 0;
  std::int64_t ntokens = 0;
  std::int64_t pruned_size = -1;
  std::vector<std::pair<std::int32_t, std::int32_t>> pruned;  // bucket -> row - nwords
  bool quantized_input = false;
  bool quantized_output = false;
  Matrix<float> input;
  Matrix<float> output;
};

class FastTextReader {
 public:
  FastTextReader(ByteSource& source, const Progress& progress, bool huge_pages, std::size_t chunk)
      : scanner_(source, chunk),
        name_(source.name()),
        size_(source.size()),
        progress_(progress),
        huge_pages_(huge_pages) {}

  FastTextFile read() {
    FastTextFile file;
    read_header(file);
    read_args(file);
    read_dictionary(file);
    const bool supervised = file.args.model == 3;
    const std::int64_t input_rows =
        std::int64_t{file.nwords} + (file.pruned_size >= 0 ? file.pruned_size : file.args.bucket);
    const std::int64_t output_rows = supervised ? file.nlabels : file.nwords;
    ProgressReporter reporter(progress_, input_rows + output_rows);

    const std::uint64_t at = scanner_.offset();
    file.quantized_input = flag("the quantized-input flag");
    if (!file.quantized_input && file.pruned_size >= 0) {
      fail(at, emb::detail::concat(
                   "the dictionary is pruned (", file.pruned_size,
                   " n-gram buckets kept) but the input matrix is not quantized: fastText "
                   "refuses such files too (pruning comes only with quantization)"));
    }
    file.input = matrix("input", file.quantized_input, input_rows, file.args.dim, reporter, 0);
    const bool qout = flag("the quantized-output flag");
    // fastText reads the output as quantized only when the input is too.
    file.quantized_output = file.quantized_input && qout;
    file.output = matrix("output", file.quantized_output, output_rows, file.args.dim, reporter,
                         static_cast<Index>(input_rows));
    if (!scanner_.at_end()) {
      fail(scanner_.offset(), emb::detail::concat("expected the end of the file after the output "
                                                  "matrix, found ",
                                                  left(), " more bytes"));
    }
    return file;
  }

 private:
  [[noreturn]] void fail(std::uint64_t offset, const std::string& problem) const {
    throw FileError(fasttext_where, name_, 0, offset, problem);
  }

  std::uint64_t left() const {
    const std::uint64_t at = scanner_.offset();
    return size_ > at ? size_ - at : 0;
  }

  void bytes(void* dst, std::size_t n, const std::string& what) {
    const std::uint64_t at = scanner_.offset();
    if (left() < n || !scanner_.read_exact(dst, n)) {
      fail(at, emb::detail::concat("the file ends inside ", what, " (", n, " bytes needed, ",
                                   size_ > at ? size_ - at : 0, " left): it is truncated"));
    }
  }

  template <class T>
  T number(const std::string& what) {
    unsigned char b[sizeof(T)];
    bytes(b, sizeof(T), what);
    if (!host_is_little_endian()) reverse_bytes(b, sizeof(T));
    T v;
    std::memcpy(&v, b, sizeof(T));
    return v;
  }

  bool flag(const std::string& what) {
    const std::uint64_t at = scanner_.offset();
    const auto v = number<std::uint8_t>(what);
    if (v > 1) fail(at, emb::detail::concat(what, " is ", int{v}, "; expected 0 or 1"));
    return v == 1;
  }

  void read_header(FastTextFile& file) {
    if (size_ < 8) {
      fail(0, emb::detail::concat("expected a fastText model (magic number ", fasttext_magic,
                                  ", then the format version), but the file has only ", size_,
                                  " bytes"));
    }
    const auto magic = number<std::int32_t>("the magic number");
    if (magic != fasttext_magic) {
      fail(0, emb::detail::concat("expected fastText's magic number ", fasttext_magic,
                                  " (bytes ba 16 4f 2f), found ", magic,
                                  "; this is not a fastText .bin/.ftz model (a .vec text file "
                                  "loads with emb::io::load_word2vec)"));
    }
    file.version = number<std::int32_t>("the format version");
    if (file.version != 12 && file.version != 11) {
      fail(4, emb::detail::concat("format version ", file.version,
                                  " is not supported; expected 12 (fastText 0.9) or 11"));
    }
  }

  void read_args(FastTextFile& file) {
    FastTextFileArgs& a = file.args;
    const std::uint64_t start = scanner_.offset();
    a.dim = number<std::int32_t>("the args (dim)");
    a.ws = number<std::int32_t>("the args (ws)");
    a.epoch = number<std::int32_t>("the args (epoch)");
    a.min_count = number<std::int32_t>("the args (minCount)");
    a.neg = number<std::int32_t>("the args (neg)");
    a.word_ngrams = number<std::int32_t>("the args (wordNgrams)");
    a.loss = number<std::int32_t>("the args (loss)");
    a.model = number<std::int32_t>("the args (model)");
    a.bucket = number<std::int32_t>("the args (bucket)");
    a.minn = number<std::int32_t>("the args (minn)");
    a.maxn = number<std::int32_t>("the args (maxn)");
    a.lr_update_rate = number<std::int32_t>("the args (lrUpdateRate)");
    a.t = number<double>("the args (t)");
    if (a.dim <= 0) fail(start, emb::detail::concat("dim is ", a.dim, "; expected at least 1"));
    if (a.loss < 1 || a.loss > 4) {
      fail(start + 24, emb::detail::concat("loss is ", a.loss,
                                           "; expected 1 (hs), 2 (ns), 3 (softmax) or 4 (ova)"));
    }
    if (a.model < 1 || a.model > 3) {
      fail(start + 28, emb::detail::concat("model is ", a.model,
                                           "; expected 1 (cbow), 2 (skipgram) or 3 (supervised)"));
    }
    if (a.bucket < 0) {
      fail(start + 32, emb::detail::concat("bucket is ", a.bucket, "; expected 0 or more"));
    }
    // Older supervised models had no char n-grams: fastText reads version 11 so.
    if (file.version == 11 && a.model == 3) a.maxn = 0;
    if (a.bucket == 0 && emb::detail::char_ngrams_possible(a.minn, a.maxn)) {
      fail(start + 32, emb::detail::concat("bucket is 0, but minn ", a.minn, " and maxn ", a.maxn,
                                           " ask for char n-grams, which need buckets"));
    }
    if (a.bucket == 0 && a.model == 3 && a.word_ngrams > 1) {
      fail(start + 32, emb::detail::concat("bucket is 0, but wordNgrams ", a.word_ngrams,
                                           " asks for word n-grams, which need buckets"));
    }
  }

  void read_dictionary(FastTextFile& file) {
    const std::uint64_t start = scanner_.offset();
    const auto size = number<std::int32_t>("the dictionary size");
    file.nwords = number<std::int32_t>("the dictionary's word count");
    file.nlabels = number<std::int32_t>("the dictionary's label count");
    file.ntokens = number<std::int64_t>("the dictionary's token count");
    const std::uint64_t pruned_at = scanner_.offset();
    file.pruned_size = number<std::int64_t>("the dictionary's pruned-bucket count");
    if (size < 0 || file.nwords < 0 || file.nlabels < 0 ||
        std::int64_t{file.nwords} + file.nlabels != size) {
      fail(start, emb::detail::concat("the dictionary says ", size, " entries, ", file.nwords,
                                      " words and ", file.nlabels,
                                      " labels; expected non-negative counts with words + "
                                      "labels = entries"));
    }
    // An entry takes at least 10 bytes (an empty word's NUL, the count, the type).
    if (static_cast<std::uint64_t>(size) > left() / 10) {
      fail(start, emb::detail::concat("the dictionary says ", size,
                                      " entries, more than the ", left(),
                                      " bytes left can hold (10 bytes or more each): the file "
                                      "is truncated or damaged"));
    }
    file.dictionary.reserve(static_cast<std::size_t>(size));
    std::string word;
    for (std::int32_t i = 0; i < size; ++i) {
      const std::uint64_t at = scanner_.offset();
      const auto read = scanner_.read_until(
          '\0', static_cast<std::size_t>(std::min<std::uint64_t>(left(), SIZE_MAX)));
      if (!read) {
        fail(at, emb::detail::concat("the file ends inside the word of dictionary entry ", i,
                                     " (no terminating NUL byte): it is truncated"));
      }
      word.assign(read->data(), read->size());
      const std::uint64_t count_at = scanner_.offset();
      const auto count = number<std::int64_t>("a dictionary entry's count");
      if (count < 0) {
        fail(count_at, emb::detail::concat("dictionary entry ", i, " ('", printable(word),
                                           "') has count ", count, "; expected 0 or more"));
      }
      const std::uint64_t type_at = scanner_.offset();
      const auto type = number<std::uint8_t>("a dictionary entry's type");
      const int expected = i < file.nwords ? 0 : 1;
      if (type != expected) {
        fail(type_at, emb::detail::concat(
                          "dictionary entry ", i, " ('", printable(word), "') has type ",
                          int{type}, "; expected ", expected, " (",
                          expected == 0 ? "a word" : "a label", "): the dictionary lists its ",
                          file.nwords, " words, then its ", file.nlabels, " labels"));
      }
      const Index earlier = file.dictionary.add(word, count);
      if (earlier != i) {
        fail(at, emb::detail::concat("dictionary entry ", i, " ('", printable(word),
                                     "') repeats entry ", earlier));
      }
    }
    if (file.pruned_size < -1) {
      fail(pruned_at, emb::detail::concat("the pruned-bucket count is ", file.pruned_size,
                                          "; expected -1 (not pruned) or more"));
    }
    if (file.pruned_size > 0) {
      if (static_cast<std::uint64_t>(file.pruned_size) > left() / 8) {
        fail(pruned_at, emb::detail::concat("the dictionary says ", file.pruned_size,
                                            " pruned buckets, more than the ", left(),
                                            " bytes left can hold (8 bytes each)"));
      }
      file.pruned.reserve(static_cast<std::size_t>(file.pruned_size));
      for (std::int64_t i = 0; i < file.pruned_size; ++i) {
        const std::uint64_t at = scanner_.offset();
        const auto bucket = number<std::int32_t>("the pruned-bucket map");
        const auto row = number<std::int32_t>("the pruned-bucket map");
        if (bucket < 0 || bucket >= file.args.bucket || row < 0 || row >= file.pruned_size) {
          fail(at, emb::detail::concat("pruned-bucket entry ", i, " maps bucket ", bucket,
                                       " to n-gram row ", row, "; expected a bucket in [0, ",
                                       file.args.bucket, ") and a row in [0, ", file.pruned_size,
                                       ")"));
        }
        file.pruned.emplace_back(bucket, row);
      }
      std::vector<std::pair<std::int32_t, std::int32_t>> sorted = file.pruned;
      std::sort(sorted.begin(), sorted.end());
      for (std::size_t i = 1; i < sorted.size(); ++i) {
        if (sorted[i].first == sorted[i - 1].first) {
          fail(pruned_at, emb::detail::concat("the pruned-bucket map lists bucket ",
                                              sorted[i].first, " twice"));
        }
      }
    }
  }

  // A dense or quantized (rows, cols) matrix whose header must say `rows` and `cols`.
  Matrix<float> matrix(const char* which, bool quantized, std::int64_t rows, std::int32_t cols,
                       ProgressReporter& reporter, Index done_before) {
    const std::string what = std::string("the ") + which + " matrix";
    const bool qnorm = quantized && flag(what + "'s qnorm flag");
    const std::uint64_t shape_at = scanner_.offset();
    const auto m = number<std::int64_t>(what + "'s row count");
    const auto n = number<std::int64_t>(what + "'s column count");
    check_shape(which, shape_at, m, n, rows, cols);
    if (quantized) {
      Matrix<float> out = dequantize(what, qnorm, m, n);
      reporter.rows_done(done_before + static_cast<Index>(m));
      return out;
    }
    const std::uint64_t data_at = scanner_.offset();
    const auto total = static_cast<std::uint64_t>(m) * static_cast<std::uint64_t>(n);
    if (total > left() / sizeof(float)) {
      fail(data_at, emb::detail::concat(what, " needs ", total, " float32 values (", m, " x ", n,
                                        "), ", total * sizeof(float), " bytes, but only ", left(),
                                        " are left: the file is truncated"));
    }
    // Straight into the table's storage (no copy of the file in between), a block of rows per
    // read so that progress moves.
    Matrix<float> out(m, n);
    // Asked for: advised before the first write, a table of hundreds of MiB faults in 2 MiB at
    // a time and its random rows miss the TLB far less.
    if (huge_pages_) {
      emb::detail::advise_huge_pages(out.data(), static_cast<std::size_t>(total) * sizeof(float));
    }
    const auto row_bytes = static_cast<std::size_t>(n) * sizeof(float);
    const std::int64_t block =
        std::max<std::int64_t>(1, static_cast<std::int64_t>((std::size_t{8} << 20) / row_bytes));
    for (std::int64_t r = 0; r < m; r += block) {
      const std::int64_t count = std::min(block, m - r);
      bytes(out.data() + r * n, static_cast<std::size_t>(count) * row_bytes, what);
      reporter.rows_done(done_before + static_cast<Index>(r + count));
    }
    if (!host_is_little_endian()) {
      auto* p = reinterpret_cast<unsigned char*>(out.data());
      for (std::uint64_t i = 0; i < total; ++i) reverse_bytes(p + i * 4, 4);
    }
    return out;
  }

  void check_shape(const char* which, std::uint64_t at, std::int64_t m, std::int64_t n,
                   std::int64_t rows, std::int32_t cols) const {
    if (m != rows || n != cols) {
      fail(at, emb::detail::concat(
                   "the ", which, " matrix is (", m, ", ", n, "); expected (", rows, ", ", cols,
                   ") from the args and the dictionary (",
                   std::string_view(which) == "input" ? "words + buckets" : "one row per output",
                   ", dim columns)"));
    }
  }

  struct Quantizer {
    std::int32_t dim = 0, nsubq = 0, dsub = 0, lastdsub = 0;
    std::vector<float> centroids;  // 256 per sub-quantizer
    const float* centroid(std::int32_t m, std::uint8_t code) const noexcept {
      const auto k = static_cast<std::size_t>(code);
      if (m == nsubq - 1) {
        return centroids.data() + static_cast<std::size_t>(m) * 256 * static_cast<std::size_t>(dsub) +
               k * static_cast<std::size_t>(lastdsub);
      }
      return centroids.data() + (static_cast<std::size_t>(m) * 256 + k) * static_cast<std::size_t>(dsub);
    }
  };

  Quantizer quantizer(const std::string& what, std::int64_t expected_dim) {
    Quantizer q;
    const std::uint64_t at = scanner_.offset();
    q.dim = number<std::int32_t>(what);
    q.nsubq = number<std::int32_t>(what);
    q.dsub = number<std::int32_t>(what);
    q.lastdsub = number<std::int32_t>(what);
    const bool consistent = q.dim == expected_dim && q.nsubq >= 1 && q.dsub >= 1 &&
                            q.lastdsub >= 1 && q.lastdsub <= q.dsub &&
                            std::int64_t{q.nsubq - 1} * q.dsub + q.lastdsub == q.dim;
    if (!consistent) {
      fail(at, emb::detail::concat(what, " says dim ", q.dim, ", ", q.nsubq,
                                   " sub-quantizers of ", q.dsub, " (the last of ", q.lastdsub,
                                   "); expected dim ", expected_dim,
                                   " split into sub-vectors that add up to it"));
    }
    const auto count = static_cast<std::uint64_t>(q.dim) * 256;
    const std::uint64_t data_at = scanner_.offset();
    if (count > left() / sizeof(float)) {
      fail(data_at, emb::detail::concat(what, " needs ", count * sizeof(float),
                                        " bytes of centroids, but only ", left(),
                                        " are left: the file is truncated"));
    }
    q.centroids.resize(static_cast<std::size_t>(count));
    bytes(q.centroids.data(), q.centroids.size() * sizeof(float), what + "'s centroids");
    if (!host_is_little_endian()) {
      auto* p = reinterpret_cast<unsigned char*>(q.centroids.data());
      for (std::size_t i = 0; i < q.centroids.size(); ++i) reverse_bytes(p + i * 4, 4);
    }
    return q;
  }

  // Reads the codes, the quantizer and the norms of a quantized (m, n) matrix and returns its
  // rows: row i = norm_i * centroid values, the very products fastText adds when it sums rows,
  // so that a sum of these rows is bit for bit fastText's. The table is allocated only once
  // the codes and the quantizer have been read and agree with each other.
  Matrix<float> dequantize(const std::string& what, bool qnorm, std::int64_t m, std::int64_t n) {
    const std::uint64_t codes_at = scanner_.offset();
    const auto codesize = number<std::int32_t>(what + "'s code count");
    if (codesize < 0 || static_cast<std::uint64_t>(codesize) > left()) {
      fail(codes_at, emb::detail::concat(what, " says ", codesize, " codes; only ", left(),
                                         " bytes are left"));
    }
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(codesize));
    bytes(codes.data(), codes.size(), what + "'s codes");
    const std::uint64_t pq_at = scanner_.offset();
    const Quantizer pq = quantizer(what + "'s product quantizer", n);
    if (std::int64_t{codesize} != m * pq.nsubq) {
      fail(pq_at, emb::detail::concat(what, " has ", codesize, " codes; its quantizer needs ",
                                      m * pq.nsubq, " (", m, " rows x ", pq.nsubq,
                                      " sub-quantizers)"));
    }
    std::vector<std::uint8_t> norm_codes;
    Quantizer npq;
    if (qnorm) {
      norm_codes.resize(static_cast<std::size_t>(m));
      bytes(norm_codes.data(), norm_codes.size(), what + "'s norm codes");
      npq = quantizer(what + "'s norm quantizer", 1);
    }
    Matrix<float> out(m, n);
    const auto nsubq = static_cast<std::size_t>(pq.nsubq);
    for (std::int64_t i = 0; i < m; ++i) {
      const float norm =
          qnorm ? npq.centroid(0, norm_codes[static_cast<std::size_t>(i)])[0] : 1.0f;
      float* row = out.data() + i * n;
      const std::uint8_t* code = codes.data() + static_cast<std::size_t>(i) * nsubq;
      for (std::int32_t s = 0; s < pq.nsubq; ++s) {
        const float* c = pq.centroid(s, code[s]);
        const std::int32_t d = s == pq.nsubq - 1 ? pq.lastdsub : pq.dsub;
        float* dst = row + std::int64_t{s} * pq.dsub;
        for (std::int32_t j = 0; j < d; ++j) dst[j] = norm * c[j];
      }
    }
    return out;
  }

  Scanner scanner_;
  const std::string& name_;
  std::uint64_t size_;
  const Progress& progress_;
  bool huge_pages_;
};

// Reads a whole model from `source`; `huge_pages`: put dense matrices on 2 MiB pages; `chunk`
// is the read buffer (tests and the fuzzer shrink it to check that nothing depends on where
// reads split).
inline FastTextFile read_fasttext(ByteSource& source, const Progress& progress, bool huge_pages,
                                  std::size_t chunk = std::size_t{1} << 20) {
  return FastTextReader(source, progress, huge_pages, chunk).read();
}

}  // namespace emb::io::detail
