// cosine_similarity and most_similar against hand-worked vectors.
#include <emb/similarity.hpp>

#include <doctest/doctest.h>

#include <stdexcept>

using emb::Matrix;

TEST_CASE("cosine_similarity: hand-worked angles and the zero vector") {
  Eigen::Vector2d x(1.0, 0.0);
  Eigen::Vector2d y(0.0, 2.0);
  Eigen::Vector2d d(3.0, 3.0);
  CHECK(emb::cosine_similarity(x, x) == doctest::Approx(1.0));
  CHECK(emb::cosine_similarity(x, y) == doctest::Approx(0.0));
  CHECK(emb::cosine_similarity(x, -x) == doctest::Approx(-1.0));
  CHECK(emb::cosine_similarity(x, d) == doctest::Approx(1.0 / std::sqrt(2.0)));
  CHECK(emb::cosine_similarity(x, Eigen::Vector2d::Zero()) == 0.0);
}

TEST_CASE("most_similar: neighbours by cosine, most similar first, itself excluded") {
  Matrix<float> t(5, 2);
  t << 1, 0,    // 0
      0, 1,     // 1
      2, 0.1f,  // 2: nearly along 0
      -1, 0,    // 3: opposite of 0
      1, 1;     // 4: 45 degrees
  const auto n = emb::most_similar(t, 0, 3);
  REQUIRE(n.size() == 3);
  CHECK(n[0].id == 2);
  CHECK(n[1].id == 4);
  CHECK(n[1].similarity == doctest::Approx(1.0 / std::sqrt(2.0)));
  CHECK(n[2].id == 1);
  CHECK(emb::most_similar(t, 0, 10).size() == 4);
  CHECK(emb::most_similar(t, 0, 10).back().id == 3);
  CHECK_THROWS_AS(emb::most_similar(t, 5, 1), std::out_of_range);
}
