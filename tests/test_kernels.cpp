// The fast paths inside emb's kernels: each is checked against a plain oracle written here (a
// naive loop, std::stable_sort, the sort-based renorm), bit for bit, and each keeps the bounds
// check. The paths are forced through the kernels' explicit plans and thread counts, so they
// are covered on any machine, with or without OpenMP.
#include <emb/embedding.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using emb::Embedding;
using emb::EmbeddingOptions;
using emb::Index;
using emb::IndexSpan;
using emb::Matrix;
namespace detail = emb::detail;

namespace {

// Same shape and the same bits in every coefficient (so -0 differs from +0), for matrices and
// views of them.
template <class A, class B>
bool bit_identical(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  static_assert(std::is_same_v<typename A::Scalar, typename B::Scalar>);
  using T = typename A::Scalar;
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < a.cols(); ++j) {
      const T x = a(i, j);
      const T y = b(i, j);
      if (std::memcmp(&x, &y, sizeof(T)) != 0) return false;
    }
  }
  return true;
}

template <class T>
Matrix<T> random_matrix(Index rows, Index cols, std::uint64_t seed) {
  Matrix<T> m(rows, cols);
  detail::Rng rng(seed);
  rng.fill_normal(m.data(), static_cast<std::size_t>(m.size()));
  return m;
}

std::vector<Index> random_indices(std::size_t n, Index bound, std::uint64_t seed) {
  detail::Rng rng(seed);
  std::vector<Index> v(n);
  for (auto& k : v) k = static_cast<Index>(rng.next_u64() % static_cast<std::uint64_t>(bound));
  return v;
}

std::string message_of_out_of_range(const std::function<void()>& call) {
  try {
    call();
  } catch (const std::out_of_range& e) {
    return e.what();
  }
  FAIL("did not throw std::out_of_range");
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Sets emb's thread count for one scope.
struct Threads {
  explicit Threads(int n) : old(emb::num_threads()) { emb::set_num_threads(n); }
  ~Threads() { emb::set_num_threads(old); }
  Threads(const Threads&) = delete;
  Threads& operator=(const Threads&) = delete;
  int old;
};

// The oracle of every gather: out row i = table row idx[i], by element.
template <class Derived>
Matrix<typename Derived::Scalar> naive_gather(const Eigen::MatrixBase<Derived>& table,
                                              const std::vector<Index>& idx) {
  Matrix<typename Derived::Scalar> out(static_cast<Index>(idx.size()), table.cols());
  for (std::size_t i = 0; i < idx.size(); ++i) {
    for (Index j = 0; j < table.cols(); ++j) out(static_cast<Index>(i), j) = table(idx[i], j);
  }
  return out;
}

// The oracle of the dense backward: zeros, then each position's row added in input order.
template <class T>
Matrix<T> naive_dense_grad(Index rows, const std::vector<Index>& idx, const Matrix<T>& g,
                           std::optional<Index> pad, bool scale) {
  Matrix<T> grad = Matrix<T>::Zero(rows, g.cols());
  std::vector<Index> count(static_cast<std::size_t>(rows), 0);
  for (Index k : idx) ++count[static_cast<std::size_t>(k)];
  for (std::size_t i = 0; i < idx.size(); ++i) {
    const Index k = idx[i];
    if (pad && k == *pad) continue;
    const auto c = static_cast<double>(count[static_cast<std::size_t>(k)]);
    const T s = scale ? static_cast<T>(1.0 / c) : T(1);
    for (Index j = 0; j < g.cols(); ++j) grad(k, j) += s * g(static_cast<Index>(i), j);
  }
  return grad;
}

}  // namespace

TEST_CASE("Radix grouping orders positions exactly as std::stable_sort by index") {
  struct Case {
    std::size_t n;
    Index bound;
  };
  // Small n takes the comparison sort; the bounds exercise 1 to 4 radix digits, an index of
  // exactly 2^32 - 1, and beyond 2^32 the comparison fallback.
  const std::vector<Case> cases = {{10, 5},       {63, 1000},          {64, 1},
                                   {200, 7},      {1000, 256},         {1000, 257},
                                   {5000, 65536}, {5000, 1 << 20},     {3000, Index{1} << 31},
                                   {3000, (Index{1} << 32)},           {3000, Index{1} << 40}};
  for (const Case& c : cases) {
    CAPTURE(c.n);
    CAPTURE(c.bound);
    const std::uint64_t seed = c.n + static_cast<std::uint64_t>(c.bound);
    std::vector<Index> idx = random_indices(c.n, c.bound, seed);
    if (c.bound > 1) idx[c.n / 2] = c.bound - 1;  // the largest index takes every digit
    for (bool skip_some : {false, true}) {
      const Index skip = idx[1];
      const auto keep = [&](std::size_t i) { return !skip_some || idx[i] != skip; };
      std::vector<std::size_t> expected;
      for (std::size_t i = 0; i < c.n; ++i) {
        if (keep(i)) expected.push_back(i);
      }
      std::stable_sort(expected.begin(), expected.end(),
                       [&](std::size_t a, std::size_t b) { return idx[a] < idx[b]; });
      std::vector<std::size_t> got;
      detail::RadixScratch scratch;
      detail::stable_positions_by_index(idx.data(), c.n, keep, got, scratch);
      CHECK(got == expected);
      // A second call on the same scratch gives the same answer.
      detail::stable_positions_by_index(idx.data(), c.n, keep, got, scratch);
      CHECK(got == expected);
    }
  }
}

TEST_CASE("group_by_row: ascending rows, positions in input order, padding left out") {
  // 70 positions (the radix path): index i % 7, so row r appears at r, r + 7, r + 14, ...
  std::vector<Index> idx(70);
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<Index>(6 - i % 7);
  detail::RowSegments seg;
  detail::group_by_row(idx, Index{3}, seg);
  CHECK(seg.rows == std::vector<Index>{0, 1, 2, 4, 5, 6});
  REQUIRE(seg.starts.size() == 7);
  for (std::size_t r = 0; r < 6; ++r) {
    CHECK(seg.count(r) == 10);
    const Index row = seg.rows[r];
    for (std::size_t j = seg.starts[r]; j < seg.starts[r + 1]; ++j) {
      CHECK(idx[seg.positions[j]] == row);
      if (j > seg.starts[r]) CHECK(seg.positions[j] > seg.positions[j - 1]);
    }
  }
}

TEST_CASE("The branch-free index check agrees with the first-invalid scan on edge values") {
  const Index big = std::numeric_limits<Index>::max();
  const Index small = std::numeric_limits<Index>::min();
  for (Index size : {Index{0}, Index{1}, Index{7}, Index{1} << 40, big}) {
    const Index above = size < big ? size + 1 : big;
    for (Index probe : {small, small + 1, Index{-1}, Index{0}, size - 1, size, above, big}) {
      CAPTURE(size);
      CAPTURE(probe);
      std::vector<Index> idx = {0, probe, 0};
      if (size == 0) idx = {probe};
      const bool expected = detail::first_invalid_index(idx, size) == idx.size();
      CHECK(detail::all_indices_valid(idx, size) == expected);
    }
  }
  CHECK(detail::all_indices_valid({}, 0));
}

TEST_CASE("Gather: every copy path and prefetch distance gives the rows, bit for bit") {
  // Row sizes of every kind: the fixed-size copies (16 to 256 bytes), odd sizes below 256
  // bytes, and long rows copied by memcpy; float and double.
  for (Index dim : {1, 3, 4, 5, 8, 16, 32, 33, 64, 100, 128, 600}) {
    CAPTURE(dim);
    const Matrix<float> tf = random_matrix<float>(37, dim, 5);
    const Matrix<double> td = random_matrix<double>(37, dim, 6);
    for (std::size_t n : {0u, 1u, 2u, 17u, 300u}) {
      const std::vector<Index> idx = random_indices(n, 37, n + 1);
      for (std::size_t prefetch : {0u, 1u, 3u, 16u}) {
        for (int threads : {1, 2}) {
          CAPTURE(n);
          CAPTURE(prefetch);
          CAPTURE(threads);
          const detail::GatherPlan plan{prefetch, threads};
          Matrix<float> of(static_cast<Index>(n), dim);
          detail::gather_rows("test", tf.data(), tf.rows(), dim, idx, of.data(), dim, plan);
          CHECK(bit_identical(of, naive_gather(tf, idx)));
          Matrix<double> od(static_cast<Index>(n), dim);
          detail::gather_rows("test", td.data(), td.rows(), dim, idx, od.data(), dim, plan);
          CHECK(bit_identical(od, naive_gather(td, idx)));
        }
      }
    }
  }
}

TEST_CASE("Gather: rows land at the output stride and nothing else is written") {
  const Matrix<float> table = random_matrix<float>(50, 16, 9);
  const std::vector<Index> idx = random_indices(40, 50, 3);
  for (std::size_t prefetch : {0u, 4u}) {
    Matrix<float> wide = Matrix<float>::Constant(40, 21, -7.0f);
    detail::gather_rows("test", table.data(), 50, 16, idx, wide.data() + 2, 21,
                        detail::GatherPlan{prefetch, 2});
    CHECK(bit_identical(Matrix<float>(wide.middleCols(2, 16)), naive_gather(table, idx)));
    CHECK((wide.leftCols(2).array() == -7.0f).all());
    CHECK((wide.rightCols(3).array() == -7.0f).all());
  }
}

TEST_CASE("Gather: the bounds check fires on every path and leaves the output untouched") {
  const Matrix<float> table = random_matrix<float>(20, 16, 1);
  for (Index bad : {Index{-1}, Index{20}, std::numeric_limits<Index>::min()}) {
    for (std::size_t prefetch : {0u, 2u}) {
      for (int threads : {1, 2}) {
        CAPTURE(bad);
        CAPTURE(prefetch);
        CAPTURE(threads);
        std::vector<Index> idx = random_indices(100, 20, 4);
        idx[99] = bad;  // last, so that a check done while copying would have written rows
        Matrix<float> out = Matrix<float>::Constant(100, 16, 3.0f);
        const std::string msg = message_of_out_of_range([&] {
          detail::gather_rows("where", table.data(), 20, 16, idx, out.data(), 16,
                              detail::GatherPlan{prefetch, threads});
        });
        CHECK(contains(msg, "where: index " + std::to_string(bad) + " at position 99"));
        CHECK(contains(msg, "[0, 20)"));
        CHECK((out.array() == 3.0f).all());
      }
    }
  }
}

TEST_CASE("Embedding: forward on a table past the prefetch threshold, threads and bad indices") {
  // 8 MiB of floats: the forward plan prefetches.
  const Index rows = 65536;
  const Index dim = 32;
  REQUIRE(detail::prefetch_distance(static_cast<std::size_t>(rows * dim) * sizeof(float),
                                    static_cast<std::size_t>(dim) * sizeof(float)) > 0);
  Matrix<float> w(rows, dim);
  for (Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(i % 9973) * 0.25f;
  auto table = Embedding<float>::from_pretrained(w);
  const std::vector<Index> idx = random_indices(20000, rows, 8);  // 2.5 MiB: big enough to split
  const Matrix<float> expected = naive_gather(w, idx);
  Matrix<float> serial;
  Matrix<float> threaded;
  {
    Threads one(1);
    serial = table.forward(idx);
  }
  {
    Threads two(2);
    threaded = table.forward(idx);
  }
  CHECK(bit_identical(serial, expected));
  CHECK(bit_identical(threaded, expected));

  std::vector<Index> bad = idx;
  bad.back() = rows;
  Threads two(2);
  Matrix<float> out = Matrix<float>::Zero(static_cast<Index>(bad.size()), dim);
  CHECK_THROWS_AS(table.forward(bad, out), std::out_of_range);
  CHECK((out.array() == 0.0f).all());
}

TEST_CASE("set_num_threads: accepts n >= 1 and names the value it rejects") {
  const int before = emb::num_threads();
  emb::set_num_threads(3);
  CHECK(emb::num_threads() == 3);
  emb::set_num_threads(before);
  for (int bad : {0, -2}) {
    try {
      emb::set_num_threads(bad);
      FAIL("did not throw");
    } catch (const std::invalid_argument& e) {
      CHECK(contains(e.what(), "n = " + std::to_string(bad)));
    }
  }
  CHECK(emb::num_threads() == before);
#ifdef _OPENMP
  CHECK(emb::parallel_enabled());
#else
  CHECK_FALSE(emb::parallel_enabled());
#endif
}

TEST_CASE("Backward: sparse and dense gradients are the same bits with 1 and 2 threads") {
  const Index rows = 3000;
  const Index dim = 40;
  const std::vector<Index> idx = random_indices(6000, rows / 3, 21);  // many duplicates
  const Matrix<float> g = random_matrix<float>(6000, dim, 22);        // ~940 KiB: splits
  for (bool scale : {false, true}) {
    for (std::optional<Index> pad : {std::optional<Index>{}, std::optional<Index>{5}}) {
      CAPTURE(scale);
      CAPTURE(pad.has_value());
      auto opts = EmbeddingOptions(rows, dim).scale_grad_by_freq(scale).padding_idx(pad);
      const Embedding<float> table(opts, 1);
      const Matrix<float> oracle = naive_dense_grad(rows, idx, g, pad, scale);
      for (int threads : {1, 2}) {
        CAPTURE(threads);
        Threads t(threads);
        const Matrix<float> dense = table.backward_dense(idx, g);
        CHECK(bit_identical(dense, oracle));
        CHECK(bit_identical(table.backward(idx, g).to_dense(), oracle));
        Matrix<float> into = Matrix<float>::Constant(rows, dim, 9.0f);  // overwritten whole
        table.backward_dense(idx, g, into);
        CHECK(bit_identical(into, oracle));
      }
      // The kernels with explicit thread counts, whatever this program was compiled with.
      detail::RowSegments seg;
      const Index skip = pad.value_or(-1);
      detail::group_by_row(idx, skip, seg);
      Matrix<float> v1(static_cast<Index>(seg.rows.size()), dim);
      Matrix<float> v2(static_cast<Index>(seg.rows.size()), dim);
      const detail::GradRows<float> grad_rows{g.data(), dim, nullptr};
      detail::GradScale<float> grad_scale;
      grad_scale.by_freq = scale;
      detail::sum_segments_into(seg, grad_rows, grad_scale, dim, v1.data(), 1);
      detail::sum_segments_into(seg, grad_rows, grad_scale, dim, v2.data(), 2);
      CHECK(bit_identical(v1, v2));
      Matrix<float> d1(rows, dim);
      Matrix<float> d2(rows, dim);
      detail::zero_and_scatter_dense(IndexSpan(idx), grad_rows, grad_scale, dim, skip, d1.data(),
                                     dim, rows, 1);
      detail::zero_and_scatter_dense(IndexSpan(idx), grad_rows, grad_scale, dim, skip, d2.data(),
                                     dim, rows, 2);
      CHECK(bit_identical(d1, oracle));
      CHECK(bit_identical(d2, oracle));
    }
  }
}

TEST_CASE("Backward: a -0 contribution gives +0 in the sparse gradient, as in the dense one") {
  // The sparse kernel assigns a row's first term instead of adding it to zero; 0 + (-0) is +0.
  const Embedding<double> table(4, 2);
  Matrix<double> g(2, 2);
  g << -0.0, 1.0, 2.0, -0.0;
  const auto sparse = table.backward({1, 3}, g);
  const Matrix<double> dense = table.backward_dense({1, 3}, g);
  CHECK_FALSE(std::signbit(sparse.values(0, 0)));
  CHECK_FALSE(std::signbit(sparse.values(1, 1)));
  CHECK_FALSE(std::signbit(dense(1, 0)));
  CHECK(bit_identical(sparse.to_dense(), dense));
}

TEST_CASE("backward_dense into a buffer: a block of a wider matrix, and shape errors") {
  Embedding<float> table(EmbeddingOptions(6, 3).padding_idx(0), 4);
  const std::vector<Index> idx = {2, 0, 2, 5};
  const Matrix<float> g = random_matrix<float>(4, 3, 2);
  Matrix<float> wide = Matrix<float>::Constant(6, 5, 8.0f);
  table.backward_dense(idx, g, wide.middleCols(1, 3));
  CHECK(bit_identical(Matrix<float>(wide.middleCols(1, 3)), table.backward_dense(idx, g)));
  CHECK((wide.col(0).array() == 8.0f).all());
  CHECK((wide.col(4).array() == 8.0f).all());

  Matrix<float> wrong(5, 3);
  try {
    table.backward_dense(idx, g, wrong);
    FAIL("did not throw");
  } catch (const std::invalid_argument& e) {
    CHECK(contains(e.what(), "(5, 3)"));
    CHECK(contains(e.what(), "(6, 3)"));
  }
  std::vector<Index> bad = idx;
  bad[3] = 6;
  Matrix<float> buffer = Matrix<float>::Constant(6, 3, 1.0f);
  CHECK_THROWS_AS(table.backward_dense(bad, g, buffer), std::out_of_range);
  CHECK((buffer.array() == 1.0f).all());
}

// The obvious renorm, for comparison: sort the indices, drop duplicates, rescale each row.
template <class T>
void sorted_renorm(T* table, Index dim, emb::IndexSpan indices, double max_norm, double p,
                   std::vector<Index>& scratch) {
  scratch.assign(indices.begin(), indices.end());
  std::sort(scratch.begin(), scratch.end());
  const auto last = std::unique(scratch.begin(), scratch.end());
  for (auto it = scratch.begin(); it != last; ++it) {
    detail::renorm_row<T>(table + *it * dim, dim, max_norm, p);
  }
}

TEST_CASE("max_norm: the byte-map renorm rewrites the same rows as the sort-based one") {
  for (double p : {1.0, 2.0, 3.0, std::numeric_limits<double>::infinity()}) {
    CAPTURE(p);
    const Matrix<float> w = random_matrix<float>(500, 24, 3);
    Matrix<float> a = w;
    Matrix<float> b = w;
    detail::RenormScratch scratch;
    std::vector<Index> sort_scratch;
    for (std::uint64_t call = 0; call < 3; ++call) {  // the map must be clear between calls
      const std::vector<Index> idx = random_indices(700, 500, 40 + call);
      detail::renorm_distinct<float>(a.data(), 500, 24, idx, 1.5, p, scratch);
      sorted_renorm(b.data(), 24, idx, 1.5, p, sort_scratch);
      CHECK(bit_identical(a, b));
    }
    CHECK(!bit_identical(a, w));  // rows were rescaled
  }
}

TEST_CASE("max_norm: a norm equal to max_norm is left alone, just above is rescaled") {
  Matrix<double> w(2, 2);
  w << 3.0, 4.0,  // norm 5 exactly
      0.6, 0.8;   // norm 1 (to rounding)
  detail::RenormScratch scratch;
  Matrix<double> a = w;
  detail::renorm_distinct<double>(a.data(), 2, 2, {0}, 5.0, 2.0, scratch);
  CHECK(a == w);
  detail::renorm_distinct<double>(a.data(), 2, 2, {0, 0}, std::nextafter(5.0, 0.0), 2.0, scratch);
  CHECK(a(0, 0) == doctest::Approx(3.0 * std::nextafter(5.0, 0.0) / (5.0 + 1e-7)).epsilon(1e-15));
  CHECK(a.row(1) == w.row(1));
}

TEST_CASE("max_norm: rows looked up again stay within max_norm and are read after the rewrite") {
  auto table = Embedding<float>::from_pretrained(random_matrix<float>(1000, 16, 12),
                                                 emb::FromPretrainedOptions().max_norm(1.0));
  const std::vector<Index> a = random_indices(512, 1000, 1);
  const std::vector<Index> b = random_indices(512, 1000, 2);
  Matrix<float> out(512, 16);
  table.forward(a, out);
  table.forward(b, out);
  // Rows already rescaled can sit a rounding above max_norm and be rescaled again (as in
  // PyTorch); either way the output is the table's rows after this call's rewrite.
  table.forward(a, out);
  CHECK(bit_identical(out, naive_gather(table.weight(), a)));
  for (const auto* looked_up : {&a, &b}) {
    for (Index r : *looked_up) CHECK(table.weight().row(r).norm() <= 1.0f + 1e-6f);
  }
}

TEST_CASE("Huge pages: advice on the aligned interior only, contents kept, AnonHugePages seen") {
  CHECK_FALSE(detail::advise_huge_pages(nullptr, std::size_t{64} << 20));
  std::vector<char> small(1 << 20);
  CHECK_FALSE(detail::advise_huge_pages(small.data(), small.size()));  // under 4 MiB

  Embedding<float> tiny(100, 8);
  CHECK_FALSE(tiny.use_huge_pages());
  CHECK_FALSE(tiny.uses_huge_pages());

  const Index rows = 1 << 16;  // 16 MiB of float rows of 64
  Matrix<float> w(rows, 64);
  for (Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(i % 65521);
  auto table = Embedding<float>::from_pretrained(w);
  const bool advised = table.use_huge_pages();
#ifdef __linux__
  CHECK(advised == detail::huge_pages_available());
#else
  CHECK_FALSE(advised);
#endif
  CHECK(bit_identical(table.weight(), w));  // the same weights in the new buffer
  CHECK(table.uses_huge_pages() == advised);
  const std::vector<Index> idx = random_indices(1000, rows, 5);
  CHECK(bit_identical(table.forward(idx), naive_gather(w, idx)));
  if (!advised) {
    // Said out loud: on a machine without transparent huge pages the checks below cannot run.
    MESSAGE("huge pages not available here (/sys/kernel/mm/transparent_hugepage/enabled is "
            "not 'always' or 'madvise'): the AnonHugePages, copy and move checks were skipped");
  } else {
    // The buffer was advised before its first write, so its 2 MiB-aligned interior (at least
    // 12 MiB of the 16) is backed by huge pages, as /proc/self/smaps reports.
    const std::size_t bytes = static_cast<std::size_t>(w.size()) * sizeof(float);
    CHECK(detail::huge_page_bytes(table.weight().data(), bytes) >= (std::size_t{12} << 20));
    Embedding<float> copy = table;
    CHECK_FALSE(copy.uses_huge_pages());
    Embedding<float> moved = std::move(table);
    CHECK(moved.uses_huge_pages());
    moved.set_weight(w);
    CHECK_FALSE(moved.uses_huge_pages());
  }
}
