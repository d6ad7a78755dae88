// Serving: many threads look up and pool from one shared table at once (a const table without
// max_norm never writes), and every result equals the serial one. Run under ThreadSanitizer by
// the tsan preset (.ci/run), which reports any data race.

#include <emb/embedding.hpp>
#include <emb/embedding_bag.hpp>
#include <emb/quantized.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <cstdint>
#include <random>
#include <thread>
#include <vector>

using emb::BagMode;
using emb::Embedding;
using emb::EmbeddingBag;
using emb::EmbeddingBagOptions;
using emb::EmbeddingOptions;
using emb::Index;
using emb::Matrix;
using emb::QuantBits;
using emb::QuantizedBagOptions;
using emb::QuantizedEmbedding;
using emb::QuantizedEmbeddingBag;
using emb::QuantizedTable;
using emb::Vector;
using emb_test::bit_identical;

namespace {

constexpr int kThreads = 8;
constexpr int kRounds = 20;

std::vector<Index> ids_for(unsigned seed, std::size_t n, Index rows) {
  return emb_test::random_ids(n, rows, seed);
}

// Calls work(thread, round) from kThreads threads at once, kRounds times each, and requires
// every result to equal expected(thread, round), computed serially first.
template <class Work>
void check_concurrent(Work work) {
  std::vector<std::vector<Matrix<float>>> expected(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int r = 0; r < kRounds; ++r) expected[static_cast<std::size_t>(t)].push_back(work(t, r));
  }
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        if (!bit_identical(work(t, r), expected[static_cast<std::size_t>(t)][static_cast<std::size_t>(r)])) {
          ++mismatches[static_cast<std::size_t>(t)];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) CHECK(mismatches[static_cast<std::size_t>(t)] == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("Concurrency: eight threads look up one const table", S, float, emb::half,
                   emb::bfloat16) {
  const Embedding<float, S> table(EmbeddingOptions(5000, 24).padding_idx(0), 3);
  check_concurrent([&](int t, int r) {
    return table.forward(ids_for(static_cast<unsigned>(100 * t + r), 300, 5000));
  });
}

TEST_CASE_TEMPLATE("Concurrency: eight threads pool bags from one const table", S, float, emb::half,
                   emb::bfloat16) {
  for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
    const EmbeddingBag<float, S> bag(EmbeddingBagOptions(3000, 16).mode(mode).padding_idx(1), 4);
    const std::vector<Index> offsets = {0, 10, 10, 50, 120};
    check_concurrent([&](int t, int r) {
      const auto ids = ids_for(static_cast<unsigned>(1000 + 100 * t + r), 200, 3000);
      if (mode != BagMode::Sum) return bag.forward(ids, offsets);
      Vector<float> psw = Vector<float>::LinSpaced(200, -1.0f, 1.0f);
      return bag.forward(ids, offsets, psw);
    });
  }
}

TEST_CASE("Concurrency: gradients of a shared const table from eight threads") {
  const Embedding<float> table(EmbeddingOptions(2000, 8).scale_grad_by_freq(true), 5);
  check_concurrent([&](int t, int r) {
    const auto ids = ids_for(static_cast<unsigned>(2000 + 100 * t + r), 100, 2000);
    return table.backward(ids, Matrix<float>::Ones(100, 8)).values;
  });
}

TEST_CASE("Concurrency: eight threads look up and pool from one quantized table") {
  const Embedding<float> source(EmbeddingOptions(4000, 64), 6);
  for (QuantBits bits : {QuantBits::Int8, QuantBits::Int4, QuantBits::Int2}) {
    // One table, its bytes shared by every layer below.
    const QuantizedTable table = QuantizedTable::quantize(source.weight(), bits);
    const QuantizedEmbedding<float> lookups(table);
    check_concurrent([&](int t, int r) {
      return lookups.forward(ids_for(static_cast<unsigned>(3000 + 100 * t + r), 300, 4000));
    });
    // A pruned view of the same rows: original ids 0..7999, every other one pruned.
    std::vector<Index> mapping(8000);
    for (Index i = 0; i < 8000; ++i) mapping[static_cast<std::size_t>(i)] = i % 2 == 0 ? i / 2 : -1;
    const std::vector<Index> offsets = {0, 20, 20, 60, 140};
    for (BagMode mode : {BagMode::Sum, BagMode::Mean, BagMode::Max}) {
      const QuantizedEmbeddingBag<float> bag(table, QuantizedBagOptions().mode(mode).padding_idx(2));
      check_concurrent([&](int t, int r) {
        const auto ids = ids_for(static_cast<unsigned>(4000 + 100 * t + r), 200, 4000);
        const auto original = ids_for(static_cast<unsigned>(5000 + 100 * t + r), 200, 8000);
        Matrix<float> both(10, 64);
        if (mode == BagMode::Sum) {
          const Vector<float> psw = Vector<float>::LinSpaced(200, -1.0f, 1.0f);
          both.topRows(5) = bag.forward(ids, offsets, psw);
          both.bottomRows(5) = bag.forward(original, offsets, &psw, mapping);
        } else {
          both.topRows(5) = bag.forward(ids, offsets);
          both.bottomRows(5) = bag.forward(original, offsets, mapping);
        }
        return both;
      });
    }
  }
}
