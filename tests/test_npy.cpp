// emb::io::load_npy / save_npy: NumPy's .npy format.
//
// The files in tests/data were written by NumPy itself (tests/data/make_data.py), so every
// expected value comes from NumPy, not from the code under test; the binary16 cases are checked
// against the bit patterns' values worked out by hand from IEEE 754.
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <emb/io/mapped.hpp>
#include <emb/io/npy.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using emb::Index;
using emb::Matrix;
namespace fs = std::filesystem;

using emb_test::message_of;
using emb_test::contains;
using emb_test::TempDir;
using emb_test::read_bytes;
using emb_test::data_table;

namespace {

const std::string data_dir = EMB_TEST_DATA_DIR;

// A .npy file by hand: version `major`, the given header dict (padded to 64) and data bytes.
std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  const std::size_t preamble = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((preamble + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (std::size_t i = 0; i < preamble - 8; ++i) {
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  return out + header + data;
}

std::string float_bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
  return out;
}

}  // namespace

TEST_CASE("load_npy: NumPy's files of every version, order and float type load exactly") {
  const Matrix<double> expected = data_table();
  SUBCASE("<f4, C order, version 1.0 (np.save)") {
    const Matrix<float> m = emb::io::load_npy<float>(data_dir + "/f4_c_v1.npy");
    CHECK(m == expected.cast<float>());
  }
  SUBCASE("<f4, C order, version 2.0") {
    CHECK(emb::io::load_npy<float>(data_dir + "/f4_c_v2.npy") == expected.cast<float>());
  }
  SUBCASE("<f4, Fortran order, version 3.0") {
    CHECK(emb::io::load_npy<float>(data_dir + "/f4_fortran_v3.npy") == expected.cast<float>());
  }
  SUBCASE("<f4 with the data aligned to 16 bytes, as older NumPy wrote it") {
    CHECK(emb::io::load_npy<float>(data_dir + "/f4_c_align16.npy") == expected.cast<float>());
  }
  SUBCASE("<f8, Fortran order, read as double and as float") {
    CHECK(emb::io::load_npy<double>(data_dir + "/f8_fortran_v1.npy") == expected);
    CHECK(emb::io::load_npy<float>(data_dir + "/f8_fortran_v1.npy") == expected.cast<float>());
  }
  SUBCASE(">f8 (big-endian)") {
    CHECK(emb::io::load_npy<double>(data_dir + "/f8_big_endian.npy") == expected);
  }
  SUBCASE("<f4 read as double widens exactly") {
    CHECK(emb::io::load_npy<double>(data_dir + "/f4_c_v1.npy") ==
          expected.cast<float>().cast<double>());
  }
  SUBCASE("the header alone") {
    const auto h = emb::io::read_npy_header(data_dir + "/f4_fortran_v3.npy");
    CHECK(h.major_version == 3);
    CHECK(h.item_size == 4);
    CHECK(h.fortran_order);
    CHECK(h.rows == 3);
    CHECK(h.cols == 4);
    CHECK(h.data_offset % 64 == 0);
  }
}

TEST_CASE("load_npy: <f2 (IEEE half) converts exactly, subnormals, infinities and NaN included") {
  for (const char* name : {"/f2_c_v1.npy", "/f2_fortran_v2.npy"}) {
    CAPTURE(name);
    const Matrix<float> m = emb::io::load_npy<float>(data_dir + name);
    REQUIRE(m.rows() == 3);
    REQUIRE(m.cols() == 4);
    CHECK(m(0, 0) == 0.0f);
    CHECK_FALSE(std::signbit(m(0, 0)));
    CHECK(m(0, 1) == 0.0f);
    CHECK(std::signbit(m(0, 1)));
    CHECK(m(0, 2) == 1.0f);
    CHECK(m(0, 3) == -2.0f);
    CHECK(m(1, 0) == 65504.0f);                         // largest finite half
    CHECK(m(1, 1) == std::ldexp(1.0f, -14));            // smallest normal
    CHECK(m(1, 2) == std::ldexp(1.0f, -24));            // smallest subnormal
    CHECK(m(1, 3) == 1023.0f * std::ldexp(1.0f, -24));  // largest subnormal
    CHECK(m(2, 0) == std::numeric_limits<float>::infinity());
    CHECK(m(2, 1) == -std::numeric_limits<float>::infinity());
    CHECK(std::isnan(m(2, 2)));
    CHECK(m(2, 3) == 1365.0f / 4096.0f);  // 1/3 rounded to 11 significant bits
  }
}

TEST_CASE("half_to_float: bit patterns worked out by hand") {
  using emb::io::detail::half_to_float;
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x3555) == 1365.0f / 4096.0f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(half_to_float(0x8001) == -std::ldexp(1.0f, -24));
  CHECK(half_to_float(0x03ff) == 1023.0f * std::ldexp(1.0f, -24));
  CHECK(half_to_float(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(half_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(half_to_float(0x7e00)));
  CHECK(std::isnan(half_to_float(0x7c01)));  // a signalling-NaN payload stays a NaN
  CHECK(std::signbit(half_to_float(0x8000)));
}

TEST_CASE("half_to_float: all 65536 bit patterns agree with the IEEE 754 formula") {
  int mismatches = 0;
  for (std::uint32_t bits = 0; bits < 65536; ++bits) {
    const bool negative = (bits >> 15) != 0;
    const int exponent = static_cast<int>((bits >> 10) & 31);
    const int mantissa = static_cast<int>(bits & 1023);
    const float f = emb::io::detail::half_to_float(static_cast<std::uint16_t>(bits));
    bool ok = std::signbit(f) == negative;
    if (exponent == 31) {
      ok = ok && (mantissa == 0 ? std::isinf(f) : std::isnan(f));
      // NaN payloads move to the top of float's mantissa, as NumPy's astype(float32) does.
      std::uint32_t fbits = 0;
      std::memcpy(&fbits, &f, 4);
      ok = ok && (fbits & 0x7fffffu) == static_cast<std::uint32_t>(mantissa) << 13;
    } else {
      const double magnitude = exponent == 0 ? std::ldexp(mantissa, -24)
                                             : std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
      ok = ok && static_cast<double>(f) == (negative ? -magnitude : magnitude);
    }
    if (!ok) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("save_npy: writes the same bytes as np.save, and loads back bit for bit") {
  TempDir dir;
  const Matrix<float> table = data_table().cast<float>();
  SUBCASE("float: byte-identical to NumPy's own file") {
    const std::string path = dir.file("t.npy");
    emb::io::save_npy<float>(path, table);
    CHECK(read_bytes(path) == read_bytes(data_dir + "/f4_c_v1.npy"));
    CHECK(emb::io::load_npy<float>(path) == table);
  }
  SUBCASE("double: '<f8', data at a multiple of 64 bytes") {
    const std::string path = dir.file("t8.npy");
    const Matrix<double> m = data_table();
    emb::io::save_npy<double>(path, m);
    const std::string bytes = read_bytes(path);
    CHECK(bytes.compare(0, 8, std::string("\x93NUMPY\x01\x00", 8)) == 0);
    CHECK(contains(bytes, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }"));
    const auto h = emb::io::read_npy_header(path);
    CHECK(h.data_offset % 64 == 0);
    CHECK(bytes.size() == h.data_offset + 3 * 4 * sizeof(double));
    CHECK(emb::io::load_npy<double>(path) == m);
  }
  SUBCASE("half: byte-identical to NumPy's own '<f2' file, NaN and infinities included") {
    const std::string path = dir.file("t2.npy");
    const auto numpy = emb::io::map_npy<emb::half>(data_dir + "/f2_c_v1.npy");
    emb::io::save_npy<emb::half>(path, numpy.view());
    CHECK(read_bytes(path) == read_bytes(data_dir + "/f2_c_v1.npy"));
  }
  SUBCASE("a block of a larger matrix (rows not contiguous) and an empty table") {
    const std::string path = dir.file("block.npy");
    emb::io::save_npy<float>(path, table.block(1, 1, 2, 2));
    const Matrix<float> back = emb::io::load_npy<float>(path);
    CHECK(back == table.block(1, 1, 2, 2));
    const std::string empty = dir.file("empty.npy");
    emb::io::save_npy<float>(empty, Matrix<float>(0, 5));
    const Matrix<float> e = emb::io::load_npy<float>(empty);
    CHECK(e.rows() == 0);
    CHECK(e.cols() == 5);
  }
  SUBCASE("a path in a missing directory throws and leaves nothing behind") {
    const std::string path = dir.file("missing/t.npy");
    const std::string msg =
        message_of<std::runtime_error>([&] { emb::io::save_npy<float>(path, table); });
    CHECK(contains(msg, "emb::io::save_npy"));
    CHECK(contains(msg, path));
    CHECK_FALSE(fs::exists(path));
  }
}

TEST_CASE("load_npy: the progress callback sees every row arrive, ending at (rows, rows)") {
  TempDir dir;
  const std::string path = dir.file("p.npy");
  Matrix<double> big = Matrix<double>::Constant(1000, 3, 0.5);
  emb::io::save_npy<double>(path, big);
  for (const bool as_float : {false, true}) {
    CAPTURE(as_float);
    std::vector<std::pair<Index, Index>> calls;
    const auto options = emb::io::NpyLoadOptions().progress(
        [&](Index done, Index total) { calls.emplace_back(done, total); });
    if (as_float) {
      CHECK(emb::io::load_npy<float>(path, options) == big.cast<float>());
    } else {
      CHECK(emb::io::load_npy<double>(path, options) == big);
    }
    REQUIRE_FALSE(calls.empty());
    CHECK(calls.back() == std::make_pair(Index{1000}, Index{1000}));
    for (std::size_t i = 1; i < calls.size(); ++i) CHECK(calls[i - 1].first < calls[i].first);
  }
}

TEST_CASE("load_npy: Fortran-order columns longer than one read are placed correctly") {
  // Columns of 140000 doubles (over 1 MiB each) cannot be read whole: they arrive in pieces.
  TempDir dir;
  const Index rows = 140000, cols = 3;
  std::string data;
  data.reserve(static_cast<std::size_t>(rows * cols) * sizeof(double));
  for (Index c = 0; c < cols; ++c) {
    for (Index r = 0; r < rows; ++r) {
      const double v = static_cast<double>(r) + 0.25 * static_cast<double>(c);
      data.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  const std::string path = dir.write(
      "f.npy", npy_bytes("{'descr': '<f8', 'fortran_order': True, 'shape': (140000, 3), }", data));
  const Matrix<double> m = emb::io::load_npy<double>(path);
  REQUIRE(m.rows() == rows);
  REQUIRE(m.cols() == cols);
  Index wrong = 0;
  for (Index r = 0; r < rows; ++r) {
    for (Index c = 0; c < cols; ++c) {
      if (m(r, c) != static_cast<double>(r) + 0.25 * static_cast<double>(c)) ++wrong;
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("load_npy: trailing bytes after the array are ignored (np.save can append arrays)") {
  TempDir dir;
  const std::string one = read_bytes(data_dir + "/f4_c_v1.npy");
  const std::string path = dir.write("two.npy", one + one);
  CHECK(emb::io::load_npy<float>(path) == data_table().cast<float>());
}

TEST_CASE("load_npy: every malformed file throws a runtime_error naming file, offset and fault") {
  TempDir dir;
  const std::string good_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }";
  const std::string two = float_bytes({1.0f, 2.0f});
  // A hand-made file must itself be right for the bad cases to mean anything.
  CHECK(emb::io::load_npy<float>(dir.write("good.npy", npy_bytes(good_dict, two))) ==
        Matrix<float>::Map(std::vector<float>{1.0f, 2.0f}.data(), 1, 2));

  struct Case {
    std::string name;
    std::string bytes;
    std::vector<std::string> parts;  // each must appear in the message
  };
  const std::vector<Case> cases = {
      {"empty file", "", {"byte 0", "magic string"}},
      {"wrong magic", "PK\x03\x04 this is a zip", {"byte 0", "magic string", "PK\\x03\\x04"}},
      {"version 4.0", std::string("\x93NUMPY\x04\x00", 8) + "xx", {"byte 6", "version 4.0"}},
      {"version 1.1", std::string("\x93NUMPY\x01\x01", 8) + "xx", {"byte 6", "version 1.1"}},
      {"file ends in the length field",
       std::string("\x93NUMPY\x02\x00\x10", 9),
       {"byte 8", "header length"}},
      {"header longer than the file",
       std::string("\x93NUMPY\x01\x00\xff\x00{'descr'", 18),
       {"byte 8", "255 bytes", "only 8"}},
      {"header not a dict", npy_bytes("['descr', '<f4']", two), {"byte 10", "expected '{'"}},
      {"unterminated dict",
       npy_bytes("{'descr': '<f4', 'fortran_order': False", two),
       {"expected ',' or '}'"}},
      {"unknown key",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), "
                 "'extra': 1, }",
                 two),
       {"unexpected key 'extra'"}},
      {"missing shape",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, }", two),
       {"no 'shape' key"}},
      {"duplicate key",
       npy_bytes("{'descr': '<f4', 'descr': '<f4', }", two),
       {"'descr' appears twice"}},
      {"fortran_order not a bool",
       npy_bytes("{'descr': '<f4', 'fortran_order': 'no', 'shape': (1, 2), }", two),
       {"expected True or False"}},
      {"object dtype",
       npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1, 2), }", two),
       {"byte 20", "object arrays", "'|O'"}},
      {"integer dtype",
       npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2), }", two),
       {"unsupported dtype '<i8'", "expected '<f2', '<f4' or '<f8'"}},
      {"structured dtype",
       npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1, 2), }", two),
       {"structured dtypes"}},
      {"3-D array",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1), }", two),
       {"expected a 2-D array", "(1, 2, 1)", "3 dimensions"}},
      {"1-D array",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", two),
       {"expected a 2-D array", "(2,)"}},
      {"negative dimension",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2), }", two),
       {"expected a non-negative integer"}},
      {"dimension past 63 bits",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 2), }",
                 two),
       {"too large"}},
      {"size that overflows 64 bits",
       npy_bytes("{'descr': '<f8', 'fortran_order': False, "
                 "'shape': (4611686018427387904, 4611686018427387904), }",
                 two),
       {"byte 128", "needs more data than the 8 bytes after the header"}},
      {"shape larger than the file",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000), }", two),
       {"byte 128", "shape (1000000, 1000)", "truncated"}},
      {"truncated data",
       npy_bytes(good_dict, two.substr(0, 6)),
       {"byte 128", "shape (1, 2)", "6 bytes after the header"}},
      {"text after the dict",
       npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), } x", two),
       {"unexpected 'x"}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const std::string path = dir.write("bad.npy", c.bytes);
    const std::string msg =
        message_of<emb::io::FileError>([&] { (void)emb::io::load_npy<float>(path); });
    CHECK(contains(msg, "emb::io::load_npy"));
    CHECK(contains(msg, path));
    for (const auto& part : c.parts) {
      CAPTURE(part);
      CHECK(contains(msg, part));
    }
  }
}

TEST_CASE("load_npy: an unreadable path throws a runtime_error naming it") {
  TempDir dir;
  const std::string missing = dir.file("nope.npy");
  std::string msg =
      message_of<std::runtime_error>([&] { (void)emb::io::load_npy<float>(missing); });
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "no such file"));
  msg = message_of<std::runtime_error>([&] { (void)emb::io::load_npy<float>(dir.file("")); });
  CHECK(contains(msg, "directory"));
}
