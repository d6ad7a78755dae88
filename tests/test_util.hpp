// Helpers shared by emb's test programs: small matrices written out by hand, exception
// messages, bit-exact comparison and scratch directories.
#pragma once

#include <emb/index_span.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace emb_test {

// A (rows, cols) matrix from values listed row by row.
template <class T>
emb::Matrix<T> mat(emb::Index rows, emb::Index cols, std::initializer_list<T> values) {
  REQUIRE(static_cast<emb::Index>(values.size()) == rows * cols);
  emb::Matrix<T> m(rows, cols);
  std::copy(values.begin(), values.end(), m.data());
  return m;
}

template <class T>
emb::Vector<T> vec(std::initializer_list<T> values) {
  emb::Vector<T> v(static_cast<emb::Index>(values.size()));
  std::copy(values.begin(), values.end(), v.data());
  return v;
}

// Runs `call`, requires it to throw E, and returns the message.
template <class E, class F>
std::string message_of(F&& call) {
  try {
    call();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("threw a different exception: " << e.what());
    return {};
  }
  FAIL("did not throw");
  return {};
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Same shape and exactly equal coefficients, no tolerance (any two dense Eigen objects, whatever
// their storage orders).
template <class A, class B>
bool bit_identical(const A& a, const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (emb::Index i = 0; i < a.rows(); ++i) {
    for (emb::Index j = 0; j < a.cols(); ++j) {
      if (!(a(i, j) == b(i, j))) return false;
    }
  }
  return true;
}

// A (rows, cols) float matrix of N(0, scale^2) values (drawn in double), fixed by the seed.
inline emb::Matrix<float> random_matrix(emb::Index rows, emb::Index cols, unsigned seed,
                                        double scale = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  emb::Matrix<float> m(rows, cols);
  for (emb::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(normal(gen));
  return m;
}

// n ids drawn uniformly from [0, rows), fixed by the seed.
inline std::vector<emb::Index> random_ids(std::size_t n, emb::Index rows, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::vector<emb::Index> ids(n);
  for (auto& i : ids) i = static_cast<emb::Index>(gen() % static_cast<std::uint64_t>(rows));
  return ids;
}

// The 3x4 table tests/data/make_data.py writes into every .npy and word-vector file there
// (distinct values, so that a wrong order shows).
inline emb::Matrix<double> data_table() {
  emb::Matrix<double> m(3, 4);
  m << 0.1, -2.5, 3.0, 0.001, 1.5, 0.25, -0.125, 7.0, -0.3, 2.0, 1e-5, -4.75;
  return m;
}

// A fresh directory under the system's temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "emb-test") {
    std::random_device rd;
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path_ = std::filesystem::temp_directory_path() /
            (prefix + "-" + std::to_string(stamp) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = file(name);
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }

 private:
  std::filesystem::path path_;
};

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace emb_test
