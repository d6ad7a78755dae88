// emb/io/glove.hpp — GloVe word vectors: text without a header, where the last dim fields of a
// line are numbers and the rest is the token (which may contain spaces).
//
//   auto vectors = emb::io::load_glove<float>("glove.6B.50d.txt");
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "../detail/error.hpp"
#include "../index_span.hpp"
#include "detail/file.hpp"
#include "detail/parse.hpp"
#include "detail/text_rows.hpp"
#include "vectors.hpp"

namespace emb::io {

namespace detail {

inline constexpr const char* glove_where = "emb::io::load_glove";

// GloVe row: the last `dim` blank-separated fields are numbers, everything before them (minus the
// blanks in between) is the token, which may itself contain spaces.
template <class T>
std::string_view parse_glove_row(const LineContext& ctx, Index dim, T* out) {
  const char* const begin = ctx.text.data();
  const char* p = begin + ctx.text.size();
  for (Index k = dim - 1; k >= 0; --k) {
    const char* field_end = p;
    while (p != begin && !is_blank(p[-1])) --p;
    NumberStatus status = NumberStatus::ok;
    T value{};
    const char* stop = parse_real(p, field_end, value, status);
    if (status != NumberStatus::ok || stop != field_end) {
      if (p == begin && status == NumberStatus::not_a_number) {  // the token: a short row
        ctx.fail(p, emb::detail::concat(
                        "expected a token followed by ", dim, " numbers, found the token '",
                        printable(std::string_view(p, static_cast<std::size_t>(field_end - p))),
                        "' followed by only ", dim - 1 - k, " numbers"));
      }
      bad_number<T>(ctx, p, field_end, status,
                    emb::detail::concat("expected number ", k + 1, " of ", dim));
    }
    out[k] = value;
    while (p != begin && is_blank(p[-1])) --p;
    if (p == begin) {
      ctx.fail(
          p, k == 0
                 ? emb::detail::concat("expected a token before the ", dim, " numbers, found none")
                 : emb::detail::concat("expected a token followed by ", dim,
                                       " numbers, found only ", dim - k, " numbers and no token"));
    }
  }
  return std::string_view(begin, static_cast<std::size_t>(p - begin));
}

// The number of fields at the end of a GloVe line that are numbers, leaving at least one field
// for the token: the vector size when the file does not say it.
inline Index count_trailing_numbers(std::string_view line) {
  const char* const begin = line.data();
  const char* p = begin + line.size();
  Index n = 0;
  for (;;) {
    const char* field_end = p;
    while (p != begin && !is_blank(p[-1])) --p;
    NumberStatus status = NumberStatus::ok;
    double value = 0;
    if (p == begin || field_end == p) return n;  // the first field is the token
    const char* stop = parse_real(p, field_end, value, status);
    if (status == NumberStatus::not_a_number || stop != field_end) return n;
    ++n;
    while (p != begin && is_blank(p[-1])) --p;
  }
}

// The whole GloVe load from any source (see read_word2vec). Two passes: the first counts the
// rows (and checks each is long enough to hold a vector), so the table is allocated once at its
// final size.
template <class T>
Vectors<T> read_glove(ByteSource& source, const VectorsLoadOptions& options = {},
                      std::size_t chunk = std::size_t{1} << 20) {
  static_assert(std::is_floating_point_v<T>, "load_glove<T> needs a floating-point T");
  const std::string& name = source.name();
  Scanner scanner(source, chunk);
  std::optional<Index> dim = options.dim();
  if (dim && *dim < 1) {
    throw std::invalid_argument(
        emb::detail::concat("emb::io::load_glove: dim = ", *dim, " is invalid; it must be >= 1"));
  }
  Index rows = 0;
  std::uint64_t start = 0;
  while (const auto line = scanner.next_line(start)) {
    const std::string_view text = trim_right(*line);
    if (text.empty()) continue;
    const LineContext ctx{glove_where, name, scanner.line_number(), start, text};
    if (!dim) {
      if (looks_like_word2vec_header(text)) {
        ctx.fail(text.data(), "the first line '" + printable(text, 40) +
                                  "' looks like a word2vec header 'count dim', which GloVe files "
                                  "do not have: use load_word2vec (or give options.dim() if it "
                                  "really is a GloVe row)");
      }
      dim = count_trailing_numbers(text);
      if (*dim == 0) {
        ctx.fail(text.data(),
                 "expected a token followed by numbers, found '" + printable(text, 40) + "'");
      }
    }
    if (text.size() < static_cast<std::uint64_t>(*dim) * 2 + 1) {
      ctx.fail(text.data(),
               emb::detail::concat("expected a token followed by ", *dim,
                                   " numbers, but the line has only ", text.size(), " bytes"));
    }
    ++rows;
  }
  Vectors<T> out;
  if (rows == 0) return out;
  out.weight.resize(rows, *dim);
  ProgressReporter progress(options.progress(), rows);
  scanner.rewind();
  Index done = 0;
  while (const auto line = scanner.next_line(start)) {
    const std::string_view text = trim_right(*line);
    if (text.empty()) continue;
    if (done == rows) {
      throw FileError(glove_where, name, scanner.line_number(), start,
                      "the file changed while it was read");
    }
    const LineContext ctx{glove_where, name, scanner.line_number(), start, text};
    const std::string_view token =
        parse_glove_row(ctx, *dim, out.weight.data() + out.vocab.size() * *dim);
    keep_row(out, token);
    progress.rows_done(++done);
  }
  if (done != rows) {
    throw FileError(glove_where, name, scanner.line_number(), scanner.offset(),
                    "the file changed while it was read");
  }
  finish(out);
  return out;
}

}  // namespace detail

// GloVe text vectors: no header; on each line the last dim fields are numbers and the rest is
// the token (which may contain spaces). dim comes from the first line unless options.dim() says.
template <class T = float>
Vectors<T> load_glove(const std::string& path, const VectorsLoadOptions& options) {
  detail::FileSource source(path, detail::glove_where);
  return detail::read_glove<T>(source, options);
}

template <class T = float>
Vectors<T> load_glove(const std::string& path) {
  return load_glove<T>(path, VectorsLoadOptions());
}

}  // namespace emb::io
