// emb/io/word2vec.hpp — pretrained word vectors: word2vec (text and binary) and fastText .vec
// files, read into a Vocabulary and a table whose row i is the vector of token i (GloVe files:
// emb/io/glove.hpp).
//
//   auto vectors = emb::io::load_word2vec<float>("vectors.bin");   // text or binary, detected
//   auto table = emb::Embedding<float>::from_pretrained(std::move(vectors.weight));
//   auto ids = vectors.vocab.encode_text("the cat sat");
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "../detail/error.hpp"
#include "../index_span.hpp"
#include "../vocabulary.hpp"
#include "detail/file.hpp"
#include "detail/parse.hpp"
#include "detail/text_rows.hpp"
#include "vectors.hpp"

namespace emb::io {

namespace detail {

inline constexpr const char* word2vec_where = "emb::io::load_word2vec";
// No real token is this long; a longer one in a binary file means misaligned rows.
inline constexpr std::size_t max_binary_token = std::size_t{1} << 16;

// word2vec / fastText text row: the token up to the first blank, then exactly `dim` numbers.
template <class T>
std::string_view parse_word2vec_row(const LineContext& ctx, Index dim, T* out) {
  const char* p = ctx.text.data();
  const char* const end = p + ctx.text.size();
  const char* q = p;
  while (q != end && !is_blank(*q)) ++q;
  if (q == p) ctx.fail(p, "expected a token at the start of the row, found a blank");
  const std::string_view token(p, static_cast<std::size_t>(q - p));
  p = q;
  for (Index k = 0; k < dim; ++k) {
    while (p != end && is_blank(*p)) ++p;
    if (p == end) {
      ctx.fail(p, emb::detail::concat("expected ", dim, " numbers after the token, found ", k));
    }
    NumberStatus status = NumberStatus::ok;
    T value{};
    const char* stop = parse_real(p, end, value, status);
    if (status != NumberStatus::ok || (stop != end && !is_blank(*stop))) {
      q = p;
      while (q != end && !is_blank(*q)) ++q;
      bad_number<T>(ctx, p, q, status, emb::detail::concat("expected number ", k + 1, " of ", dim));
    }
    out[k] = value;
    p = stop;
  }
  while (p != end && is_blank(*p)) ++p;
  if (p != end) {
    ctx.fail(p, emb::detail::concat(
                    "expected ", dim,
                    " numbers after the token (the header's "
                    "dimension), found more: '",
                    printable(std::string_view(p, static_cast<std::size_t>(end - p)), 16), "'"));
  }
  return token;
}

struct Word2VecHeader {
  Index count = 0;
  Index dim = 0;
};

inline Word2VecHeader read_word2vec_header(Scanner& scanner, const VectorsLoadOptions& options) {
  const std::string& name = scanner.source().name();
  std::uint64_t start = 0;
  const auto line = scanner.next_line(start);
  const std::string_view text = line ? trim_right(*line) : std::string_view();
  const LineContext ctx{word2vec_where, name, 1, start, text};
  const char* p = text.data();
  const char* const end = p + text.size();
  std::string_view fields[3];
  std::size_t n = 0;
  while (n < 3) {
    while (p != end && is_blank(*p)) ++p;
    if (p == end) break;
    const char* q = p;
    while (q != end && !is_blank(*q)) ++q;
    fields[n++] = std::string_view(p, static_cast<std::size_t>(q - p));
    p = q;
  }
  const auto count = n == 2 ? parse_count(fields[0]) : std::nullopt;
  const auto dim = n == 2 ? parse_count(fields[1]) : std::nullopt;
  if (!count || !dim) {
    ctx.fail(text.data(),
             "expected the header 'count dim' (two non-negative integers), found '" +
                 printable(text, 40) + "'" +
                 (n > 2 ? " (a file without that header may be GloVe: see load_glove)" : ""));
  }
  if (options.dim() && *options.dim() != *dim) {
    ctx.fail(fields[1].data(), emb::detail::concat("the header says dimension ", *dim,
                                                   ", the options require ", *options.dim()));
  }
  // Every row takes at least 2 * dim + 1 bytes (a one-byte token, then a blank and a digit per
  // number, or a space and 4 bytes per number in binary): the header cannot promise more rows
  // than the rest of the file can hold, and no allocation exceeds what the file could fill.
  const std::uint64_t size = scanner.source().size();
  const std::uint64_t rest = size > scanner.offset() ? size - scanner.offset() : 0;
  const auto d = static_cast<std::uint64_t>(*dim);
  const auto c = static_cast<std::uint64_t>(*count);
  if (c != 0 && (d > rest / 2 || c > rest / (2 * d + 1))) {
    ctx.fail(fields[0].data(), emb::detail::concat("the header promises ", *count, " rows of ",
                                                   *dim, " numbers, more than the remaining ", rest,
                                                   " bytes of the file can hold"));
  }
  return {*count, *dim};
}

// After the first token, a text row holds printable characters up to its newline; a binary row
// holds raw float32 bytes, which almost always include a control byte or one >= 0x80 (1.0f is
// 00 00 80 3f). A wrong guess costs only time: the other format is tried before an error is
// reported.
inline bool looks_like_text(Scanner& scanner, Index dim) {
  const std::size_t probe = static_cast<std::size_t>(4 * dim) + 1024;
  const std::string_view head = scanner.view(probe);
  const std::size_t space = head.find_first_of(" \t");
  if (space == std::string_view::npos) return true;
  const std::string_view window = head.substr(space + 1, static_cast<std::size_t>(4 * dim));
  const std::string_view line = window.substr(0, window.find('\n'));
  return std::none_of(line.begin(), line.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\t' && c != '\r') || c >= 0x7f;
  });
}

template <class T>
void read_word2vec_text(Scanner& scanner, const Word2VecHeader& header, Vectors<T>& out,
                        const VectorsLoadOptions& options) {
  const std::string& name = scanner.source().name();
  ProgressReporter progress(options.progress(), header.count);
  Index rows = 0;
  std::uint64_t start = 0;
  while (const auto line = scanner.next_line(start)) {
    const std::string_view text = trim_right(*line);
    if (text.empty()) continue;
    const LineContext ctx{word2vec_where, name, scanner.line_number(), start, text};
    if (rows == header.count) {
      ctx.fail(text.data(), emb::detail::concat("the header says ", header.count,
                                                " rows, but another row follows"));
    }
    const std::string_view token =
        parse_word2vec_row(ctx, header.dim, out.weight.data() + out.vocab.size() * header.dim);
    keep_row(out, token);
    progress.rows_done(++rows);
  }
  if (rows != header.count) {
    throw FileError(word2vec_where, name, scanner.line_number(), scanner.offset(),
                    emb::detail::concat("the header says ", header.count,
                                        " rows, but the file ends after ", rows));
  }
}

template <class T>
void read_word2vec_binary(Scanner& scanner, const Word2VecHeader& header, Vectors<T>& out,
                          const VectorsLoadOptions& options) {
  const std::string& name = scanner.source().name();
  const auto fail = [&](std::uint64_t at, const std::string& problem) {
    throw FileError(word2vec_where, name, 0, at, problem);
  };
  ProgressReporter progress(options.progress(), header.count);
  const auto dim = header.dim;
  const std::size_t row_bytes = static_cast<std::size_t>(dim) * 4;
  const bool swap = !host_is_little_endian();
  const bool direct = std::is_same_v<T, float> && !swap;
  std::vector<unsigned char> staging(direct ? 0 : row_bytes);
  std::string token;
  for (Index r = 0; r < header.count; ++r) {
    while (scanner.peek() == '\n') scanner.skip(1);  // the C tool ends rows with '\n', gensim not
    const std::uint64_t token_at = scanner.offset();
    const auto read = scanner.read_until(' ', max_binary_token);
    if (!read) {
      if (scanner.at_end()) {
        fail(token_at, emb::detail::concat("the header says ", header.count,
                                           " rows, but the file ends after ", r));
      }
      if (scanner.view(max_binary_token + 1).size() <= max_binary_token) {
        fail(token_at, emb::detail::concat("row ", r + 1,
                                           ": the file ends inside the token (the "
                                           "header says ",
                                           header.count, " rows)"));
      }
      fail(token_at,
           emb::detail::concat("row ", r + 1, ": no space ends the token within ", max_binary_token,
                               " bytes (does the header's dimension ", dim, " match the data?)"));
    }
    if (read->empty()) fail(token_at, emb::detail::concat("row ", r + 1, ": empty token"));
    if (read->find('\n') != std::string_view::npos) {
      fail(token_at, emb::detail::concat("row ", r + 1, ": token '", printable(*read),
                                         "' contains a newline (does the header's dimension ", dim,
                                         " match the data?)"));
    }
    token.assign(read->data(), read->size());
    const std::uint64_t data_at = scanner.offset();
    T* row = out.weight.data() + out.vocab.size() * dim;
    if (direct) {
      if (!scanner.read_exact(row, row_bytes)) {
        fail(data_at, emb::detail::concat("row ", r + 1, " ('", printable(token),
                                          "'): file ends inside its ", dim, " float32 values"));
      }
    } else {
      if (!scanner.read_exact(staging.data(), row_bytes)) {
        fail(data_at, emb::detail::concat("row ", r + 1, " ('", printable(token),
                                          "'): file ends inside its ", dim, " float32 values"));
      }
      for (Index k = 0; k < dim; ++k) {
        row[k] = static_cast<T>(read_ieee<4>(staging.data() + 4 * k, swap));
      }
    }
    keep_row(out, token);
    progress.rows_done(r + 1);
  }
  for (int c = scanner.peek(); c == '\n' || c == '\r' || c == ' ' || c == '\t';
       c = scanner.peek()) {
    scanner.skip(1);
  }
  if (!scanner.at_end()) {
    fail(scanner.offset(), emb::detail::concat("the header says ", header.count, " rows of ", dim,
                                               " float32 values, but more data "
                                               "follows them (does the header match the data?)"));
  }
}

template <class T>
Vectors<T> read_word2vec_as(Scanner& scanner, const Word2VecHeader& header, bool text,
                            const VectorsLoadOptions& options) {
  Vectors<T> out;
  out.weight.resize(header.count, header.dim);
  if (text) {
    read_word2vec_text(scanner, header, out, options);
  } else {
    read_word2vec_binary(scanner, header, out, options);
  }
  finish(out);
  return out;
}

// The whole word2vec load from any source: the entry point shared by load_word2vec and the
// fuzzer. `chunk` is the scanner's read size (small in the fuzzer, to cross buffer edges).
template <class T>
Vectors<T> read_word2vec(ByteSource& source, const VectorsLoadOptions& options = {},
                         std::size_t chunk = std::size_t{1} << 20) {
  static_assert(std::is_floating_point_v<T>, "load_word2vec<T> needs a floating-point T");
  Scanner scanner(source, chunk);
  const Word2VecHeader header = read_word2vec_header(scanner, options);
  const std::uint64_t data_at = scanner.offset();
  switch (options.format()) {
    case Word2VecFormat::text:
      return read_word2vec_as<T>(scanner, header, true, options);
    case Word2VecFormat::binary:
      return read_word2vec_as<T>(scanner, header, false, options);
    case Word2VecFormat::detect:
      break;
  }
  const bool text = header.count == 0 || looks_like_text(scanner, header.dim);
  try {
    return read_word2vec_as<T>(scanner, header, text, options);
  } catch (const FileError& error) {
    // The guess can be wrong on a malformed file or, rarely, on raw floats that look like text:
    // try the other format before reporting the error of the one the bytes looked like.
    scanner.rewind();
    std::uint64_t ignored = 0;
    scanner.next_line(ignored);
    if (scanner.offset() != data_at) throw;
    try {
      return read_word2vec_as<T>(scanner, header, !text, options);
    } catch (const FileError&) {
      throw error;
    }
  }
}

inline void check_writable_tokens(const char* where, const Vocabulary& vocab, bool binary) {
  const char* forbidden = binary ? " \n" : " \t\n\r";
  for (Index i = 0; i < vocab.size(); ++i) {
    const std::string& t = vocab.token(i);
    if (t.empty() || t.find_first_of(forbidden) != std::string::npos) {
      throw std::invalid_argument(emb::detail::concat(
          where, ": token ", i, " ('", printable(t), "') cannot be written in the word2vec ",
          binary ? "binary" : "text", " format: tokens must be non-empty and contain no ",
          binary ? "space or newline" : "blank, tab, carriage return or newline"));
    }
  }
}

}  // namespace detail

// word2vec vectors (also fastText .vec), text or binary (told apart from the bytes, or as
// options.format() says). Header "count dim"; text rows "token v1 ... vdim" with or without a
// trailing blank (CRLF accepted); binary rows "token " + dim float32 little-endian, with or
// without the '\n' after them. A malformed file throws emb::io::FileError (a
// std::runtime_error) naming the file, the line or byte offset and what was expected.
template <class T = float>
Vectors<T> load_word2vec(const std::string& path, const VectorsLoadOptions& options) {
  detail::FileSource source(path, detail::word2vec_where);
  return detail::read_word2vec<T>(source, options);
}

template <class T = float>
Vectors<T> load_word2vec(const std::string& path) {
  return load_word2vec<T>(path, VectorsLoadOptions());
}

// fastText's .vec files are word2vec text files.
template <class T = float>
Vectors<T> load_fasttext_vec(const std::string& path,
                             const VectorsLoadOptions& options = VectorsLoadOptions()) {
  VectorsLoadOptions text = options;
  text.format(Word2VecFormat::text);
  return load_word2vec<T>(path, text);
}

// Writes a word2vec file: header "count dim", then one row per token in id order; text rows are
// "token v1 ... vdim" with the shortest decimal that reads back to the same value, binary rows
// are "token " + float32 little-endian values + '\n' (a double table is rounded to float32
// there, as the format has no other type). The file appears at `path` only once completely
// written. Throws std::invalid_argument if weight does not have vocab.size() rows or a token
// cannot be written (empty, or holding a separator).
template <class T>
void save_word2vec(const std::string& path, const Vocabulary& vocab,
                   const Eigen::Ref<const Matrix<T>>& weight, bool binary) {
  static_assert(std::is_floating_point_v<T>, "save_word2vec<T> needs a floating-point T");
  static constexpr const char* where = "emb::io::save_word2vec";
  emb::detail::check_shape(where, "weight", vocab.size(), weight.cols(), weight.rows(),
                           weight.cols());
  detail::check_writable_tokens(where, vocab, binary);
  detail::AtomicWriter out(path, where);
  out.write(emb::detail::concat(weight.rows(), " ", weight.cols(), "\n"));
  const bool swap = !detail::host_is_little_endian();
  std::string row;
  for (Index r = 0; r < weight.rows(); ++r) {
    row.assign(vocab.token(r));
    if (binary) {
      row += ' ';
      for (Index k = 0; k < weight.cols(); ++k) {
        float v = static_cast<float>(weight(r, k));
        unsigned char bytes[4];
        std::memcpy(bytes, &v, 4);
        if (swap) detail::reverse_bytes(bytes, 4);
        row.append(reinterpret_cast<const char*>(bytes), 4);
      }
    } else {
      char number[64];
      for (Index k = 0; k < weight.cols(); ++k) {
        const auto result = std::to_chars(number, number + sizeof number, weight(r, k));
        row += ' ';
        row.append(number, static_cast<std::size_t>(result.ptr - number));
      }
    }
    row += '\n';
    out.write(row);
  }
  out.commit();
}

}  // namespace emb::io
