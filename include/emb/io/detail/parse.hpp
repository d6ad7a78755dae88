// emb/io/detail/parse.hpp — number parsing and binary number formats for the file loaders.
//
// Numbers in text go through std::from_chars: locale-independent, correctly rounded, and
// fast. Binary numbers are read byte by byte in a stated byte order, whatever the host's.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace emb::io::detail {

inline bool host_is_little_endian() noexcept {
  const std::uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

inline void reverse_bytes(unsigned char* p, std::size_t n) noexcept {
  for (std::size_t i = 0, j = n - 1; i < j; ++i, --j) {
    const unsigned char t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
}

// IEEE 754 binary16 to float, exactly: every half value (subnormals, infinities, NaN payloads
// and the sign of zero included) is representable in binary32.
inline float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits = 0;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf, or NaN keeping its payload
  } else if (exponent != 0) {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  } else {
    // Zero or subnormal: mantissa * 2^-24, exact in float (at most 10 significant bits).
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    float out = magnitude;
    if (sign != 0) out = -out;
    return out;
  }
  float out = 0;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// A float stored in `Bytes` bytes (2, 4 or 8; IEEE binary16/32/64) in the stated byte order,
// as float (2, 4) or double (8): no detour through double, which would quieten signalling NaNs.
template <std::size_t Bytes>
inline auto read_ieee(const unsigned char* p, bool swap) noexcept {
  unsigned char b[Bytes];
  std::memcpy(b, p, Bytes);
  if (swap) reverse_bytes(b, Bytes);
  if constexpr (Bytes == 2) {
    std::uint16_t h = 0;
    std::memcpy(&h, b, 2);
    return half_to_float(h);
  } else if constexpr (Bytes == 4) {
    float f = 0;
    std::memcpy(&f, b, 4);
    return f;
  } else {
    static_assert(Bytes == 8, "binary16, binary32 or binary64");
    double d = 0;
    std::memcpy(&d, b, 8);
    return d;
  }
}

enum class NumberStatus { ok, not_a_number, out_of_range };

// Whether the decimal number in [first, last) (as matched by from_chars) has magnitude below 1,
// i.e. an ERANGE from it is an underflow, not an overflow.
inline bool below_one(const char* first, const char* last) noexcept {
  const char* p = first;
  if (p != last && (*p == '-' || *p == '+')) ++p;
  long long order = 0;
  bool seen_nonzero = false;
  long long leading_fraction_zeros = 0;
  long long integer_digits = 0;
  for (; p != last && *p >= '0' && *p <= '9'; ++p) {
    if (*p != '0' || seen_nonzero) {
      seen_nonzero = true;
      ++integer_digits;
    }
  }
  if (p != last && *p == '.') {
    for (++p; p != last && *p >= '0' && *p <= '9'; ++p) {
      if (!seen_nonzero && *p == '0') ++leading_fraction_zeros;
      if (*p != '0') seen_nonzero = true;
    }
  }
  order = integer_digits > 0 ? integer_digits - 1 : -(leading_fraction_zeros + 1);
  if (p != last && (*p == 'e' || *p == 'E')) {
    ++p;
    bool negative = false;
    if (p != last && (*p == '-' || *p == '+')) negative = *p++ == '-';
    long long exponent = 0;
    for (; p != last && *p >= '0' && *p <= '9'; ++p) {
      if (exponent < 1000000000) exponent = exponent * 10 + (*p - '0');
    }
    order += negative ? -exponent : exponent;
  }
  return order < 0;
}

// Parses the longest number at the start of [first, last) into `value` and returns where it
// stopped. Accepts what Python, C and NumPy print (optional leading '+', "inf", "nan").
// A value too small for T becomes a signed zero, as in NumPy; one too large is out_of_range.
template <class T>
inline const char* parse_real(const char* first, const char* last, T& value,
                              NumberStatus& status) noexcept {
  static_assert(std::is_floating_point_v<T>, "floating-point T");
  const char* start = first;
  if (last - first >= 2 && *first == '+' && first[1] != '-' && first[1] != '+') ++start;
  const auto result = std::from_chars(start, last, value);
  if (result.ec == std::errc()) {
    status = NumberStatus::ok;
  } else if (result.ec == std::errc::result_out_of_range) {
    if (below_one(start, result.ptr)) {
      value = *start == '-' ? -T(0) : T(0);
      status = NumberStatus::ok;
    } else {
      status = NumberStatus::out_of_range;
    }
  } else {
    status = NumberStatus::not_a_number;
    return first;
  }
  return result.ptr;
}

// A non-negative decimal integer filling all of `text`; nullopt when it is not one or
// does not fit in 63 bits.
inline std::optional<std::int64_t> parse_count(std::string_view text) noexcept {
  std::int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto result = std::from_chars(text.data(), end, v);
  if (text.empty() || result.ec != std::errc() || result.ptr != end || v < 0) return std::nullopt;
  return v;
}

inline bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

// `line` without trailing spaces, tabs and '\r' (CRLF files, and rows written with a trailing
// space).
inline std::string_view trim_right(std::string_view line) noexcept {
  std::size_t n = line.size();
  while (n != 0 && (is_blank(line[n - 1]) || line[n - 1] == '\r')) --n;
  return line.substr(0, n);
}

}  // namespace emb::io::detail
