// emb/detail/quant.hpp — quantized rows: PyTorch's fused rowwise layouts (8-, 4- and 2-bit codes
// with a scale and a bias per row), its rounding, and the codec through which the shared gather
// and pooling kernels read them.
//
// A row of dim values is stored as
//   Int8:        dim uint8 codes,                  then float32 scale, float32 bias
//   Int4, Int2:  the codes packed ceil(dim*bits/8)  then float16 scale, float16 bias
//                bytes, value j in bits [(j % k) * bits, ...) of byte j / k (k = 8 / bits)
// all little-endian, value = code * scale + bias. This is what torch.ops.quantized.
// embedding_bag_byte_prepack / _4bit_prepack / _2bit_prepack write, so tables move between the
// two as bytes. The arithmetic below is PyTorch's CPU arithmetic (checked byte for byte against
// its prepack ops by tests/test_quantized.cpp):
//   - quantize: min and max of the row (std::min_element / max_element: the first of equal
//     values, which decides the sign of a zero bias); Int8: scale = (max - min) / 255, codes
//     lrint((x - min) * (255 / (max - min + 1e-8))); Int4/Int2: min rounded to float16 first,
//     scale = (max - min) / (2^bits - 1) rounded to float16 (1 when the range is 0 or the
//     float16 scale is 0), codes lrint((x - min) / scale) clamped to [0, 2^bits - 1];
//   - dequantize (lookups, Max bags): code * scale + bias, the product rounded before the sum,
//     as PyTorch's unpack ops compute it;
//   - Sum bags: acc = fma(w * scale, code, acc + w * bias) for an entry of weight w (1 without
//     per_sample_weights), the arithmetic of PyTorch's (and FBGEMM's) rowwise bag kernels.
//
// Speed. Rows are decoded in registers, eight or sixteen values per step, straight into the
// output or the running sum of a bag: no dequantized copy of a row or a table is made. On
// x86-64 the kernels are chosen at run time: AVX2 + FMA + F16C, and for bags of rows of 16 to
// 128 values AVX-512 where the CPU has it; rows of 8 to 128 values keep a whole bag's sum in
// registers. Elsewhere a portable loop computes the same numbers; every path gives the same
// bits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "bag.hpp"
#include "codec.hpp"
#include "error.hpp"
#include "gather.hpp"

#ifdef EMB_DETAIL_X86_DISPATCH
#include <immintrin.h>
#endif

namespace emb::detail {

// ---- the row layout --------------------------------------------------------------------------

template <int Bits>
struct QuantLayout {
  static_assert(Bits == 8 || Bits == 4 || Bits == 2, "emb: quantized rows have 8, 4 or 2 bits");
  static constexpr int codes_per_byte = 8 / Bits;
  static constexpr unsigned max_code = (1u << Bits) - 1u;
  // The scale and the bias after the codes: two float32 for Int8, two float16 otherwise.
  static constexpr std::size_t param_bytes = Bits == 8 ? 8 : 4;

  static constexpr std::size_t code_bytes(Index dim) noexcept {
    return (static_cast<std::size_t>(dim) * Bits + 7) / 8;
  }
  static constexpr std::size_t row_bytes(Index dim) noexcept {
    return code_bytes(dim) + param_bytes;
  }
};

inline std::size_t quant_row_bytes(int bits, Index dim) noexcept {
  switch (bits) {
    case 8: return QuantLayout<8>::row_bytes(dim);
    case 4: return QuantLayout<4>::row_bytes(dim);
    default: return QuantLayout<2>::row_bytes(dim);
  }
}

// Little-endian fields, whatever the host.
inline std::uint32_t load_le32(const unsigned char* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
inline std::uint16_t load_le16(const unsigned char* p) noexcept {
  return static_cast<std::uint16_t>(p[0] | p[1] << 8);
}
inline void store_le32(unsigned char* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline void store_le16(unsigned char* p, std::uint16_t v) noexcept {
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
}

inline float float_from_bits(std::uint32_t bits) noexcept {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline std::uint32_t float_bits(float f) noexcept {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}
inline float half_bits_to_float(std::uint16_t bits) noexcept {
  Eigen::half h;
  std::memcpy(static_cast<void*>(&h), &bits, sizeof bits);
  return static_cast<float>(h);
}
// To nearest, ties to even, as PyTorch's at::Half does.
inline std::uint16_t float_to_half_bits(float f) noexcept {
  const Eigen::half h(f);
  std::uint16_t bits;
  std::memcpy(&bits, static_cast<const void*>(&h), sizeof bits);
  return bits;
}
inline float round_to_half(float f) noexcept { return half_bits_to_float(float_to_half_bits(f)); }

struct QuantParams {
  float scale;
  float bias;
};

template <int Bits>
inline QuantParams read_quant_params(const unsigned char* row, Index dim) noexcept {
  const unsigned char* p = row + QuantLayout<Bits>::code_bytes(dim);
  if constexpr (Bits == 8) {
    return {float_from_bits(load_le32(p)), float_from_bits(load_le32(p + 4))};
  } else {
    return {half_bits_to_float(load_le16(p)), half_bits_to_float(load_le16(p + 2))};
  }
}

// Code j of a row.
template <int Bits>
inline unsigned quant_code(const unsigned char* codes, Index j) noexcept {
  if constexpr (Bits == 8) {
    return codes[j];
  } else {
    constexpr Index k = QuantLayout<Bits>::codes_per_byte;
    const auto byte = static_cast<unsigned>(codes[j / k]);
    return (byte >> static_cast<unsigned>((j % k) * Bits)) & QuantLayout<Bits>::max_code;
  }
}

// ---- quantizing a row ------------------------------------------------------------------------

// The smallest and largest value of a row, as std::min_element / std::max_element pick them
// (the first of equal values: of 0 and -0 in a row, whichever comes first). 0 for dim 0.
struct RowRange {
  float min;
  float max;
};
inline RowRange row_range(const float* x, Index dim) noexcept {
  if (dim == 0) return {0.0f, 0.0f};
  return {*std::min_element(x, x + dim), *std::max_element(x, x + dim)};
}

// What quantize checks of row r before anything is written: finite values, and parameters the
// row's layout can hold. std::invalid_argument naming the row.
template <int Bits>
void check_quantizable_row(const char* where, const float* x, Index dim, Index r) {
  for (Index j = 0; j < dim; ++j) {
    if (!std::isfinite(x[j])) {
      throw std::invalid_argument(concat(where, ": weight row ", r, " holds ", x[j],
                                         " at column ", j,
                                         "; a quantized table needs finite values"));
    }
  }
  const RowRange range = row_range(x, dim);
  if constexpr (Bits == 8) {
    if (!std::isfinite(range.max - range.min)) {
      throw std::invalid_argument(concat(where, ": weight row ", r, " spans [", range.min, ", ",
                                         range.max, "], whose width overflows float; the "
                                         "8-bit scale (max - min) / 255 cannot be stored"));
    }
  } else {
    const float bias = round_to_half(range.min);
    if (!std::isfinite(bias)) {
      throw std::invalid_argument(concat(where, ": weight row ", r, " has minimum ", range.min,
                                         ", which does not fit the row's float16 bias (|bias| "
                                         "<= 65504)"));
    }
    const float scale = round_to_half((range.max - bias) / static_cast<float>(QuantLayout<Bits>::max_code));
    if (!std::isfinite(scale)) {
      throw std::invalid_argument(concat(
          where, ": weight row ", r, " spans [", range.min, ", ", range.max, "]; its scale (max - min) / ",
          QuantLayout<Bits>::max_code, " does not fit the row's float16 scale (<= 65504)"));
    }
  }
}

// Writes row_bytes(dim) bytes at out: the codes, then the scale and the bias. The row must have
// passed check_quantizable_row.
template <int Bits>
void quantize_row(const float* x, Index dim, unsigned char* out) noexcept {
  using L = QuantLayout<Bits>;
  const RowRange range = row_range(x, dim);
  unsigned char* params = out + L::code_bytes(dim);
  if constexpr (Bits == 8) {
    const float width = range.max - range.min;
    const float scale = width / 255.0f;
    // Not 1 / scale: PyTorch divides 255 by the range plus 1e-8 (so a zero range gives codes 0).
    const float inverse = 255.0f / (width + 1e-8f);
    for (Index j = 0; j < dim; ++j) {
      const float v = (x[j] - range.min) * inverse;  // in [0, 255.00003]
      out[j] = static_cast<unsigned char>(std::lrint(v));
    }
    store_le32(params, float_bits(scale));
    store_le32(params + 4, float_bits(range.min));
  } else {
    const float bias = round_to_half(range.min);
    const float width = range.max - bias;
    float scale = width == 0.0f ? 1.0f
                                : round_to_half(width / static_cast<float>(L::max_code));
    float inverse = scale == 0.0f ? 1.0f : 1.0f / scale;
    if (scale == 0.0f || std::isinf(inverse)) {
      // A range too small for a float16 scale: every value quantizes to the bias.
      scale = 1.0f;
      inverse = 1.0f;
    }
    std::memset(out, 0, L::code_bytes(dim));
    for (Index j = 0; j < dim; ++j) {
      // Below 0 when the float16 bias rounded above the minimum; above the top code when the
      // float16 scale rounded down.
      const long code = std::lrint((x[j] - bias) * inverse);
      const auto c = static_cast<unsigned>(std::clamp<long>(code, 0, static_cast<long>(L::max_code)));
      out[j / L::codes_per_byte] = static_cast<unsigned char>(
          out[j / L::codes_per_byte] | c << ((j % L::codes_per_byte) * Bits));
    }
    store_le16(params, float_to_half_bits(scale));
    store_le16(params + 2, float_to_half_bits(bias));
  }
}

// ---- decoding: the portable loops ------------------------------------------------------------

// out[0:dim) = the row's values: code * scale + bias (product rounded, then the sum).
template <int Bits>
void dequantize_row(const unsigned char* row, Index dim, float* out) noexcept {
  const QuantParams p = read_quant_params<Bits>(row, dim);
  for (Index j = 0; j < dim; ++j) {
    const float product = static_cast<float>(quant_code<Bits>(row, j)) * p.scale;
    out[j] = product + p.bias;
  }
}

// acc[0:dim) = fma(w * scale, code, acc + w * bias): one entry of weight w added to a bag's sum.
template <int Bits, class T>
void accumulate_row(const unsigned char* row, Index dim, T w, T* acc) noexcept {
  const QuantParams p = read_quant_params<Bits>(row, dim);
  const T scale = w * static_cast<T>(p.scale);
  const T bias = w * static_cast<T>(p.bias);
  for (Index j = 0; j < dim; ++j) {
    acc[j] = std::fma(scale, static_cast<T>(quant_code<Bits>(row, j)), acc[j] + bias);
  }
}

// ---- decoding: AVX2 + FMA + F16C, chosen at run time ------------------------------------------

#ifdef EMB_DETAIL_X86_DISPATCH
#define EMB_DETAIL_QUANT_AVX2 1

// AVX2, FMA and F16C together (every AVX2 CPU so far has the other two).
inline bool cpu_has_quant_avx2() noexcept {
  static const bool has =
      cpu_has_avx2() && cpu_has_f16c() && __builtin_cpu_supports("fma") != 0;
  return has;
}

// Codes j .. j+7 of a row (j a multiple of 8) as eight floats.
template <int Bits>
__attribute__((target("avx2"))) inline __m256 quant_codes8(const unsigned char* codes,
                                                           Index j) noexcept {
  if constexpr (Bits == 8) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
  } else if constexpr (Bits == 4) {
    std::uint32_t word;
    std::memcpy(&word, codes + j / 2, sizeof word);
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts);
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(0xF)));
  } else {
    std::uint16_t word;
    std::memcpy(&word, codes + j / 4, sizeof word);
    const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32(word), shifts);
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(0x3)));
  }
}

template <int Bits>
__attribute__((target("avx2,f16c"))) inline QuantParams read_quant_params_f16c(
    const unsigned char* row, Index dim) noexcept {
  const unsigned char* p = row + QuantLayout<Bits>::code_bytes(dim);
  if constexpr (Bits == 8) {
    float scale, bias;
    std::memcpy(&scale, p, 4);
    std::memcpy(&bias, p + 4, 4);
    return {scale, bias};
  } else {
    std::uint16_t scale, bias;
    std::memcpy(&scale, p, 2);
    std::memcpy(&bias, p + 2, 2);
    return {_cvtsh_ss(scale), _cvtsh_ss(bias)};
  }
}

// No "fma" here: the product must be rounded before the sum, as in the portable loop.
template <int Bits>
__attribute__((target("avx2,f16c"))) void dequantize_row_avx2(const unsigned char* row, Index dim,
                                                              float* out) noexcept {
  const QuantParams p = read_quant_params_f16c<Bits>(row, dim);
  const __m256 scale = _mm256_set1_ps(p.scale);
  const __m256 bias = _mm256_set1_ps(p.bias);
  Index j = 0;
  for (; j + 8 <= dim; j += 8) {
    const __m256 product = _mm256_mul_ps(quant_codes8<Bits>(row, j), scale);
    _mm256_storeu_ps(out + j, _mm256_add_ps(product, bias));
  }
  for (; j < dim; ++j) {
    const float product = static_cast<float>(quant_code<Bits>(row, j)) * p.scale;
    out[j] = product + p.bias;
  }
}

template <int Bits>
__attribute__((target("avx2,fma,f16c"))) void accumulate_row_avx2(const unsigned char* row,
                                                                  Index dim, float w,
                                                                  float* acc) noexcept {
  const QuantParams p = read_quant_params_f16c<Bits>(row, dim);
  const float s = w * p.scale;
  const float b = w * p.bias;
  const __m256 scale = _mm256_set1_ps(s);
  const __m256 bias = _mm256_set1_ps(b);
  Index j = 0;
  for (; j + 8 <= dim; j += 8) {
    const __m256 sum = _mm256_add_ps(_mm256_loadu_ps(acc + j), bias);
    _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(scale, quant_codes8<Bits>(row, j), sum));
  }
  for (; j < dim; ++j) acc[j] = std::fma(s, static_cast<float>(quant_code<Bits>(row, j)), acc[j] + b);
}
#endif  // EMB_DETAIL_X86_DISPATCH

template <int Bits>
struct QuantCodec;

#ifdef EMB_DETAIL_QUANT_AVX2
// What the register kernels below do for entry i of a call, before its row is added: prefetch
// the row `ahead` positions on (prefetch_entry, bag.hpp: every cache line of it, its last byte
// included, since rows are not line-aligned), and read the scale and bias of its own row times
// its weight.
template <int Bits, bool Weighted>
__attribute__((target("avx2,f16c"))) inline QuantParams weighted_quant_params(
    const unsigned char* row, Index dim, const float* psw, std::size_t i) noexcept {
  QuantParams p = read_quant_params_f16c<Bits>(row, dim);
  if constexpr (Weighted) {
    p.scale = psw[i] * p.scale;
    p.bias = psw[i] * p.bias;
  }
  return p;
}

// Sum (or Mean) pooling of rows of 8 * Chunks values, each bag's sum kept in Chunks registers
// and stored once. Every element is computed as in accumulate_row, from +0, entry by entry, so
// the result is bit for bit the generic loop's.
template <int Bits, int Chunks, bool Weighted>
__attribute__((target("avx2,fma,f16c"))) void bag_sum_quant_avx2(
    const TableView<QuantCodec<Bits>>& view, const Index* idx, std::size_t n, IndexSpan offsets,
    std::size_t bags, Index skip, const float* psw, bool mean, float* out, Index out_stride,
    std::size_t ahead) noexcept {
  constexpr Index dim = 8 * Chunks;
  constexpr std::size_t row_bytes = QuantLayout<Bits>::row_bytes(dim);
  const unsigned char* const data = view.data;
  const std::size_t stride = view.stride;
  for (std::size_t b = 0; b < bags; ++b) {
    __m256 acc[static_cast<std::size_t>(Chunks)];
    for (int c = 0; c < Chunks; ++c) acc[c] = _mm256_setzero_ps();
    Index count = 0;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      prefetch_entry(view, idx, i, n, ahead, row_bytes);
      const Index k = idx[i];
      if (k == skip) continue;
      ++count;
      const unsigned char* row = data + static_cast<std::size_t>(k) * stride;
      const QuantParams p = weighted_quant_params<Bits, Weighted>(row, dim, psw, i);
      const __m256 vs = _mm256_set1_ps(p.scale);
      const __m256 vb = _mm256_set1_ps(p.bias);
      for (int c = 0; c < Chunks; ++c) {
        acc[c] = _mm256_fmadd_ps(vs, quant_codes8<Bits>(row, 8 * c), _mm256_add_ps(acc[c], vb));
      }
    }
    if (mean && count > 0) {
      const __m256 divisor = _mm256_set1_ps(static_cast<float>(count));
      for (int c = 0; c < Chunks; ++c) acc[c] = _mm256_div_ps(acc[c], divisor);
    }
    float* dst = out + static_cast<Index>(b) * out_stride;
    for (int c = 0; c < Chunks; ++c) _mm256_storeu_ps(dst + 8 * c, acc[c]);
  }
}

// AVX-512: the same loop sixteen values a step, for rows of 16 to 128 values.
#define EMB_DETAIL_QUANT_AVX512 1

inline bool cpu_has_quant_avx512() noexcept {
  static const bool has = cpu_has_quant_avx2() && __builtin_cpu_supports("avx512f") != 0;
  return has;
}

// Sixteen 32-bit lanes as GCC / clang vectors: the shift and the conversion are written as
// vector operations and the widening as its zero-masked form, because GCC 12's
// _mm512_srlv_epi32, _mm512_cvtepi32_ps and _mm512_cvtepu8_epi32 start from an "undefined"
// register that -Wmaybe-uninitialized reports. The instructions are the same.
typedef unsigned quant_u32x16 __attribute__((vector_size(64)));
typedef int quant_i32x16 __attribute__((vector_size(64)));
typedef float quant_f32x16 __attribute__((vector_size(64)));

template <unsigned Step>
__attribute__((target("avx512f"))) inline __m512 quant_unpack16(__m512i v, unsigned mask) noexcept {
  constexpr unsigned a = 0, b = Step, c = 2 * Step, d = 3 * Step;
  quant_u32x16 shifts;
  if constexpr (Step == 4) {
    shifts = quant_u32x16{a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b};
  } else {
    shifts = quant_u32x16{a, b, c, d, 4 * b, 5 * b, 6 * b, 7 * b, 8 * b, 9 * b, 10 * b, 11 * b,
                          12 * b, 13 * b, 14 * b, 15 * b};
  }
  const quant_u32x16 lanes = ((quant_u32x16)v >> shifts) & mask;
  return (__m512)__builtin_convertvector((quant_i32x16)lanes, quant_f32x16);
}

// Codes j .. j+15 of a row (j a multiple of 16) as sixteen floats.
template <int Bits>
__attribute__((target("avx512f"))) inline __m512 quant_codes16(const unsigned char* codes,
                                                              Index j) noexcept {
  if constexpr (Bits == 8) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j));
    const __m512i v = _mm512_maskz_cvtepu8_epi32(0xFFFF, bytes);
    return (__m512)__builtin_convertvector((quant_i32x16)v, quant_f32x16);
  } else if constexpr (Bits == 4) {
    // Each of the 8 bytes twice, then the low nibble of the first copy, the high of the second.
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j / 2));
    return quant_unpack16<4>(_mm512_maskz_cvtepu8_epi32(0xFFFF, _mm_unpacklo_epi8(bytes, bytes)), 0xFu);
  } else {
    std::uint32_t word;
    std::memcpy(&word, codes + j / 4, sizeof word);
    return quant_unpack16<2>(_mm512_set1_epi32(static_cast<int>(word)), 0x3u);
  }
}

template <int Bits, int Chunks, bool Weighted>
__attribute__((target("avx512f,avx2,fma,f16c"))) void bag_sum_quant_avx512(
    const TableView<QuantCodec<Bits>>& view, const Index* idx, std::size_t n, IndexSpan offsets,
    std::size_t bags, Index skip, const float* psw, bool mean, float* out, Index out_stride,
    std::size_t ahead) noexcept {
  constexpr Index dim = 16 * Chunks;
  constexpr std::size_t row_bytes = QuantLayout<Bits>::row_bytes(dim);
  const unsigned char* const data = view.data;
  const std::size_t stride = view.stride;
  for (std::size_t b = 0; b < bags; ++b) {
    __m512 acc[static_cast<std::size_t>(Chunks)];
    for (int c = 0; c < Chunks; ++c) acc[c] = _mm512_setzero_ps();
    Index count = 0;
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      prefetch_entry(view, idx, i, n, ahead, row_bytes);
      const Index k = idx[i];
      if (k == skip) continue;
      ++count;
      const unsigned char* row = data + static_cast<std::size_t>(k) * stride;
      const QuantParams p = weighted_quant_params<Bits, Weighted>(row, dim, psw, i);
      const __m512 vs = _mm512_set1_ps(p.scale);
      const __m512 vb = _mm512_set1_ps(p.bias);
      for (int c = 0; c < Chunks; ++c) {
        acc[c] = _mm512_fmadd_ps(vs, quant_codes16<Bits>(row, 16 * c), _mm512_add_ps(acc[c], vb));
      }
    }
    if (mean && count > 0) {
      const __m512 divisor = _mm512_set1_ps(static_cast<float>(count));
      for (int c = 0; c < Chunks; ++c) acc[c] = _mm512_div_ps(acc[c], divisor);
    }
    float* dst = out + static_cast<Index>(b) * out_stride;
    for (int c = 0; c < Chunks; ++c) _mm512_storeu_ps(dst + 16 * c, acc[c]);
  }
}
#endif

// Which kernels a view uses: the best this CPU runs, at most AVX2, or the portable loops
// (tests compare them).
enum class QuantKernels { Best, Avx2, Portable };

// The codec of quantized rows (see the top of this file). Its kernels are picked once, when the
// view is made (quant_view): the AVX2 ones where the CPU has them, the portable ones otherwise;
// a default-constructed codec uses the portable ones. Rows are never arrays of T, so the
// kernels always decode.
template <int Bits>
struct QuantCodec {
  using Layout = QuantLayout<Bits>;
  static constexpr bool writable = false;
  template <class T>
  static constexpr bool copies = false;
  // Rows ahead a DRAM table's kernels may prefetch (gather.hpp; within its 4 KiB in flight):
  // on a 4e6-row table, Int8 / Int4 bags of dim 64 took 12 ns per lookup 16 rows ahead and
  // 6 ns 64 rows ahead.
  static constexpr std::size_t prefetch_max_rows = 64;

  using DecodeFn = void (*)(const unsigned char*, Index, float*) noexcept;
  using AccumulateFn = void (*)(const unsigned char*, Index, float, float*) noexcept;
  DecodeFn decode_float = &dequantize_row<Bits>;
  AccumulateFn accumulate_float = &accumulate_row<Bits, float>;
  int simd = 0;  // the register-accumulated bag kernels that may run: 1 AVX2, 2 also AVX-512

  static std::size_t row_bytes(Index dim) noexcept { return Layout::row_bytes(dim); }

  // Picks the fastest kernels this CPU runs, up to `limit`.
  void select_kernels(QuantKernels limit = QuantKernels::Best) noexcept {
#ifdef EMB_DETAIL_QUANT_AVX2
    if (limit != QuantKernels::Portable && cpu_has_quant_avx2()) {
      decode_float = &dequantize_row_avx2<Bits>;
      accumulate_float = &accumulate_row_avx2<Bits>;
      simd = 1;
      if (limit == QuantKernels::Best && cpu_has_quant_avx512()) simd = 2;
    }
#else
    (void)limit;
#endif
  }

  template <class T>
  void decode(const unsigned char* row, Index dim, T* out) const noexcept {
    if constexpr (std::is_same_v<T, float>) {
      decode_float(row, dim, out);
    } else {
      // The float values, widened (exact): a double lookup gives dequantize()'s numbers.
      const QuantParams p = read_quant_params<Bits>(row, dim);
      for (Index j = 0; j < dim; ++j) {
        const float product = static_cast<float>(quant_code<Bits>(row, j)) * p.scale;
        out[j] = static_cast<T>(product + p.bias);
      }
    }
  }

  // acc += the row (Weighted: with weight w). Unweighted is w = 1, which changes nothing in the
  // arithmetic (1 * scale and 1 * bias are exact).
  template <bool Weighted, class T>
  void accumulate(const unsigned char* row, Index dim, T w, T* acc) const noexcept {
    const T weight = Weighted ? w : T(1);
    if constexpr (std::is_same_v<T, float>) {
      accumulate_float(row, dim, weight, acc);
    } else {
      accumulate_row<Bits>(row, dim, weight, acc);
    }
  }

  // bag_sum's hook (bag.hpp): rows of 8 to 128 values, a power of two, pooled in registers.
  template <class T>
  bool bag_sum(const TableView<QuantCodec>& view, const Index* idx, std::size_t n,
               IndexSpan offsets, std::size_t bags, Index skip, const T* psw, bool mean, T* out,
               Index out_stride, std::size_t ahead) const noexcept {
#ifdef EMB_DETAIL_QUANT_AVX2
    if constexpr (std::is_same_v<T, float>) {
      // Calls kernel<chunks, weighted> and reports that the call was pooled.
      const auto run = [&](auto chunks, auto kernel) {
        if (psw != nullptr) {
          kernel(chunks, std::true_type{});
        } else {
          kernel(chunks, std::false_type{});
        }
        return true;
      };
      const auto avx2 = [&](auto chunks, auto weighted) {
        bag_sum_quant_avx2<Bits, decltype(chunks)::value, decltype(weighted)::value>(
            view, idx, n, offsets, bags, skip, psw, mean, out, out_stride, ahead);
      };
      const auto avx512 = [&](auto chunks, auto weighted) {
        bag_sum_quant_avx512<Bits, decltype(chunks)::value, decltype(weighted)::value>(
            view, idx, n, offsets, bags, skip, psw, mean, out, out_stride, ahead);
      };
      using std::integral_constant;
      if (simd >= 2) {
        switch (view.dim) {
          case 16: return run(integral_constant<int, 1>{}, avx512);
          case 32: return run(integral_constant<int, 2>{}, avx512);
          case 64: return run(integral_constant<int, 4>{}, avx512);
          case 128: return run(integral_constant<int, 8>{}, avx512);
          default: break;
        }
      }
      if (simd >= 1) {
        switch (view.dim) {
          case 8: return run(integral_constant<int, 1>{}, avx2);
          case 16: return run(integral_constant<int, 2>{}, avx2);
          case 32: return run(integral_constant<int, 4>{}, avx2);
          case 64: return run(integral_constant<int, 8>{}, avx2);
          case 128: return run(integral_constant<int, 16>{}, avx2);
          default: break;
        }
      }
      return false;
    }
#endif
    (void)view, (void)idx, (void)n, (void)offsets, (void)bags, (void)skip, (void)psw;
    (void)mean, (void)out, (void)out_stride, (void)ahead;
    return false;
  }
};

// The view of `rows` packed rows of `dim` values at `data`, with the kernels this CPU runs (up
// to `kernels`).
template <int Bits>
inline TableView<QuantCodec<Bits>> quant_view(const unsigned char* data, Index rows, Index dim,
                                              QuantKernels kernels = QuantKernels::Best) noexcept {
  TableView<QuantCodec<Bits>> view{data, rows, dim, QuantLayout<Bits>::row_bytes(dim), {}};
  view.codec.select_kernels(kernels);
  return view;
}

// Calls f(std::integral_constant<int, bits>{}) for bits 8, 4 or 2 known at run time.
template <class F>
decltype(auto) with_quant_bits(int bits, F&& f) {
  switch (bits) {
    case 8: return f(std::integral_constant<int, 8>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: return f(std::integral_constant<int, 2>{});
  }
}

}  // namespace emb::detail
