// emb/detail/rng.hpp — a seeded random source whose output is fixed by the seed alone.
//
// std::normal_distribution and std::uniform_real_distribution are implementation-defined and
// differ between libstdc++ and libc++, so emb draws its own: xoshiro256** seeded through
// splitmix64, 53-bit uniforms, and Marsaglia's polar method for normals. Everything is integer
// arithmetic or IEEE-exact double operations except one std::log per pair of normals; the
// values are drawn in double and rounded once to the table's type.
//
// A table's rows each have their own stream (Rng::for_row): row r of a table drawn with seed s
// is the same wherever it is drawn, so a process holding only rows [a, b) of a sharded table
// draws exactly those rows of the whole table, at the cost of its own block.
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

  // The stream of row `row` of a table drawn with `seed`: xoshiro256** seeded, as above, from
  // a key that mixes the seed with the row number, so that neighbouring rows (and seeds) get
  // unrelated streams.
  static Rng for_row(std::uint64_t seed, std::uint64_t row) noexcept {
    return Rng(mix64(seed ^ mix64(row)));
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
  // splitmix64's output function: a bijection of 64-bit words that mixes every bit.
  static std::uint64_t mix64(std::uint64_t z) noexcept {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  static std::uint64_t splitmix64(std::uint64_t& state) noexcept {
    return mix64(state += 0x9E3779B97F4A7C15ULL);
  }

  std::uint64_t s_[4] = {};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// Rows [row_begin, row_end) of a (rows, dim) table of N(0, 1) values drawn with `seed`, into
// `out` (row-major, (row_end - row_begin) x dim): row r from Rng::for_row(seed, r), its values
// in order, the polar method's last spare of a row of odd width dropped. Each value is drawn in
// double and rounded once to T.
template <class T>
void fill_normal_rows(std::uint64_t seed, std::uint64_t row_begin, std::uint64_t row_end,
                      std::size_t dim, T* out) noexcept {
  for (std::uint64_t r = row_begin; r < row_end; ++r) {
    Rng rng = Rng::for_row(seed, r);
    rng.fill_normal(out, dim);
    out += dim;
  }
}

}  // namespace emb::detail
