// emb/io/detail/text_rows.hpp — what the text readers of word vectors (word2vec, GloVe) share:
// where a row is for its messages, number errors, and how a parsed row joins the table.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "../../detail/error.hpp"
#include "../file_error.hpp"
#include "../vectors.hpp"
#include "file.hpp"
#include "parse.hpp"

namespace emb::io::detail {

template <class T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float" : std::is_same_v<T, double> ? "double" : "long double";
}

// Where a text row is, for its error messages.
struct LineContext {
  const char* where;
  const std::string& name;
  std::uint64_t line;
  std::uint64_t start;  // offset of the line's first byte
  std::string_view text;

  [[noreturn]] void fail(const char* at, const std::string& problem) const {
    throw FileError(where, name, line, start + static_cast<std::uint64_t>(at - text.data()),
                    problem);
  }
};

template <class T>
[[noreturn]] void bad_number(const LineContext& ctx, const char* first, const char* last,
                             NumberStatus status, const std::string& expected) {
  const std::string field =
      printable(std::string_view(first, static_cast<std::size_t>(last - first)));
  if (status == NumberStatus::out_of_range) {
    ctx.fail(first, "number '" + field + "' is out of range for " + type_name<T>());
  }
  ctx.fail(first, expected + ", found '" + field + "'");
}

// Two non-negative integers and nothing else.
inline bool looks_like_word2vec_header(std::string_view line) {
  const std::size_t blank = line.find_first_of(" \t");
  if (blank == std::string_view::npos) return false;
  std::size_t second = blank;
  while (second < line.size() && is_blank(line[second])) ++second;
  return parse_count(line.substr(0, blank)).has_value() &&
         parse_count(line.substr(second)).has_value();
}

// Adds the row just parsed into weight.row(vectors.vocab.size()) under `token`, or counts it as
// a duplicate (the slot is then reused by the next row).
template <class T>
void keep_row(Vectors<T>& vectors, std::string_view token) {
  const Index before = vectors.vocab.size();
  if (vectors.vocab.add(token) < before) ++vectors.duplicates;
}

template <class T>
void finish(Vectors<T>& vectors) {
  if (vectors.vocab.size() != vectors.weight.rows()) {
    vectors.weight.conservativeResize(vectors.vocab.size(), vectors.weight.cols());
  }
}

}  // namespace emb::io::detail
