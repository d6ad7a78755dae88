// emb/detail/bag.hpp — the kernels behind the bag layers: offset checks, fused pooling over any
// table view, and what the bag gradients need (the bag of each position, the Max winners).
// Rows are read through the view's codec, so every storage pools through the same loops; rows
// that are arrays of T and have a common size are summed in registers (bag_sum_fixed_rows).
// The gradients themselves are accumulated by the shared segment and scatter kernels of
// scatter.hpp.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "codec.hpp"
#include "error.hpp"
#include "gather.hpp"

namespace emb::detail {

// Validates bag offsets against n indices and returns the number of bags. Unlike PyTorch's CPU
// code (which checks only the first and last offset), every offset is checked, so a decreasing
// offset cannot produce a negative-length bag.
inline std::size_t check_offsets(const char* where, IndexSpan offsets, std::size_t n,
                                 bool include_last_offset) {
  const auto size = static_cast<Index>(n);
  const std::size_t count = offsets.size();
  if (count == 0) {
    if (include_last_offset) {
      throw std::invalid_argument(concat(
          where, ": offsets is empty; with include_last_offset it must hold at least the end ",
          "offset ", size));
    }
    if (n != 0) {
      throw std::invalid_argument(concat(where, ": offsets is empty but there are ", n,
                                         " indices; the first bag must start at offset 0"));
    }
    return 0;
  }
  if (offsets[0] != 0) {
    throw std::invalid_argument(concat(where, ": offset ", offsets[0],
                                       " at position 0 is invalid; the first offset must be 0"));
  }
  for (std::size_t b = 1; b < count; ++b) {
    if (offsets[b] < offsets[b - 1]) {
      throw std::invalid_argument(concat(where, ": offset ", offsets[b], " at position ", b,
                                         " is less than the offset before it (", offsets[b - 1],
                                         "); offsets must be non-decreasing"));
    }
    if (offsets[b] > size) {
      throw std::invalid_argument(concat(where, ": offset ", offsets[b], " at position ", b,
                                         " is past the end of the ", n, " indices"));
    }
  }
  if (include_last_offset && offsets[count - 1] != size) {
    throw std::invalid_argument(concat(where, ": offset ", offsets[count - 1], " at position ",
                                       count - 1, " is invalid; with include_last_offset the ",
                                       "last offset must equal the number of indices, ", n));
  }
  return include_last_offset ? count - 1 : count;
}

// [begin, end) of bag b: the next offset, or n for the last bag without include_last_offset.
inline std::size_t bag_begin(IndexSpan offsets, std::size_t b) noexcept {
  return static_cast<std::size_t>(offsets[b]);
}
inline std::size_t bag_end(IndexSpan offsets, std::size_t b, std::size_t n) noexcept {
  return b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : n;
}

// Offsets 0, len, 2*len, ... of `bags` fixed-length bags.
inline std::vector<Index> fixed_offsets(std::size_t bags, Index len) {
  std::vector<Index> offsets(bags);
  for (std::size_t b = 0; b < bags; ++b) offsets[b] = static_cast<Index>(b) * len;
  return offsets;
}

// The bag of every position (the inverse of the offsets), and the number of entries of every
// bag that contribute (id != skip: the divisor of Mean).
inline void bag_layout(IndexSpan indices, IndexSpan offsets, std::size_t bags, Index skip,
                       std::vector<std::size_t>& bag_of, std::vector<Index>& bag_size) {
  const std::size_t n = indices.size();
  bag_of.assign(n, 0);
  bag_size.assign(bags, 0);
  for (std::size_t b = 0; b < bags; ++b) {
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      bag_of[i] = b;
      if (indices[i] != skip) ++bag_size[b];
    }
  }
}

// The pooling kernels below take a validated call: every id is a row of the view or `skip`
// (padding_idx, or -1 for none; a quantized table also maps pruned ids to it), and an entry whose
// id is `skip` contributes nothing. Positions run in order across bags (offsets are
// non-decreasing), so prefetching `ahead` positions ahead reaches into the next bags.
// The register kernels pass their rows' size as a compile-time constant.
template <class Codec>
EMB_DETAIL_PREFETCH_INLINE void prefetch_entry(const TableView<Codec>& view, const Index* idx,
                                               std::size_t i, std::size_t n, std::size_t ahead,
                                               std::size_t row_bytes) noexcept {
  if (ahead == 0 || i + ahead >= n) return;
  const Index k = idx[i + ahead];
  if (k >= 0) prefetch_row(view.row(k), row_bytes);
}
template <class Codec>
EMB_DETAIL_PREFETCH_INLINE void prefetch_entry(const TableView<Codec>& view, const Index* idx,
                                               std::size_t i, std::size_t n,
                                               std::size_t ahead) noexcept {
  prefetch_entry(view, idx, i, n, ahead, view.row_bytes());
}

#if defined(__GNUC__) || defined(__clang__)
#define EMB_DETAIL_BAG_FIXED 1

// A vector of Bytes / sizeof(T) values (GCC/clang vector extension).
template <class T, std::size_t Bytes>
struct BagVector {
  typedef T type __attribute__((vector_size(Bytes)));
};

// The widest vector the build targets everywhere; wider ones would be emulated through memory.
#ifdef __AVX__
inline constexpr std::size_t bag_vector_bytes = 32;
#else
inline constexpr std::size_t bag_vector_bytes = 16;
#endif

// Sum (or Mean) pooling of rows of RowBytes bytes of T, known at compile time: each bag is
// summed in local vectors that stay in registers and is stored once, instead of a
// load-add-store of the output row per index. Every element is still the sum, from +0, of its
// contributions in input order (psw_i * W[idx_i] when weighted; W[idx_i] itself otherwise,
// which equals 1 * W[idx_i]), so the result is bit for bit that of the generic loop. The
// product and the sum are separate statements: clang contracts only within one expression, so
// it fuses neither loop into an FMA, and GCC, in a build that enables FMA itself, fuses both
// alike. Always inlined so that the AVX2 entry below compiles this body with AVX2.
// VectorBytes: the vector width.
template <class T, std::size_t RowBytes, bool Weighted, std::size_t VectorBytes, class Codec>
__attribute__((always_inline)) inline void bag_sum_fixed_rows(
    const TableView<Codec>& view, const Index* idx, std::size_t n, IndexSpan offsets,
    std::size_t bags, Index skip, const T* psw, bool mean, T* out, Index out_stride,
    std::size_t ahead) noexcept {
  constexpr std::size_t vbytes = RowBytes < VectorBytes ? RowBytes : VectorBytes;
  constexpr std::size_t parts = RowBytes / vbytes;
  using V = typename BagVector<T, vbytes>::type;
  const unsigned char* const data = view.data;
  const std::size_t stride = view.stride;
  for (std::size_t b = 0; b < bags; ++b) {
    V acc[parts] = {};
    Index count = 0;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      prefetch_entry(view, idx, i, n, ahead, RowBytes);
      const Index k = idx[i];
      if (k == skip) continue;
      ++count;
      const unsigned char* src = data + static_cast<std::size_t>(k) * stride;
      for (std::size_t p = 0; p < parts; ++p) {
        V v;
        std::memcpy(&v, src + p * vbytes, vbytes);
        if constexpr (Weighted) {
          const V product = psw[i] * v;
          acc[p] += product;
        } else {
          acc[p] += v;
        }
      }
    }
    if (mean && count > 0) {
      const auto c = static_cast<T>(count);
      for (std::size_t p = 0; p < parts; ++p) acc[p] /= c;
    }
    char* dst = reinterpret_cast<char*>(out + static_cast<Index>(b) * out_stride);
    for (std::size_t p = 0; p < parts; ++p) std::memcpy(dst + p * vbytes, &acc[p], vbytes);
  }
}

// The default build targets baseline x86-64 (SSE2); on a CPU with AVX2 the same loops run twice
// as wide. Only "avx2" is enabled, never "fma": a fused multiply-add would round differently.
#if defined(EMB_DETAIL_X86_DISPATCH) && !defined(__AVX2__)
#define EMB_DETAIL_BAG_AVX2 1
template <class T, std::size_t RowBytes, bool Weighted, class Codec>
__attribute__((target("avx2"))) void bag_sum_fixed_rows_avx2(
    const TableView<Codec>& view, const Index* idx, std::size_t n, IndexSpan offsets,
    std::size_t bags, Index skip, const T* psw, bool mean, T* out, Index out_stride,
    std::size_t ahead) noexcept {
  bag_sum_fixed_rows<T, RowBytes, Weighted, 32>(view, idx, n, offsets, bags, skip, psw, mean,
                                                out, out_stride, ahead);
}
#endif

template <class T, std::size_t RowBytes, bool Weighted, class Codec>
inline void bag_sum_fixed_dispatch(const TableView<Codec>& view, const Index* idx, std::size_t n,
                                   IndexSpan offsets, std::size_t bags, Index skip, const T* psw,
                                   bool mean, T* out, Index out_stride,
                                   std::size_t ahead) noexcept {
#ifdef EMB_DETAIL_BAG_AVX2
  if (cpu_has_avx2()) {
    bag_sum_fixed_rows_avx2<T, RowBytes, Weighted>(view, idx, n, offsets, bags, skip, psw, mean,
                                                   out, out_stride, ahead);
    return;
  }
#endif
  bag_sum_fixed_rows<T, RowBytes, Weighted, bag_vector_bytes>(view, idx, n, offsets, bags, skip,
                                                              psw, mean, out, out_stride, ahead);
}
#endif  // __GNUC__ || __clang__

// The register-accumulated pooling for rows that are float or double arrays of 16 to 512 bytes
// (a power of two); false for other rows, other types and other compilers. Longer rows would
// not fit in the vector registers.
template <class T, class Codec>
inline bool bag_sum_fixed(const TableView<Codec>& view, const Index* idx, std::size_t n,
                          IndexSpan offsets, std::size_t bags, Index skip, const T* psw,
                          bool mean, T* out, Index out_stride, std::size_t ahead) noexcept {
#ifdef EMB_DETAIL_BAG_FIXED
  if constexpr (Codec::template copies<T> &&
                (std::is_same_v<T, float> || std::is_same_v<T, double>)) {
    return with_fixed_row_bytes<512>(static_cast<std::size_t>(view.dim) * sizeof(T),
                                     [&](auto bytes) {
      constexpr std::size_t B = decltype(bytes)::value;
      if (psw != nullptr) {
        bag_sum_fixed_dispatch<T, B, true>(view, idx, n, offsets, bags, skip, psw, mean, out,
                                           out_stride, ahead);
      } else {
        bag_sum_fixed_dispatch<T, B, false>(view, idx, n, offsets, bags, skip, psw, mean, out,
                                            out_stride, ahead);
      }
    });
  }
#endif
  (void)view, (void)idx, (void)n, (void)offsets, (void)bags, (void)skip, (void)psw, (void)mean;
  (void)out, (void)out_stride, (void)ahead;
  return false;
}

// ---- 16-bit rows (half, bfloat16) pooled into float ----------------------------------------
//
// Each bag is summed in AVX2 registers, eight values at a time converted as they load
// (bfloat16: widen and shift; half: vcvtph2ps), for widths of 8 to 128. The product and the
// sum are separate instructions (no FMA is enabled), so every element is the sum, from +0, of
// the same float terms in the same order as the generic loop: the same bits.
#ifdef EMB_DETAIL_X86_DISPATCH
template <class S, std::size_t Dim, bool Weighted>
__attribute__((target("avx2,f16c"))) void bag_sum_16bit_avx2(
    const TableView<ValueCodec<S>>& view, const Index* idx, std::size_t n, IndexSpan offsets,
    std::size_t bags, Index skip, const float* psw, bool mean, float* out, Index out_stride,
    std::size_t ahead) noexcept {
  constexpr std::size_t parts = Dim / 8;
  constexpr std::size_t row_bytes = Dim * 2;
  const unsigned char* const data = view.data;
  const std::size_t stride = view.stride;
  for (std::size_t b = 0; b < bags; ++b) {
    __m256 acc[parts];
    for (std::size_t p = 0; p < parts; ++p) acc[p] = _mm256_setzero_ps();
    Index count = 0;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      prefetch_entry(view, idx, i, n, ahead, row_bytes);
      const Index k = idx[i];
      if (k == skip) continue;
      ++count;
      const unsigned char* src = data + static_cast<std::size_t>(k) * stride;
      const __m256 w = Weighted ? _mm256_set1_ps(psw[i]) : _mm256_setzero_ps();
      for (std::size_t p = 0; p < parts; ++p) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16 * p));
        __m256 v;
        if constexpr (std::is_same_v<S, Eigen::bfloat16>) {
          v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        } else {
          v = _mm256_cvtph_ps(h);
        }
        acc[p] = _mm256_add_ps(acc[p], Weighted ? _mm256_mul_ps(w, v) : v);
      }
    }
    if (mean && count > 0) {
      const __m256 c = _mm256_set1_ps(static_cast<float>(count));
      for (std::size_t p = 0; p < parts; ++p) acc[p] = _mm256_div_ps(acc[p], c);
    }
    float* dst = out + static_cast<Index>(b) * out_stride;
    for (std::size_t p = 0; p < parts; ++p) _mm256_storeu_ps(dst + 8 * p, acc[p]);
  }
}
#endif

template <class S>
bool bag_sum_16bit(const TableView<ValueCodec<S>>& view, const Index* idx, std::size_t n,
                   IndexSpan offsets, std::size_t bags, Index skip, const float* psw, bool mean,
                   float* out, Index out_stride, std::size_t ahead) noexcept {
#ifdef EMB_DETAIL_X86_DISPATCH
  if (!cpu_has_avx2() || !cpu_has_f16c()) return false;
  const auto run = [&](auto dim) {
    constexpr std::size_t D = decltype(dim)::value;
    if (psw != nullptr) {
      bag_sum_16bit_avx2<S, D, true>(view, idx, n, offsets, bags, skip, psw, mean, out,
                                     out_stride, ahead);
    } else {
      bag_sum_16bit_avx2<S, D, false>(view, idx, n, offsets, bags, skip, psw, mean, out,
                                      out_stride, ahead);
    }
    return true;
  };
  switch (view.dim) {
    case 8: return run(std::integral_constant<std::size_t, 8>{});
    case 16: return run(std::integral_constant<std::size_t, 16>{});
    case 32: return run(std::integral_constant<std::size_t, 32>{});
    case 64: return run(std::integral_constant<std::size_t, 64>{});
    case 128: return run(std::integral_constant<std::size_t, 128>{});
    default: return false;
  }
#else
  (void)view, (void)idx, (void)n, (void)offsets, (void)bags, (void)skip, (void)psw, (void)mean;
  (void)out, (void)out_stride, (void)ahead;
  return false;
#endif
}

// A codec may pool whole calls itself, for rows whose decoding is worth keeping in registers
// across a bag (quantized rows): a const member
//   template <class T> bool bag_sum(const TableView<Codec>& view, const Index* idx,
//                                   std::size_t n, IndexSpan offsets, std::size_t bags,
//                                   Index skip, const T* psw, bool mean, T* out,
//                                   Index out_stride, std::size_t ahead) const noexcept;
// with bag_sum's arguments and contract (and `ahead` the prefetch distance), which returns
// false, having written nothing, when it has no kernel for this call. bag_sum asks it first.
template <class Codec, class T, class = void>
struct has_codec_bag_sum : std::false_type {};
template <class Codec, class T>
struct has_codec_bag_sum<
    Codec, T,
    std::void_t<decltype(std::declval<const Codec&>().template bag_sum<T>(
        std::declval<const TableView<Codec>&>(), std::declval<const Index*>(), std::size_t{},
        std::declval<IndexSpan>(), std::size_t{}, Index{}, std::declval<const T*>(), bool{},
        std::declval<T*>(), Index{}, std::size_t{}))>> : std::true_type {};

// Sum (or Mean) pooling straight from the table into out: row b = sum over the bag's
// contributing entries of psw_i * W[idx_i] (W[idx_i] without psw), divided by their count for
// Mean. No (n, dim) intermediate: each row is decoded (or read as it is) and added to the
// output row. psw is null or has n values.
template <class T, class Codec>
void bag_sum(const TableView<Codec>& view, IndexSpan indices, IndexSpan offsets,
             std::size_t bags, Index skip, const T* psw, bool mean, T* out, Index out_stride) {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  const std::size_t n = indices.size();
  const Index dim = view.dim;
  const std::size_t ahead = prefetch_distance(view);
  const Index* idx = indices.data();
  if (bag_sum_fixed(view, idx, n, offsets, bags, skip, psw, mean, out, out_stride, ahead)) return;
  if constexpr (has_codec_bag_sum<Codec, T>::value) {
    if (view.codec.template bag_sum<T>(view, idx, n, offsets, bags, skip, psw, mean, out,
                                       out_stride, ahead)) {
      return;
    }
  }
  for (std::size_t b = 0; b < bags; ++b) {
    T* dst = out + static_cast<Index>(b) * out_stride;
    Eigen::Map<Row>(dst, dim).setZero();
    Index count = 0;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      prefetch_entry(view, idx, i, n, ahead);
      const Index k = idx[i];
      if (k == skip) continue;
      ++count;
      if (psw != nullptr) {
        view.codec.template accumulate<true>(view.row(k), dim, psw[i], dst);
      } else {
        view.codec.template accumulate<false>(view.row(k), dim, T(1), dst);
      }
    }
    if (mean && count > 0) Eigen::Map<Row>(dst, dim) /= static_cast<T>(count);
  }
}

// Element-wise max pooling. An empty (or all-skipped) bag gives a zero row. The strict
// comparison keeps the first occurrence on ties, as PyTorch's CPU loop does: Eigen's max is
// std::max(dst, src) = (dst < src ? src : dst), packet by packet, the same element.
template <class T, class Codec>
void bag_max(const TableView<Codec>& view, IndexSpan indices, IndexSpan offsets,
             std::size_t bags, Index skip, T* out, Index out_stride) {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  const std::size_t n = indices.size();
  const Index dim = view.dim;
  const std::size_t ahead = prefetch_distance(view);
  const Index* idx = indices.data();
  std::vector<T> scratch(Codec::template copies<T> ? 0 : static_cast<std::size_t>(dim));
  for (std::size_t b = 0; b < bags; ++b) {
    T* dst = out + static_cast<Index>(b) * out_stride;
    bool first = true;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      prefetch_entry(view, idx, i, n, ahead);
      const Index k = idx[i];
      if (k == skip) continue;
      if (first) {
        view.codec.decode(view.row(k), dim, dst);
        first = false;
        continue;
      }
      const T* src = row_as(view, k, scratch.data());
      Eigen::Map<Row>(dst, dim) = Eigen::Map<Row>(dst, dim).cwiseMax(Eigen::Map<const Row>(src, dim));
    }
    if (first) Eigen::Map<Row>(dst, dim).setZero();
  }
}

// The Max winners alone: winners (bags x dim) receives the row each output element of bag_max
// comes from (the first occurrence of the maximum), or -1 for an empty bag. The running
// maximum lives in one row of scratch; no pooled output is built.
template <class T, class Codec>
void bag_max_winners(const TableView<Codec>& view, IndexSpan indices, IndexSpan offsets,
                     std::size_t bags, Index skip, std::vector<Index>& winners) {
  const std::size_t n = indices.size();
  const Index dim = view.dim;
  const auto width = static_cast<std::size_t>(dim);
  const Index* idx = indices.data();
  const std::size_t ahead = prefetch_distance(view);
  std::vector<T> best(width);
  std::vector<T> scratch(Codec::template copies<T> ? 0 : width);
  winners.assign(bags * width, -1);
  for (std::size_t b = 0; b < bags; ++b) {
    Index* win = winners.data() + b * width;
    bool first = true;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      prefetch_entry(view, idx, i, n, ahead);
      const Index k = idx[i];
      if (k == skip) continue;
      const T* src = row_as(view, k, scratch.data());
      if (first) {
        std::copy(src, src + dim, best.begin());
        std::fill(win, win + dim, k);
        first = false;
        continue;
      }
      for (std::size_t j = 0; j < width; ++j) {  // branch-free, so that it vectorises
        const bool wins = src[j] > best[j];
        best[j] = wins ? src[j] : best[j];
        win[j] = wins ? k : win[j];
      }
    }
  }
}

// d out / d psw_i = <W[idx_i], grad_output[bag(i)]> (Sum mode); 0 for skipped entries.
template <class T, class Codec>
void bag_psw_backward(const TableView<Codec>& view, IndexSpan indices,
                      const std::vector<std::size_t>& bag_of, Index skip, const T* g,
                      Index g_stride, T* out) {
  using Row = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  const Index dim = view.dim;
  std::vector<T> scratch(Codec::template copies<T> ? 0 : static_cast<std::size_t>(dim));
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const Index k = indices[i];
    if (k == skip) {
      out[i] = T(0);
      continue;
    }
    const T* w = row_as(view, k, scratch.data());
    out[i] = Eigen::Map<const Row>(w, dim).dot(
        Eigen::Map<const Row>(g + static_cast<Index>(bag_of[i]) * g_stride, dim));
  }
}

}  // namespace emb::detail
