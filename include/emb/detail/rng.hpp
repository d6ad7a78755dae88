// emb/detail/rng.hpp — a seeded random source whose output is fixed by the seed alone.
//
// std::normal_distribution and std::uniform_real_distribution are implementation-defined and
// differ between libstdc++ and libc++, so emb draws its own: xoshiro256** seeded through
// splitmix64, 53-bit uniforms, and Marsaglia's polar method for normals. Everything is integer
// arithmetic or IEEE-exact double operations except one std::log per pair of normals; the
// values are drawn in double and rounded once to the table's type.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace emb::detail {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept {
    std::uint64_t x = seed;
    for (auto& word : s_) word = splitmix64(x);
  }

  std::uint64_t next_u64() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform on [0, 1) with 53 random bits.
  double uniform() noexcept {
    return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
  }

  // Uniform on [low, high).
  double uniform(double low, double high) noexcept { return low + (high - low) * uniform(); }

  // Standard normal. The polar method yields two values per accepted pair; the second is
  // kept for the next call so that the stream does not depend on how callers batch requests.
  double normal() noexcept {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u = 0.0;
    double v = 0.0;
    double s = 0.0;
    do {
      u = 2.0 * uniform() - 1.0;
      v = 2.0 * uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double factor = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * factor;
    has_spare_ = true;
    return u * factor;
  }

  template <class T>
  void fill_normal(T* data, std::size_t count) noexcept {
    for (std::size_t i = 0; i < count; ++i) data[i] = static_cast<T>(normal());
  }

  template <class T>
  void fill_uniform(T* data, std::size_t count, double low, double high) noexcept {
    for (std::size_t i = 0; i < count; ++i) data[i] = static_cast<T>(uniform(low, high));
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }
  static std::uint64_t splitmix64(std::uint64_t& state) noexcept {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  std::uint64_t s_[4] = {};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace emb::detail
