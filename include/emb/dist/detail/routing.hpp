// emb/dist/detail/routing.hpp — how a sharded table's rows are split over the ranks, and which
// ids of a batch go to which rank: the bookkeeping of the all-to-all exchanges, with no MPI in
// it (emb/dist/mpi.hpp does the communication).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "../../detail/bag.hpp"
#include "../../index_span.hpp"

namespace emb::dist::detail {

// Rows [0, rows) in contiguous blocks over `parts` ranks: rank r holds [begin(r), end(r)), the
// first rows % parts ranks one row more than the others (so blocks differ by at most one row; a
// rank holds no row when rows < parts).
class RowBlocks {
 public:
  RowBlocks(Index rows, int parts)
      : rows_(rows),
        parts_(parts),
        base_(rows / parts),
        extra_(static_cast<int>(rows % parts)),
        cut_(static_cast<Index>(extra_) * (base_ + 1)) {}

  Index rows() const noexcept { return rows_; }
  int parts() const noexcept { return parts_; }
  Index begin(int part) const noexcept {
    return static_cast<Index>(part) * base_ + std::min<Index>(part, extra_);
  }
  Index end(int part) const noexcept { return begin(part + 1); }
  Index size(int part) const noexcept { return end(part) - begin(part); }
  // The rank holding `row`, for a row in [0, rows).
  int owner(Index row) const noexcept {
    return row < cut_ ? static_cast<int>(row / (base_ + 1))
                      : extra_ + static_cast<int>((row - cut_) / base_);
  }

 private:
  Index rows_;
  int parts_;
  Index base_;
  int extra_;
  Index cut_;  // the rows of the larger blocks
};

// Counts to displacements (exclusive prefix sums).
inline void displacements(const std::vector<int>& counts, std::vector<int>& displs) {
  displs.resize(counts.size());
  int at = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    displs[r] = at;
    at += counts[r];
  }
}

// A batch of plain lookups sorted by owner: ids[counts/displs of rank r] are the ids rank r
// holds, as its local row numbers, in batch order; slot[i] is where position i of the batch went.
struct LookupRoute {
  std::vector<int> counts;
  std::vector<int> displs;
  std::vector<Index> ids;
  std::vector<std::size_t> slot;
};

// The ids must be valid rows; the caller keeps each rank's count within int (see mpi.hpp).
inline void plan_lookups(const RowBlocks& blocks, IndexSpan ids, LookupRoute& route,
                         std::vector<int>& owner_scratch) {
  const std::size_t n = ids.size();
  const auto parts = static_cast<std::size_t>(blocks.parts());
  route.counts.assign(parts, 0);
  owner_scratch.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const int o = blocks.owner(ids[i]);
    owner_scratch[i] = o;
    ++route.counts[static_cast<std::size_t>(o)];
  }
  displacements(route.counts, route.displs);
  std::vector<int> next = route.displs;
  route.ids.resize(n);
  route.slot.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto o = static_cast<std::size_t>(owner_scratch[i]);
    const auto s = static_cast<std::size_t>(next[o]++);
    route.ids[s] = ids[i] - blocks.begin(static_cast<int>(o));
    route.slot[i] = s;
  }
}

// A batch of bags split into partial bags, one per (bag, owner) with at least one id: what each
// owner pools. For rank r, ids[id_displs[r] ...] are its ids (local row numbers) and
// parts[part_displs[r] ...] its partial bags, both in bag order, a partial bag's ids
// contiguous. Padding entries are routed like any id (the owner skips them, and max_norm sees
// them as one process would); `live` counts the entries that are not padding.
struct BagRoute {
  std::vector<int> id_counts, id_displs;
  std::vector<int> part_counts, part_displs;
  std::vector<Index> ids;              // local rows, grouped by owner
  std::vector<std::size_t> position;   // batch position of each routed id
  std::vector<Index> part_length;      // ids in each partial bag (what the owner is sent)
  std::vector<std::size_t> part_bag;   // the bag each partial bag belongs to
  std::vector<std::size_t> part_first; // its first entry in ids
  std::vector<Index> part_live;        // its non-padding entries
  std::vector<Index> bag_live;         // non-padding entries of each whole bag
};

// Ids must be valid rows and offsets valid for them (detail::check_offsets).
inline void plan_bags(const RowBlocks& blocks, IndexSpan ids, IndexSpan offsets, std::size_t bags,
                      std::optional<Index> padding, BagRoute& route,
                      std::vector<int>& owner_scratch) {
  using emb::detail::bag_begin;
  using emb::detail::bag_end;
  const std::size_t n = ids.size();
  const auto parts = static_cast<std::size_t>(blocks.parts());
  const Index pad = padding.value_or(-1);
  constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
  route.id_counts.assign(parts, 0);
  route.part_counts.assign(parts, 0);
  owner_scratch.resize(n);
  std::vector<std::size_t> last(parts, none);  // the last bag that sent rank r an id
  for (std::size_t b = 0; b < bags; ++b) {
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      const int o = blocks.owner(ids[i]);
      const auto r = static_cast<std::size_t>(o);
      owner_scratch[i] = o;
      ++route.id_counts[r];
      if (last[r] != b) {
        last[r] = b;
        ++route.part_counts[r];
      }
    }
  }
  displacements(route.id_counts, route.id_displs);
  displacements(route.part_counts, route.part_displs);
  const auto total_parts =
      parts == 0 ? std::size_t{0}
                 : static_cast<std::size_t>(route.part_displs.back() + route.part_counts.back());
  route.ids.resize(n);
  route.position.resize(n);
  route.part_length.assign(total_parts, 0);
  route.part_bag.resize(total_parts);
  route.part_first.resize(total_parts);
  route.part_live.assign(total_parts, 0);
  route.bag_live.assign(bags, 0);
  std::vector<int> next_id = route.id_displs;
  std::vector<int> next_part = route.part_displs;
  std::vector<std::size_t> current(parts, 0);  // rank r's partial bag of the current bag
  std::fill(last.begin(), last.end(), none);
  for (std::size_t b = 0; b < bags; ++b) {
    const std::size_t end = bag_end(offsets, b, n);
    for (std::size_t i = bag_begin(offsets, b); i < end; ++i) {
      const auto r = static_cast<std::size_t>(owner_scratch[i]);
      const auto s = static_cast<std::size_t>(next_id[r]++);
      route.ids[s] = ids[i] - blocks.begin(static_cast<int>(r));
      route.position[s] = i;
      if (last[r] != b) {
        last[r] = b;
        const auto p = static_cast<std::size_t>(next_part[r]++);
        current[r] = p;
        route.part_bag[p] = b;
        route.part_first[p] = s;
      }
      const std::size_t p = current[r];
      ++route.part_length[p];
      if (ids[i] != pad) {
        ++route.part_live[p];
        ++route.bag_live[b];
      }
    }
  }
}

}  // namespace emb::dist::detail
