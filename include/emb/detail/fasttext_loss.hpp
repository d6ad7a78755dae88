// emb/detail/fasttext_loss.hpp — the arithmetic of fastText's output layer at prediction
// time, operation for operation as fastText 0.9 compiles it: softmax (exp in double), the
// 512-step sigmoid table of one-vs-all and negative sampling, log(p + 1e-5) scores, the
// Huffman tree of hierarchical softmax and its depth-first search, and the k-best heap whose
// order predict-prob prints.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "../index_span.hpp"

namespace emb::detail {

// (score, output row), best first once sorted: fastText's Predictions.
using FastTextHeap = std::vector<std::pair<float, std::int32_t>>;

// fastText's std_log: log(x + 1e-5) in double, rounded to float. Scores are these logs;
// predict-prob prints exp(score), hence p + 1e-5 and not p.
inline float fasttext_log(float x) noexcept {
  return static_cast<float>(std::log(static_cast<double>(x) + 1e-5));
}

// fastText's sigmoid for one-vs-all and negative sampling: a table of 513 values over
// [-8, 8], indexed by truncation, 0 below and 1 above. NaN stays NaN.
inline float fasttext_sigmoid(float x) noexcept {
  static const std::array<float, 513> table = [] {
    std::array<float, 513> t{};
    for (std::size_t i = 0; i < t.size(); ++i) {
      const float at = static_cast<float>(i * 16) / 512.0f - 8.0f;
      t[i] = static_cast<float>(1.0 / (1.0 + static_cast<double>(std::exp(-at))));
    }
    return t;
  }();
  if (x < -8.0f) return 0.0f;
  if (x > 8.0f) return 1.0f;
  if (!(x == x)) return x;
  return table[static_cast<std::size_t>((x + 8.0f) * 512.0f / 8.0f / 2.0f)];
}

// Softmax in place, as fastText: the max, exp(x - max) computed in double and rounded to
// float, a float sum in order, then a float division.
inline void fasttext_softmax(float* out, Index n) noexcept {
  if (n <= 0) return;
  float max = out[0];
  for (Index i = 0; i < n; ++i) max = std::max(out[i], max);
  float z = 0.0f;
  for (Index i = 0; i < n; ++i) {
    out[i] = static_cast<float>(std::exp(static_cast<double>(out[i] - max)));
    z += out[i];
  }
  for (Index i = 0; i < n; ++i) out[i] /= z;
}

inline bool fasttext_better(const std::pair<float, std::int32_t>& l,
                            const std::pair<float, std::int32_t>& r) noexcept {
  return l.first > r.first;
}

// Offers (score, id) to a heap of at most k entries (fastText's heap discipline, so that ties
// come out in the order fastText prints).
inline void fasttext_offer(FastTextHeap& heap, std::size_t k, float score, std::int32_t id) {
  heap.emplace_back(score, id);
  std::push_heap(heap.begin(), heap.end(), fasttext_better);
  if (heap.size() > k) {
    std::pop_heap(heap.begin(), heap.end(), fasttext_better);
    heap.pop_back();
  }
}

// The k best of n probabilities (those below threshold skipped), best first.
inline void fasttext_k_best(const float* probabilities, Index n, std::size_t k, float threshold,
                            FastTextHeap& heap) {
  heap.clear();
  for (Index i = 0; i < n; ++i) {
    if (probabilities[i] < threshold) continue;
    const float score = fasttext_log(probabilities[i]);
    if (heap.size() == k && score < heap.front().first) continue;
    fasttext_offer(heap, k, score, static_cast<std::int32_t>(i));
  }
  std::sort_heap(heap.begin(), heap.end(), fasttext_better);
}

// Hierarchical softmax's tree, built from the target counts (descending, as fastText sorts
// its dictionary) the way fastText builds it: leaves 0..n-1, inner node i >= n scored by
// output row i - n, the root 2n - 2.
class FastTextTree {
 public:
  FastTextTree() = default;
  explicit FastTextTree(const std::vector<std::int64_t>& counts)
      : leaves_(static_cast<std::int64_t>(counts.size())) {
    if (leaves_ == 0) return;
    const auto nodes = static_cast<std::size_t>(2 * leaves_ - 1);
    left_.assign(nodes, -1);
    right_.assign(nodes, -1);
    std::vector<std::int64_t> count(nodes, 0);
    std::copy(counts.begin(), counts.end(), count.begin());
    // Two queues: leaves from the rarest up, inner nodes in the order they are made. fastText
    // gives not-yet-made nodes the count 1e15 so that a leaf wins against them; here such a
    // node is never compared (the same choice for every count below 1e15, and no read past
    // the tree for larger ones).
    std::int64_t leaf = leaves_ - 1;
    std::int64_t node = leaves_;
    for (std::int64_t i = leaves_; i < 2 * leaves_ - 1; ++i) {
      std::int64_t pick[2] = {0, 0};
      for (auto& p : pick) {
        if (leaf >= 0 && (node >= i || count[static_cast<std::size_t>(leaf)] <
                                           count[static_cast<std::size_t>(node)])) {
          p = leaf--;
        } else {
          p = node++;
        }
      }
      const auto at = static_cast<std::size_t>(i);
      left_[at] = pick[0];
      right_[at] = pick[1];
      count[at] = saturating_add(count[static_cast<std::size_t>(pick[0])],
                                 count[static_cast<std::size_t>(pick[1])]);
    }
  }

  std::int64_t leaves() const noexcept { return leaves_; }

  // fastText's depth-first search for the k most probable leaves: the left child gets
  // log(1 - f), the right log(f), f = sigmoid of row (node - n) . hidden computed by
  // `dot(row)`; a branch whose score falls below log(threshold), or below the worst of k
  // leaves found, is cut. An explicit stack visits nodes in the recursion's order (a deep
  // tree from a hostile file cannot overflow the call stack). Best first. Returns false, with
  // the heap cleared, if a score is NaN.
  template <class Dot>
  bool k_best(std::size_t k, float threshold, Dot&& dot, FastTextHeap& heap,
              std::vector<std::pair<std::int64_t, float>>& stack) const {
    heap.clear();
    stack.clear();
    if (leaves_ == 0) return true;
    const float floor = fasttext_log(threshold);
    stack.emplace_back(2 * leaves_ - 2, 0.0f);
    while (!stack.empty()) {
      const auto [node, score] = stack.back();
      stack.pop_back();
      if (score < floor) continue;
      if (heap.size() == k && score < heap.front().first) continue;
      const auto at = static_cast<std::size_t>(node);
      if (left_[at] == -1 && right_[at] == -1) {
        fasttext_offer(heap, k, score, static_cast<std::int32_t>(node));
        continue;
      }
      float f = dot(node - leaves_);
      f = 1.0f / (1.0f + std::exp(-f));
      if (!(f == f)) {
        heap.clear();
        return false;
      }
      stack.emplace_back(right_[at], score + fasttext_log(f));
      stack.emplace_back(left_[at], score + fasttext_log(1.0f - f));
    }
    std::sort_heap(heap.begin(), heap.end(), fasttext_better);
    return true;
  }

 private:
  // fastText adds plainly; counts that large never come from training, only from a damaged
  // file, where overflow must not be undefined.
  static std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept {
    if (b > 0 && a > std::numeric_limits<std::int64_t>::max() - b) {
      return std::numeric_limits<std::int64_t>::max();
    }
    if (b < 0 && a < std::numeric_limits<std::int64_t>::min() - b) {
      return std::numeric_limits<std::int64_t>::min();
    }
    return a + b;
  }

  std::int64_t leaves_ = 0;
  std::vector<std::int64_t> left_;
  std::vector<std::int64_t> right_;
};

}  // namespace emb::detail
