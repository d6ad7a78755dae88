// emb/detail/radix_sort.hpp — grouping the positions of a call by index in O(n), stably.
//
// Each position i is packed with its index k as (k << 32) | i and the packed words are sorted
// by their upper half with a least-significant-digit radix sort of 8-bit digits. LSD radix
// sort is stable and the words start in position order, so equal indices keep their input
// order: the same order std::stable_sort gives, which the backward needs to add a row's
// contributions exactly as the dense backward does. Only the digits that the largest index
// uses are sorted, so the cost is O(n · passes) with passes <= 4, never O(num_embeddings).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../index_span.hpp"

namespace emb::detail {

// Scratch a caller keeps between calls so that steady-state sorts do not allocate.
struct RadixScratch {
  std::vector<std::uint64_t> words;
  std::vector<std::uint64_t> spare;
};

// Below this many positions a comparison sort is as fast and needs no counting pass.
inline constexpr std::size_t radix_min_size = 64;

// Fills `positions` with the positions p of `idx[0:n)` for which keep(p) holds, ordered by
// idx[p] and, for equal indices, by p. Indices must be >= 0.
template <class Keep>
void stable_positions_by_index(const Index* idx, std::size_t n, Keep keep,
                               std::vector<std::size_t>& positions, RadixScratch& scratch) {
  positions.clear();
  positions.reserve(n);
  Index max_index = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!keep(i)) continue;
    positions.push_back(i);
    max_index = std::max(max_index, idx[i]);
  }
  const std::size_t m = positions.size();
  const bool packable = static_cast<std::uint64_t>(max_index) < (std::uint64_t{1} << 32) &&
                        static_cast<std::uint64_t>(n) < (std::uint64_t{1} << 32);
  if (m < radix_min_size || !packable) {
    std::stable_sort(positions.begin(), positions.end(),
                     [idx](std::size_t a, std::size_t b) { return idx[a] < idx[b]; });
    return;
  }
  auto& words = scratch.words;
  auto& spare = scratch.spare;
  words.resize(m);
  spare.resize(m);
  for (std::size_t j = 0; j < m; ++j) {
    const std::size_t p = positions[j];
    words[j] = (static_cast<std::uint64_t>(idx[p]) << 32) | static_cast<std::uint64_t>(p);
  }
  for (unsigned shift = 32; shift < 64; shift += 8) {
    if ((static_cast<std::uint64_t>(max_index) << 32) >> shift == 0) break;  // digits left are 0
    std::array<std::size_t, 256> count{};
    for (std::size_t j = 0; j < m; ++j) ++count[(words[j] >> shift) & 0xFF];
    std::size_t sum = 0;
    for (auto& c : count) {
      const std::size_t here = c;
      c = sum;
      sum += here;
    }
    for (std::size_t j = 0; j < m; ++j) spare[count[(words[j] >> shift) & 0xFF]++] = words[j];
    words.swap(spare);
  }
  for (std::size_t j = 0; j < m; ++j) {
    positions[j] = static_cast<std::size_t>(words[j] & 0xFFFFFFFFu);
  }
}

}  // namespace emb::detail
