// emb::io::load_word2vec / load_glove / save_word2vec: pretrained word vectors.
//
// tests/data holds one 3x4 table in each flavour (tests/data/make_data.py): the word2vec C
// tool's text ("%lf " per value) and binary ('\n' after each row), gensim's text and binary (no
// trailing blank, no '\n'), fastText's .vec and GloVe with CRLF and tokens holding spaces. The
// values are NumPy's float32 of the decimals listed in data_table(). Malformed files are
// written by the tests; their expected line numbers and byte offsets are counted by hand.
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <emb/io/glove.hpp>
#include <emb/io/word2vec.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using emb::Index;
using emb::Matrix;
using emb::Vocabulary;
namespace fs = std::filesystem;

using emb_test::message_of;
using emb_test::contains;
using emb_test::TempDir;
using emb_test::read_bytes;
using emb_test::data_table;

namespace {

const std::string data_dir = EMB_TEST_DATA_DIR;

std::string floats(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
  return out;
}

std::vector<std::string> tokens_of(const Vocabulary& v) {
  return std::vector<std::string>(v.tokens().begin(), v.tokens().end());
}

}  // namespace

TEST_CASE("load_word2vec: the C tool's, gensim's and fastText's files give the same table") {
  const Matrix<float> expected = data_table().cast<float>();
  for (const char* name : {"w2v_c_text.txt", "w2v_gensim_text.txt", "w2v_c_binary.bin",
                           "w2v_gensim_binary.bin", "fasttext.vec"}) {
    CAPTURE(std::string(name));
    const auto v = emb::io::load_word2vec<float>(data_dir + "/" + name);
    CHECK(tokens_of(v.vocab) == std::vector<std::string>{"the", "优", "cat"});
    CHECK(v.vocab.id("优") == 1);
    CHECK(v.weight == expected);
    CHECK(v.duplicates == 0);
  }
  SUBCASE("fastText's .vec through its own name") {
    CHECK(emb::io::load_fasttext_vec<float>(data_dir + "/fasttext.vec").weight == expected);
  }
  SUBCASE("as double: binary widens float32 exactly, text parses the decimals") {
    const auto bin = emb::io::load_word2vec<double>(data_dir + "/w2v_c_binary.bin");
    CHECK(bin.weight == expected.cast<double>());
    const auto text = emb::io::load_word2vec<double>(data_dir + "/w2v_c_text.txt");
    CHECK(text.weight(0, 0) == 0.1);
    CHECK(text.weight(2, 2) == 0.00001);
  }
  SUBCASE("a forced format reads the same") {
    using emb::io::Word2VecFormat;
    const auto bin =
        emb::io::load_word2vec<float>(data_dir + "/w2v_gensim_binary.bin",
                                      emb::io::VectorsLoadOptions().format(Word2VecFormat::binary));
    CHECK(bin.weight == expected);
    const auto text = emb::io::load_word2vec<float>(
        data_dir + "/w2v_c_text.txt", emb::io::VectorsLoadOptions().format(Word2VecFormat::text));
    CHECK(text.weight == expected);
  }
}

TEST_CASE("Readers give the same result whatever the read size (lines split across reads)") {
  const Matrix<float> expected = data_table().cast<float>();
  for (const char* name : {"w2v_c_text.txt", "w2v_gensim_text.txt", "w2v_c_binary.bin",
                           "w2v_gensim_binary.bin", "fasttext.vec", "glove_crlf.txt"}) {
    const std::string bytes = read_bytes(data_dir + "/" + name);
    const bool glove = std::string(name) == "glove_crlf.txt";
    for (const std::size_t chunk : {1u, 2u, 3u, 7u, 64u, 1u << 20}) {
      CAPTURE(std::string(name));
      CAPTURE(chunk);
      emb::io::detail::MemorySource source(bytes.data(), bytes.size(), name);
      const emb::io::VectorsLoadOptions options;
      const auto v = glove ? emb::io::detail::read_glove<float>(source, options, chunk)
                           : emb::io::detail::read_word2vec<float>(source, options, chunk);
      CHECK(v.weight == expected);
      CHECK(v.vocab.size() == 3);
    }
  }
}

TEST_CASE("load_glove: tokens with spaces, a numeric token and CRLF line ends") {
  const auto v = emb::io::load_glove<float>(data_dir + "/glove_crlf.txt");
  CHECK(tokens_of(v.vocab) == std::vector<std::string>{"new york", "1999", "a  b"});
  CHECK(v.weight == data_table().cast<float>());
  CHECK(v.duplicates == 0);
}

TEST_CASE("load_glove: the dimension comes from the first line unless the options give it") {
  TempDir dir;
  SUBCASE("inferred: the first field is always the token") {
    const auto v = emb::io::load_glove<float>(dir.write("g.txt", "7 0.5 0.25\nx 1 2\n"));
    CHECK(tokens_of(v.vocab) == std::vector<std::string>{"7", "x"});
    CHECK(v.weight.cols() == 2);
  }
  SUBCASE("given: a first token that is two numbers") {
    const std::string path = dir.write("g.txt", "1 2 0.5 0.25\nx y 1 2\n");
    const auto v = emb::io::load_glove<float>(path, emb::io::VectorsLoadOptions().dim(2));
    CHECK(tokens_of(v.vocab) == std::vector<std::string>{"1 2", "x y"});
    Matrix<float> expected(2, 2);
    expected << 0.5f, 0.25f, 1.0f, 2.0f;
    CHECK(v.weight == expected);
    CHECK_THROWS_AS(emb::io::load_glove<float>(path, emb::io::VectorsLoadOptions().dim(0)),
                    std::invalid_argument);
  }
  SUBCASE("an empty file is an empty table") {
    const auto v = emb::io::load_glove<float>(dir.write("g.txt", "\n\n"));
    CHECK(v.vocab.size() == 0);
    CHECK(v.weight.size() == 0);
  }
}

TEST_CASE("Duplicate tokens keep their first vector and are counted, in every format") {
  TempDir dir;
  Matrix<float> expected(2, 2);
  expected << 1, 2, 3, 4;
  SUBCASE("word2vec text") {
    const auto v = emb::io::load_word2vec<float>(
        dir.write("d.txt", "4 2\nthe 1 2\ncat 3 4\nthe 5 6\ncat 7 8\n"));
    CHECK(tokens_of(v.vocab) == std::vector<std::string>{"the", "cat"});
    CHECK(v.weight == expected);
    CHECK(v.duplicates == 2);
  }
  SUBCASE("word2vec binary") {
    const auto v = emb::io::load_word2vec<float>(dir.write(
        "d.bin", "3 2\nthe " + floats({1, 2}) + "cat " + floats({3, 4}) + "the " + floats({5, 6})));
    CHECK(tokens_of(v.vocab) == std::vector<std::string>{"the", "cat"});
    CHECK(v.weight == expected);
    CHECK(v.duplicates == 1);
  }
  SUBCASE("GloVe") {
    const auto v = emb::io::load_glove<float>(dir.write("d.txt", "the 1 2\nthe 9 9\ncat 3 4\n"));
    CHECK(v.weight == expected);
    CHECK(v.duplicates == 1);
  }
}

TEST_CASE("load_word2vec: lenient where real files differ, strict where they cannot") {
  TempDir dir;
  Matrix<float> expected(2, 2);
  expected << 1, 2, 3, 4;
  SUBCASE("CRLF, tabs, trailing blanks, blank lines, no final newline, +1 and 1e+0") {
    const auto v = emb::io::load_word2vec<float>(
        dir.write("t.txt", "2 2\r\n\r\nthe\t+1 2.0 \t\r\n\ncat 3e+0 4\n\n"));
    CHECK(v.weight == expected);
  }
  SUBCASE("binary rows mixing the C tool's '\\n' and none") {
    const auto v = emb::io::load_word2vec<float>(
        dir.write("b.bin", "2 2\nthe " + floats({1, 2}) + "\ncat " + floats({3, 4})));
    CHECK(v.weight == expected);
  }
  SUBCASE("raw floats that look like text up to a newline byte are still read as binary") {
    // 0x3f000a35 is a float whose first two bytes are '5' and '\n'.
    const std::string odd("5\n\x00\x3f", 4);
    float value = 0;
    std::memcpy(&value, odd.data(), 4);
    const auto v =
        emb::io::load_word2vec<float>(dir.write("b.bin", "1 2\nw " + odd + floats({1}) + "\n"));
    REQUIRE(v.weight.rows() == 1);
    CHECK(v.weight(0, 0) == value);
    CHECK(v.weight(0, 1) == 1.0f);
  }
  SUBCASE("tiny values round to zero as NumPy does; inf and nan are numbers") {
    const auto v =
        emb::io::load_word2vec<float>(dir.write("t.txt", "1 4\nx 1e-60 -1e-60 inf nan\n"));
    CHECK(v.weight(0, 0) == 0.0f);
    CHECK(std::signbit(v.weight(0, 1)));
    CHECK(std::isinf(v.weight(0, 2)));
    CHECK(std::isnan(v.weight(0, 3)));
  }
  SUBCASE("the header's dimension checked against the options") {
    const std::string path = dir.write("t.txt", "1 2\nx 1 2\n");
    CHECK(emb::io::load_word2vec<float>(path, emb::io::VectorsLoadOptions().dim(2)).weight.cols() ==
          2);
    const std::string msg = message_of<emb::io::FileError>(
        [&] { (void)emb::io::load_word2vec<float>(path, emb::io::VectorsLoadOptions().dim(3)); });
    CHECK(contains(msg, "header says dimension 2, the options require 3"));
  }
}

TEST_CASE("load_word2vec: the progress callback counts rows up to the header's count") {
  TempDir dir;
  std::string text = "250 1\n";
  for (int i = 0; i < 250; ++i) text += "w" + std::to_string(i) + " " + std::to_string(i) + "\n";
  const std::string path = dir.write("p.txt", text);
  std::vector<std::pair<Index, Index>> calls;
  const auto v = emb::io::load_word2vec<double>(
      path, emb::io::VectorsLoadOptions().progress(
                [&](Index done, Index total) { calls.emplace_back(done, total); }));
  CHECK(v.weight(249, 0) == 249.0);
  REQUIRE(calls.size() >= 2);
  CHECK(calls.back() == std::make_pair(Index{250}, Index{250}));
  for (std::size_t i = 1; i < calls.size(); ++i) CHECK(calls[i - 1].first < calls[i].first);
}

TEST_CASE("save_word2vec: the C tool's binary bytes, and text that reads back exactly") {
  TempDir dir;
  const Vocabulary vocab{"the", "优", "cat"};
  const Matrix<float> table = data_table().cast<float>();
  SUBCASE("binary is byte-identical to the C tool's flavour") {
    const std::string path = dir.file("out.bin");
    emb::io::save_word2vec<float>(path, vocab, table, true);
    CHECK(read_bytes(path) == read_bytes(data_dir + "/w2v_c_binary.bin"));
  }
  SUBCASE("text holds the shortest decimals") {
    const std::string path = dir.file("out.txt");
    emb::io::save_word2vec<float>(path, vocab, table, false);
    CHECK(read_bytes(path) ==
          "3 4\nthe 0.1 -2.5 3 0.001\n优 1.5 0.25 -0.125 7\ncat -0.3 2 1e-05 -4.75\n");
    const auto back = emb::io::load_word2vec<float>(path);
    CHECK(back.weight == table);
    CHECK(tokens_of(back.vocab) == tokens_of(vocab));
  }
  SUBCASE("double text round-trips bit for bit") {
    Matrix<double> m(3, 2);
    m << 1.0 / 3.0, -2e-300, 6.02214076e23, 0.1, -0.0, 123456789.123456789;
    const std::string path = dir.file("d.txt");
    emb::io::save_word2vec<double>(path, vocab, m, false);
    CHECK(emb::io::load_word2vec<double>(path).weight == m);
  }
  SUBCASE("a table whose rows do not match the vocabulary, or an unwritable token") {
    const std::string path = dir.file("bad.txt");
    std::string msg = message_of<std::invalid_argument>(
        [&] { emb::io::save_word2vec<float>(path, vocab, table.topRows(2), false); });
    CHECK(contains(msg, "(2, 4)"));
    CHECK(contains(msg, "expected (3, 4)"));
    msg = message_of<std::invalid_argument>([&] {
      emb::io::save_word2vec<float>(path, Vocabulary{"a", "new york", "c"}, table, true);
    });
    CHECK(contains(msg, "token 1 ('new york')"));
    CHECK_FALSE(fs::exists(path));
  }
}

namespace {

struct BadCase {
  std::string name;
  std::string bytes;
  std::vector<std::string> parts;
};

template <class Load>
void check_bad_cases(const std::vector<BadCase>& cases, const char* where, Load load) {
  TempDir dir;
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const std::string path = dir.write("bad", c.bytes);
    const std::string msg = message_of<emb::io::FileError>([&] { load(path); });
    CHECK(contains(msg, where));
    CHECK(contains(msg, "'" + path + "'"));
    for (const auto& part : c.parts) {
      CAPTURE(part);
      CHECK(contains(msg, part));
    }
  }
}

}  // namespace

TEST_CASE("load_word2vec: malformed text files name the line, the byte and what was expected") {
  check_bad_cases(
      {
          {"empty file", "", {"line 1 (byte 0)", "expected the header 'count dim'"}},
          {"header of one number", "3\n", {"line 1 (byte 0)", "found '3'"}},
          {"header not numbers", "a b\n", {"expected the header 'count dim'"}},
          {"negative count", "-1 4\n", {"expected the header 'count dim'", "'-1 4'"}},
          {"GloVe file", "the 0.1 0.2\n", {"may be GloVe"}},
          {"count the file cannot hold",
           "1000000000 300\na 1 2 3\n",
           {"line 1 (byte 0)", "promises 1000000000 rows of 300 numbers", "remaining 8 bytes"}},
          {"row too short",
           "2 3\na 1 2 3\nb 1 2\n",
           {"line 3 (byte 17)", "expected 3 numbers after the token, found 2"}},
          {"row too long", "2 3\na 1 2 3 4\nb 1 2 3\n", {"line 2 (byte 12)", "found more: '4'"}},
          {"not a number",
           "2 3\na 1 x 3\nb 1 2 3\n",
           {"line 2 (byte 8)", "expected number 2 of 3, found 'x'"}},
          {"number with junk", "1 3\na 1 2 1.5.2\n", {"byte 10", "found '1.5.2'"}},
          {"out of range for float",
           "1 2\na 1e40 2\n",
           {"byte 6", "'1e40' is out of range for float"}},
          {"fewer rows than the header says",
           "3 3\na 1.0 2.0 3.0\nb 4.0 5.0 6.0\n",
           {"byte 32", "header says 3 rows, but the file ends after 2"}},
          {"more rows than the header says",
           "1 3\na 1 2 3\nb 4 5 6\n",
           {"line 3 (byte 12)", "header says 1 rows, but another row follows"}},
          {"blank token", "1 2\n 1 2 3\n", {"line 2 (byte 4)", "expected a token"}},
      },
      "emb::io::load_word2vec",
      [](const std::string& p) { (void)emb::io::load_word2vec<float>(p); });
}

TEST_CASE("load_word2vec: malformed binary files name the byte and what was expected") {
  check_bad_cases(
      {
          {"truncated row",
           "2 3\na " + floats({1, 2, 3}) + "\nb " + floats({1, 2}),
           {"byte 21", "row 2 ('b'): file ends inside its 3 float32 values"}},
          {"fewer rows than the header says",
           "3 3\na " + floats({1, 2, 3}) + "\nb " + floats({4, 5, 6}) + "\n",
           {"byte 34", "header says 3 rows, but the file ends after 2"}},
          {"more rows than the header says",
           "1 3\na " + floats({1, 2, 3}) + "\nb " + floats({4, 5, 6}) + "\n",
           {"byte 19", "header says 1 rows of 3 float32 values, but more data follows"}},
          {"dimension smaller than the data",
           "2 2\na " + floats({1, 2, 3}) + "\nb " + floats({4, 5, 6}) + "\n",
           {"byte 14", "row 2: token", "contains a newline", "dimension 2"}},
          {"empty token", "1 1\n " + floats({1}), {"byte 4", "row 1: empty token"}},
          {"file ends inside a token",
           "2 1\na " + floats({1}) + "bcd",
           {"byte 10", "row 2: the file ends inside the token"}},
      },
      "emb::io::load_word2vec",
      [](const std::string& p) { (void)emb::io::load_word2vec<float>(p); });
}

TEST_CASE("load_glove: malformed files name the line, the byte and what was expected") {
  check_bad_cases(
      {
          {"no numbers",
           "hello world\n",
           {"line 1 (byte 0)", "expected a token followed by numbers"}},
          {"a word2vec file",
           "2 3\na 1 2 3\nb 4 5 6\n",
           {"line 1 (byte 0)", "looks like a word2vec header", "use load_word2vec"}},
          {"row too short",
           "a 1 2 3\nb 1.0 2.0\n",
           {"line 2 (byte 8)",
            "expected a token followed by 3 numbers, found the token 'b' followed by only 2 "
            "numbers"}},
          {"not a number",
           "a 1 2 3\nb 1 x 3\n",
           {"line 2 (byte 12)", "expected number 2 of 3, found 'x'"}},
          {"no token",
           "a 1 2\n10 20\n",
           {"line 2 (byte 6)", "expected a token before the 2 numbers"}},
          {"line too short for the dimension",
           "a 1 2 3\nb 1\n",
           {"line 2 (byte 8)", "the line has only 3 bytes"}},
          {"out of range",
           "a 1 2\nb 1 -1e39\n",
           {"line 2 (byte 10)", "'-1e39' is out of range for float"}},
      },
      "emb::io::load_glove", [](const std::string& p) { (void)emb::io::load_glove<float>(p); });
}

TEST_CASE("Loaders: an unreadable path throws a runtime_error naming it") {
  TempDir dir;
  const std::string missing = dir.file("nope.txt");
  std::string msg =
      message_of<std::runtime_error>([&] { (void)emb::io::load_word2vec<float>(missing); });
  CHECK(contains(msg, "'" + missing + "'"));
  CHECK(contains(msg, "no such file"));
  msg = message_of<std::runtime_error>([&] { (void)emb::io::load_glove<float>(dir.file("")); });
  CHECK(contains(msg, "directory"));
}

TEST_CASE("FileError carries the file, the line and the byte offset as fields") {
  TempDir dir;
  const std::string path = dir.write("short.txt", "2 3\na 1 2 3\nb 1 2\n");
  try {
    (void)emb::io::load_word2vec<float>(path);
    FAIL("did not throw");
  } catch (const emb::io::FileError& e) {
    CHECK(e.path() == path);
    CHECK(e.line() == 3);
    CHECK(e.offset() == 17);
  }
  const std::string bin = dir.write("short.bin", "1 2\na " + floats({1}));
  try {
    (void)emb::io::load_word2vec<float>(bin);
    FAIL("did not throw");
  } catch (const emb::io::FileError& e) {
    CHECK(e.line() == 0);  // binary data has no lines
    CHECK(e.offset() == 6);
  }
}
