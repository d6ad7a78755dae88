// emb/detail/codec.hpp — how a table's stored rows are read as the compute type T: the table
// view every kernel takes, and the row codecs.
//
// A kernel never addresses a row as `table + k * dim`. It takes a TableView — the first row's
// bytes, the number of rows, the width, the bytes from one row to the next — and a codec that
// knows what a stored row is: ValueCodec<S> for rows of dim values of S (float, double, half,
// bfloat16), the quantized codecs of quant.hpp for 8-, 4- and 2-bit rows. A codec decodes a
// row into T (out = row), accumulates it (acc += w * row, w applied to the decoded value, as
// the float kernels do), and tells whether its rows already are arrays of T (`copies<T>`), in
// which case the kernels keep their plain-copy fast paths. A new storage kind is a new codec,
// never a new layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <Eigen/Core>

#include "../index_span.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace emb::detail {

template <class S>
inline constexpr bool is_16bit_float_v =
    std::is_same_v<S, Eigen::half> || std::is_same_v<S, Eigen::bfloat16>;

template <class S>
inline constexpr bool is_storage_type_v =
    std::is_same_v<S, float> || std::is_same_v<S, double> || is_16bit_float_v<S>;

// Whether every value of S converts to T exactly (the contract for a table's storage S and
// compute type T: half and bfloat16 into float or double, float into double).
template <class T, class S>
inline constexpr bool converts_exactly_v =
    std::is_same_v<T, S> || (std::is_floating_point_v<T> && is_16bit_float_v<S>) ||
    (std::is_same_v<T, double> && std::is_same_v<S, float>);

// The rows of a table as the kernels see them. `stride` is in bytes, so that a row of packed
// codes and a row of values are addressed alike.
template <class Codec>
struct TableView {
  const unsigned char* data = nullptr;
  Index rows = 0;
  Index dim = 0;
  std::size_t stride = 0;
  Codec codec{};

  const unsigned char* row(Index k) const noexcept {
    return data + static_cast<std::size_t>(k) * stride;
  }
  // Bytes a lookup reads per row: what prefetching must request.
  std::size_t row_bytes() const noexcept { return codec.row_bytes(dim); }
  std::size_t table_bytes() const noexcept { return static_cast<std::size_t>(rows) * stride; }
};

// ---- 16-bit float conversion -------------------------------------------------------------

inline float bfloat16_bits_to_float(std::uint16_t bits) noexcept {
  const std::uint32_t word = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &word, sizeof f);
  return f;
}

// out[j] = in[j] as float: bfloat16 is the top half of a float, so the conversion is a shift,
// which the compiler vectorises.
inline void bfloat16_to_float(const std::uint16_t* in, Index n, float* out) noexcept {
  for (Index j = 0; j < n; ++j) out[j] = bfloat16_bits_to_float(in[j]);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EMB_DETAIL_X86_DISPATCH 1
// Run-time instruction-set checks, made once per program.
inline bool cpu_has_avx2() noexcept {
  static const bool has = __builtin_cpu_supports("avx2") != 0;
  return has;
}
// F16C (CPUID leaf 1, ECX bit 29) with AVX usable (clang has no "f16c" for
// __builtin_cpu_supports, so ask CPUID; "avx" already covers the OS saving the YMM state).
inline bool cpu_has_f16c() noexcept {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
    return (c & (1u << 29)) != 0 && __builtin_cpu_supports("avx") != 0;
  }();
  return has;
}

// vcvtph2ps: eight halves to eight floats per instruction, exact.
__attribute__((target("avx,f16c"))) inline void half_to_float_f16c(const std::uint16_t* in,
                                                                   Index n, float* out) noexcept {
  Index j = 0;
  for (; j + 8 <= n; j += 8) {
    __m128i h;
    std::memcpy(&h, in + j, sizeof h);
    const __m256 f = _mm256_cvtph_ps(h);
    std::memcpy(out + j, &f, sizeof f);
  }
  for (; j < n; ++j) out[j] = _cvtsh_ss(in[j]);
}
#endif

// out[j] = in[j] as float, exactly; F16C where the CPU has it.
inline void half_to_float(const Eigen::half* in, Index n, float* out) noexcept {
#ifdef EMB_DETAIL_X86_DISPATCH
  if (cpu_has_f16c()) {
    half_to_float_f16c(reinterpret_cast<const std::uint16_t*>(in), n, out);
    return;
  }
#endif
  for (Index j = 0; j < n; ++j) out[j] = static_cast<float>(in[j]);
}

// ---- decoding rows of values -------------------------------------------------------------

// Rows decoded per step when a kernel converts through a local buffer (a multiple of 8).
inline constexpr Index decode_block = 64;

// out[0:n) = in[0:n) converted to T (exact).
template <class T, class S>
inline void decode_values(const S* in, Index n, T* out) noexcept {
  static_assert(converts_exactly_v<T, S>, "emb: this storage does not convert exactly to T");
  if constexpr (std::is_same_v<T, S>) {
    // memcpy may not be handed a null pointer, even for no bytes (a row of a zero-width table).
    if (n > 0) std::memcpy(out, in, static_cast<std::size_t>(n) * sizeof(T));
  } else if constexpr (std::is_same_v<S, Eigen::bfloat16> && std::is_same_v<T, float>) {
    bfloat16_to_float(reinterpret_cast<const std::uint16_t*>(in), n, out);
  } else if constexpr (std::is_same_v<S, Eigen::half> && std::is_same_v<T, float>) {
    half_to_float(in, n, out);
  } else if constexpr (is_16bit_float_v<S>) {
    float buf[decode_block];
    for (Index j = 0; j < n; j += decode_block) {
      const Index m = n - j < decode_block ? n - j : decode_block;
      decode_values(in + j, m, buf);
      for (Index l = 0; l < m; ++l) out[j + l] = static_cast<T>(buf[l]);
    }
  } else {
    for (Index j = 0; j < n; ++j) out[j] = static_cast<T>(in[j]);
  }
}

// acc[0:n) += in[0:n) (Weighted: += w * in, the product rounded before the add, as the
// float kernels compute it), converting in blocks through a small local buffer.
template <bool Weighted, class T, class S>
inline void accumulate_values(const S* in, Index n, T w, T* acc) noexcept {
  if constexpr (std::is_same_v<T, S>) {
    for (Index j = 0; j < n; ++j) {
      if constexpr (Weighted) {
        const T product = w * in[j];
        acc[j] += product;
      } else {
        acc[j] += in[j];
      }
    }
  } else {
    T buf[decode_block];
    for (Index j = 0; j < n; j += decode_block) {
      const Index m = n - j < decode_block ? n - j : decode_block;
      decode_values(in + j, m, buf);
      accumulate_values<Weighted>(buf, m, w, acc + j);
    }
  }
}

template <class Codec>
struct TableView;
template <class S>
struct ValueCodec;
// The register-accumulated Sum / Mean pooling of 16-bit rows into float (bag.hpp); false when
// there is no kernel for this call.
template <class S>
bool bag_sum_16bit(const TableView<ValueCodec<S>>& view, const Index* idx, std::size_t n,
                   IndexSpan offsets, std::size_t bags, Index skip, const float* psw, bool mean,
                   float* out, Index out_stride, std::size_t ahead) noexcept;

// Rows of dim values of S, one after the other.
template <class S>
struct ValueCodec {
  static_assert(is_storage_type_v<S>, "emb: storage must be float, double, half or bfloat16");
  using Stored = S;
  static constexpr bool writable = true;
  // Rows prefetched ahead at most (see gather.hpp): 16-bit rows are half as long, so twice as
  // many fit in the same bytes in flight.
  static constexpr std::size_t prefetch_max_rows = sizeof(S) == 2 ? 32 : 16;

  // Whether a row already is dim values of T (then kernels copy it as it is).
  template <class T>
  static constexpr bool copies = std::is_same_v<T, S>;

  static std::size_t row_bytes(Index dim) noexcept {
    return static_cast<std::size_t>(dim) * sizeof(S);
  }
  static const S* values(const unsigned char* row) noexcept {
    return reinterpret_cast<const S*>(row);
  }

  template <class T>
  void decode(const unsigned char* row, Index dim, T* out) const noexcept {
    decode_values(values(row), dim, out);
  }
  template <bool Weighted, class T>
  void accumulate(const unsigned char* row, Index dim, T w, T* acc) const noexcept {
    accumulate_values<Weighted>(values(row), dim, w, acc);
  }

  // The bag hook (bag.hpp's bag_sum asks it first): 16-bit rows pooled into float keep each
  // bag's sum in registers, converting as they load.
  template <class T>
  bool bag_sum(const TableView<ValueCodec>& view, const Index* idx, std::size_t n,
               IndexSpan offsets, std::size_t bags, Index skip, const T* psw, bool mean, T* out,
               Index out_stride, std::size_t ahead) const noexcept {
    if constexpr (is_16bit_float_v<S> && std::is_same_v<T, float>) {
      return bag_sum_16bit(view, idx, n, offsets, bags, skip, psw, mean, out, out_stride, ahead);
    } else {
      (void)view, (void)idx, (void)n, (void)offsets, (void)bags, (void)skip, (void)psw;
      (void)mean, (void)out, (void)out_stride, (void)ahead;
      return false;
    }
  }
};

// The view of a row-major (rows, dim) array of S with rows `dim` values apart.
template <class S>
inline TableView<ValueCodec<S>> value_view(const S* data, Index rows, Index dim) noexcept {
  return {reinterpret_cast<const unsigned char*>(data), rows, dim,
          static_cast<std::size_t>(dim) * sizeof(S), ValueCodec<S>{}};
}

// The row k of a table as T: a pointer into the table when the codec copies, otherwise the row
// decoded into `scratch` (dim values).
template <class T, class Codec>
inline const T* row_as(const TableView<Codec>& view, Index k, T* scratch) noexcept {
  if constexpr (Codec::template copies<T>) {
    (void)scratch;
    return reinterpret_cast<const T*>(view.row(k));
  } else {
    view.codec.decode(view.row(k), view.dim, scratch);
    return scratch;
  }
}

}  // namespace emb::detail
