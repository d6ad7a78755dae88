// What the word-vector fuzzers share: load the same bytes with a large and a tiny scanner
// buffer, and require the same outcome, so a line or token split across two reads cannot
// change the result.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <emb/io/glove.hpp>
#include <emb/io/word2vec.hpp>
#include <optional>
#include <string>

template <class Load>
std::optional<emb::io::Vectors<float>> load_or_nothing(Load load, std::size_t chunk,
                                                       std::string& error) {
  try {
    return load(chunk);
  } catch (const emb::io::FileError& e) {
    error = e.what();
    return std::nullopt;
  }
}

template <class Load>
int differential(Load load) {
  std::string big_error, small_error;
  const auto big = load_or_nothing(load, std::size_t{1} << 20, big_error);
  const auto small = load_or_nothing(load, 3, small_error);
  if (big.has_value() != small.has_value()) std::abort();
  if (!big) {
    if (big_error != small_error) std::abort();
    return 0;
  }
  const auto& a = big->weight;
  const auto& b = small->weight;
  if (a.rows() != big->vocab.size() || a.rows() != b.rows() || a.cols() != b.cols() ||
      big->duplicates != small->duplicates ||
      (a.size() != 0 &&
       std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) != 0)) {
    std::abort();
  }
  for (emb::Index i = 0; i < a.rows(); ++i) {
    if (big->vocab.token(i) != small->vocab.token(i)) std::abort();
  }
  return 0;
}
