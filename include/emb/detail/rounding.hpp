// emb/detail/rounding.hpp — writing a value computed in T back into storage S: to nearest
// (ties to even), or stochastically.
//
// Stochastic rounding picks one of the two values of S around x, the upper with probability
// equal to x's distance from the lower over the spacing, so the rounded value equals x on
// average. A table stored in bfloat16 and trained with small steps keeps moving that way, where
// rounding to nearest drops every update under half a spacing.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "codec.hpp"
#include "rng.hpp"

namespace emb::detail {

template <class S>
inline std::uint16_t bits16(S v) noexcept {
  static_assert(sizeof(S) == 2);
  std::uint16_t b;
  std::memcpy(&b, &v, 2);
  return b;
}
template <class S>
inline S from_bits16(std::uint16_t b) noexcept {
  S v;
  std::memcpy(static_cast<void*>(&v), &b, 2);
  return v;
}

// The next value of S above (up) or below v, for finite v.
template <class S>
inline S next_value(S v, bool up) noexcept {
  if constexpr (std::is_floating_point_v<S>) {
    return std::nextafter(v, up ? std::numeric_limits<S>::infinity()
                                : -std::numeric_limits<S>::infinity());
  } else {
    const std::uint16_t b = bits16(v);
    const std::uint16_t magnitude = b & 0x7FFFu;
    if (magnitude == 0) return from_bits16<S>(up ? 0x0001u : 0x8001u);  // +-0: the subnormals
    const bool negative = (b & 0x8000u) != 0;
    // Away from zero is one more in the magnitude bits, towards zero one less.
    const bool away = up != negative;
    return from_bits16<S>(static_cast<std::uint16_t>(away ? b + 1 : b - 1));
  }
}

// x rounded to S, to nearest with ties to even.
template <class S, class T>
inline S round_nearest(T x) noexcept {
  if constexpr (std::is_same_v<S, T>) {
    return x;
  } else if constexpr (std::is_floating_point_v<S>) {
    return static_cast<S>(x);  // IEEE conversion: to nearest even
  } else if constexpr (std::is_same_v<T, float>) {
    return S(x);  // Eigen's half and bfloat16 round float to nearest even
  } else {
    // From double, going through float could round twice; settle between the float-rounded
    // value and its neighbours instead.
    const S near = S(static_cast<float>(x));
    if (!std::isfinite(x) || !Eigen::numext::isfinite(near)) return near;
    S best = near;
    double best_error = std::abs(static_cast<double>(static_cast<float>(near)) - x);
    for (const bool up : {false, true}) {
      const S other = next_value(near, up);
      if (!Eigen::numext::isfinite(other)) continue;
      const double error = std::abs(static_cast<double>(static_cast<float>(other)) - x);
      if (error < best_error || (error == best_error && (bits16(other) & 1u) == 0)) {
        best = other;
        best_error = error;
      }
    }
    return best;
  }
}

// x rounded to one of the two values of S around it, the upper with probability
// (x - lower) / (upper - lower): unbiased. Values S holds exactly, infinities and NaN are
// stored as by round_nearest.
template <class S, class T>
inline S round_stochastic(T x, Rng& rng) noexcept {
  if constexpr (std::is_same_v<S, T>) {
    (void)rng;
    return x;
  } else if constexpr (std::is_same_v<S, Eigen::bfloat16> && std::is_same_v<T, float>) {
    // bfloat16 is the top half of a float: adding 16 random bits below the kept ones and
    // truncating rounds the magnitude up with probability (dropped bits) / 2^16, exactly the
    // fraction of the spacing.
    if (!std::isfinite(x)) return round_nearest<S>(x);
    std::uint32_t word;
    std::memcpy(&word, &x, 4);
    const auto noise = static_cast<std::uint32_t>(rng.next_u64() >> 48);
    const std::uint32_t sum = word + noise;
    return from_bits16<S>(static_cast<std::uint16_t>(sum >> 16));
  } else {
    const S near = round_nearest<S>(x);
    const auto near_value = static_cast<T>(near);
    if (!std::isfinite(x) || near_value == x) return near;
    const S other = next_value(near, near_value < x);
    const auto other_value = static_cast<T>(other);
    const S lower = near_value < other_value ? near : other;
    const S upper = near_value < other_value ? other : near;
    const auto lo = static_cast<double>(static_cast<T>(lower));
    const auto hi = static_cast<double>(static_cast<T>(upper));
    const double p = (static_cast<double>(x) - lo) / (hi - lo);  // 0 when upper is infinite
    return rng.uniform() < p ? upper : lower;
  }
}

// How an optimizer writes its rows back: to nearest by default, stochastically from a seeded
// stream once asked.
class StorageRounding {
 public:
  void stochastic(std::uint64_t seed) { rng_.emplace(seed); }
  bool is_stochastic() const noexcept { return rng_.has_value(); }

  // out[0:n) = in[0:n) rounded to S.
  template <class S, class T>
  void store(const T* in, Index n, S* out) {
    if (rng_) {
      for (Index j = 0; j < n; ++j) out[j] = round_stochastic<S>(in[j], *rng_);
    } else {
      for (Index j = 0; j < n; ++j) out[j] = round_nearest<S>(in[j]);
    }
  }

 private:
  std::optional<Rng> rng_;
};

}  // namespace emb::detail
