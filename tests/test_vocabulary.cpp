// Vocabulary: dense ids in insertion order, UTF-8 tokens, unk handling.
#include <emb/vocabulary.hpp>

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

using emb::Index;
using emb::Vocabulary;

TEST_CASE("Vocabulary: ids are dense and follow insertion order (the classic word_to_id example)") {
  Vocabulary v{"hello", "<PAD>", "world"};
  CHECK(v.size() == 3);
  CHECK(v.id("hello") == 0);
  CHECK(v.id("<PAD>") == 1);
  CHECK(v.id("world") == 2);
  CHECK(v.token(2) == "world");
  CHECK(v.add("hello") == 0);  // existing token: same id, nothing inserted
  CHECK(v.size() == 3);
  CHECK(v.add("new") == 3);
  CHECK(v.encode_text("hello world <PAD> <PAD>") == std::vector<Index>{0, 2, 1, 1});
  CHECK(v.encode({"world", "hello"}) == std::vector<Index>{2, 0});
}

TEST_CASE("Vocabulary: UTF-8 tokens such as 优, 良, 差 are kept byte for byte") {
  Vocabulary v;
  CHECK(v.add("优") == 0);
  CHECK(v.add("良") == 1);
  CHECK(v.add("差") == 2);
  CHECK(v.token(1) == "良");
  CHECK(v.contains("差"));
  CHECK_FALSE(v.contains("好"));
  CHECK(v.find("优") == 0);
  CHECK_FALSE(v.find("好").has_value());
  CHECK(v.encode_text("优\t差  良\n") == std::vector<Index>{0, 2, 1});
}

TEST_CASE("Vocabulary: unknown tokens throw unless an unk token is set") {
  Vocabulary v{"a", "b"};
  try {
    (void)v.id("zzz");
    FAIL("did not throw");
  } catch (const std::out_of_range& e) {
    CHECK(std::string(e.what()).find("\"zzz\"") != std::string::npos);
  }
  CHECK_THROWS_AS(v.token(2), std::out_of_range);
  CHECK_THROWS_AS(v.token(-1), std::out_of_range);
  v.set_unk("<unk>");
  CHECK(v.unk_id() == 2);
  CHECK(v.id("zzz") == 2);
  CHECK(v.encode({"a", "?", "b"}) == std::vector<Index>{0, 2, 1});
  Vocabulary w{"x", "<unk>"};
  w.set_unk("<unk>");  // already present: no new entry
  CHECK(w.size() == 2);
  CHECK(w.id("nope") == 1);
}

TEST_CASE("Vocabulary: copies and moves keep working lookups") {
  Vocabulary v;
  for (int i = 0; i < 1000; ++i) v.add("token" + std::to_string(i));
  Vocabulary copy = v;
  Vocabulary moved = std::move(v);
  CHECK(copy.id("token999") == 999);
  CHECK(moved.id("token500") == 500);
  Vocabulary assigned;
  assigned = copy;
  copy.add("extra");
  CHECK(assigned.size() == 1000);
  CHECK(assigned.id("token7") == 7);
  CHECK(copy.id("extra") == 1000);
}
