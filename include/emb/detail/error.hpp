// emb/detail/error.hpp — the checks every layer shares and the messages they throw.
//
// Messages are built only on the failure path; the checks themselves are a compare and a
// branch, so they stay in every fast path.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include "../index_span.hpp"

namespace emb::detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  os.precision(17);
  (os << ... << parts);
  return os.str();
}

[[noreturn]] inline void throw_index_out_of_range(const char* where, Index value,
                                                  std::size_t position, Index size) {
  throw std::out_of_range(concat(where, ": index ", value, " at position ", position,
                                 " is out of range; valid indices are [0, ", size, ")"));
}

// Whether every index is in [0, size): a branch-free pass the compiler vectorises. For k and
// size in [0, 2^63) the top bit of (k - size) mod 2^64 is set exactly when k < size, and the
// top bit of ~k is set exactly when k >= 0; the AND over all indices keeps it only if every
// index passes both.
inline bool all_indices_valid(IndexSpan indices, Index size) noexcept {
  const auto bound = static_cast<std::uint64_t>(size);
  const Index* p = indices.data();
  std::uint64_t acc = ~std::uint64_t{0};
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const auto u = static_cast<std::uint64_t>(p[i]);
    acc &= (u - bound) & ~u;
  }
  return indices.empty() || (acc >> 63) != 0;
}

// Position of the first index outside [0, size), or indices.size() when all are valid.
// The unsigned compare folds both bounds into one test.
inline std::size_t first_invalid_index(IndexSpan indices, Index size) noexcept {
  const auto bound = static_cast<std::uint64_t>(size);
  const Index* p = indices.data();
  const std::size_t n = indices.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (static_cast<std::uint64_t>(p[i]) >= bound) return i;
  }
  return n;
}

// Throws std::out_of_range naming the first bad index, its position and the valid range. The
// common case (all valid) costs one vectorised pass; only a failure looks for the position.
inline void check_indices(const char* where, IndexSpan indices, Index size) {
  if (all_indices_valid(indices, size)) return;
  const std::size_t bad = first_invalid_index(indices, size);
  throw_index_out_of_range(where, indices[bad], bad, size);
}

inline void check_shape(const char* where, const char* what, Index expected_rows,
                        Index expected_cols, Index rows, Index cols) {
  if (rows != expected_rows || cols != expected_cols) {
    throw std::invalid_argument(concat(where, ": ", what, " has shape (", rows, ", ", cols,
                                       "), expected (", expected_rows, ", ", expected_cols,
                                       ")"));
  }
}

[[noreturn]] inline void throw_bad_option(const char* where, const char* option,
                                          const std::string& value, const char* requirement) {
  throw std::invalid_argument(
      concat(where, ": ", option, " = ", value, " is invalid; ", requirement));
}

inline void check_size_option(const char* where, const char* option, Index value) {
  if (value < 0) throw_bad_option(where, option, concat(value), "it must be >= 0");
}

// padding_idx is accepted in [-size, size) and normalised to [0, size), as PyTorch does.
inline std::optional<Index> normalise_padding_idx(const char* where,
                                                  std::optional<Index> padding_idx,
                                                  Index size) {
  if (!padding_idx) return std::nullopt;
  const Index p = *padding_idx;
  if (p < -size || p >= size) {
    throw_bad_option(where, "padding_idx", concat(p),
                     concat("it must be in [", -size, ", ", size, ")").c_str());
  }
  return p < 0 ? p + size : p;
}

inline void check_norm_options(const char* where, std::optional<double> max_norm,
                               double norm_type) {
  // The negated comparisons also reject NaN.
  if (max_norm && !(*max_norm > 0.0)) {
    throw_bad_option(where, "max_norm", concat(*max_norm), "it must be > 0");
  }
  if (!(norm_type > 0.0)) {
    throw_bad_option(where, "norm_type", concat(norm_type), "it must be > 0 (or infinity)");
  }
}

}  // namespace emb::detail
