// emb::io::MappedMatrix and map_npy: .npy tables read in place from the file's pages.
//
// Expected values come from NumPy's own files (tests/data, written by make_data.py and
// make_mapped_data.py) and from load_npy, which the npy test checks against NumPy. That the
// table is not copied is shown by the kernel's records, not assumed: /proc/self/maps must show
// the table's address inside a mapping of the file at the data's offset, and /proc/self/statm
// must barely grow when a 1 GiB file is mapped.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <emb/io/mapped.hpp>
#include <emb/io/npy.hpp>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mapping_util.hpp"
#include "test_util.hpp"

using emb::Index;
using emb::Matrix;
using emb::io::map_npy;
using emb::io::MapMode;
using emb::io::MappedMatrix;
namespace fs = std::filesystem;

using emb_test::contains;
using emb_test::data_file;
using emb_test::data_table;
using emb_test::message_of;
using emb_test::read_bytes;
using emb_test::same_bits;
using emb_test::TempDir;

namespace {

// A .npy file by hand: version 1.0, the header dict padded with spaces so that the data starts
// at byte `data_offset` (at least what the dict needs), then `bytes`.
std::string npy_bytes(const std::string& dict, const std::string& bytes, std::size_t data_offset) {
  std::string header = dict;
  REQUIRE(10 + header.size() + 1 <= data_offset);
  header.append(data_offset - 10 - header.size() - 1, ' ');
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + bytes;
}

template <class T>
std::string raw_bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

}  // namespace

TEST_CASE("map_npy: NumPy's C-order files map with exactly the values NumPy stored") {
  SUBCASE("float, versions 1.0 and 2.0, data aligned to 64 and to 16 bytes") {
    const Matrix<float> expected = data_table().cast<float>();
    for (const char* name : {"f4_c_v1.npy", "f4_c_v2.npy", "f4_c_align16.npy"}) {
      CAPTURE(name);
      const MappedMatrix<float> m = map_npy<float>(data_file(name));
      CHECK(m.rows() == 3);
      CHECK(m.cols() == 4);
      CHECK(m.mode() == MapMode::ReadOnly);
      CHECK(m.path() == data_file(name));
      CHECK(m.file_offset() == emb::io::read_npy_header(data_file(name)).data_offset);
      CHECK(same_bits(m.view(), expected));
      CHECK(same_bits(m.view(), emb::io::load_npy<float>(data_file(name))));
      CHECK(reinterpret_cast<std::uintptr_t>(m.data()) % alignof(float) == 0);
    }
  }
  SUBCASE("double") {
    const auto m = map_npy<double>(data_file("map_f8_c_v1.npy"));
    CHECK(same_bits(m.view(), data_table()));
  }
  SUBCASE("emb::half: the stored binary16 bits, NaN and subnormals included") {
    const auto m = map_npy<emb::half>(data_file("f2_c_v1.npy"));
    const Matrix<float> expected = emb::io::load_npy<float>(data_file("f2_c_v1.npy"));
    Matrix<float> widened = m.view().cast<float>();
    CHECK(same_bits(widened, expected));
    // Bit patterns worked out by hand: 65504 = 0x7bff, 2^-14 = 0x0400, 2^-24 = 0x0001.
    CHECK(m.view()(1, 0).x == 0x7bff);
    CHECK(m.view()(1, 1).x == 0x0400);
    CHECK(m.view()(1, 2).x == 0x0001);
    CHECK(m.view()(0, 1).x == 0x8000);
  }
}

TEST_CASE("map_npy: the table's address lies in a mapping of the file, at the data's offset") {
  const std::string path = data_file("f4_c_v1.npy");
  const std::uint64_t offset = emb::io::read_npy_header(path).data_offset;
  SUBCASE("ReadOnly: shared and read-only") {
    const auto m = map_npy<float>(path);
    emb_test::require_maps_file_at(m.data(), m.size_bytes(), path, offset, true);
  }
  SUBCASE("CopyOnWrite: private and writable") {
    auto m = map_npy<float>(path, MapMode::CopyOnWrite);
    emb_test::require_maps_file_at(m.data(), m.size_bytes(), path, offset, false);
    CHECK(m.mutable_data() == m.data());
  }
}

TEST_CASE("map_npy: mapping a 1 GiB file costs no resident memory, in either mode") {
  // A sparse file: a .npy header, then 1 GiB the file system never stores (no disk is used).
  TempDir dir("emb-mapped");
  const Index rows = Index{1} << 22, cols = 64;  // 4M x 64 floats = 1 GiB
  const std::string path = dir.write(
      "big.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                               std::to_string(rows) + ", " + std::to_string(cols) + "), }",
                           "", 128));
  const std::uint64_t bytes = static_cast<std::uint64_t>(rows * cols) * 4;
  fs::resize_file(path, 128 + bytes);

  for (const MapMode mode : {MapMode::ReadOnly, MapMode::CopyOnWrite}) {
    CAPTURE(static_cast<int>(mode));
    const std::size_t before = emb_test::resident_bytes();
    const auto m = map_npy<float>(path, mode);
    const std::size_t after = emb_test::resident_bytes();
    CHECK(m.rows() == rows);
    CHECK(m.size_bytes() == bytes);
    // The mapping spans the whole table; resident memory grew by well under 1% of it.
    emb_test::require_maps_file_at(m.data(), m.size_bytes(), path, 128, mode == MapMode::ReadOnly);
    CHECK(after < before + (std::size_t{4} << 20));
    // Reading a few rows far apart brings in only their pages.
    float sum = 0;
    for (Index r = 0; r < rows; r += rows / 8) sum += m.data()[r * cols];
    CHECK(sum == 0.0f);
    CHECK(emb_test::resident_bytes() < before + (std::size_t{8} << 20));
  }
}

TEST_CASE("MappedMatrix::warm: makes the whole table resident, reporting progress to the end") {
  TempDir dir("emb-mapped");
  const Index rows = 1 << 16, cols = 64;  // 16 MiB of floats with distinct values
  Matrix<float> table(rows, cols);
  for (Index i = 0; i < table.size(); ++i) table.data()[i] = static_cast<float>(i % 1000003);
  const std::string path = dir.file("warm.npy");
  emb::io::save_npy<float>(path, table);

  const auto m = map_npy<float>(path);
  CHECK(m.advise(emb::io::Advice::Random));
  CHECK(m.advise(emb::io::Advice::WillNeed));
  CHECK(m.advise(emb::io::Advice::Sequential));
  CHECK(m.advise(emb::io::Advice::Normal));
  const std::size_t before = emb_test::resident_bytes();
  std::vector<std::pair<Index, Index>> calls;
  m.warm([&](Index done, Index total) { calls.emplace_back(done, total); });
  const std::size_t after = emb_test::resident_bytes();
  CHECK(after >= before + m.size_bytes() - (std::size_t{1} << 20));
  REQUIRE(!calls.empty());
  CHECK(calls.back() == std::make_pair(rows, rows));
  for (std::size_t i = 1; i < calls.size(); ++i) {
    CHECK(calls[i].first >= calls[i - 1].first);
    CHECK(calls[i].second == rows);
  }
  CHECK(m.view() == table);  // warming changes nothing
  m.warm();                  // without a callback, and again: nothing to do, no error
}

TEST_CASE("map_npy: a ReadOnly table refuses writes and leaves the file's bytes unchanged") {
  TempDir dir("emb-mapped");
  const std::string path = dir.file("t.npy");
  fs::copy_file(data_file("f4_c_v1.npy"), path);
  const std::string original = read_bytes(path);
  {
    auto m = map_npy<float>(path);
    const std::string msg = message_of<std::logic_error>([&] { m.mutable_data(); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "ReadOnly"));
    CHECK(contains(msg, "CopyOnWrite"));
    CHECK_THROWS_AS(m.mutable_view(), std::logic_error);
    CHECK(same_bits(m.view(), data_table().cast<float>()));
  }
  CHECK(read_bytes(path) == original);
}

TEST_CASE(
    "map_npy: CopyOnWrite writes stay in this mapping; the file and other mappings keep theirs") {
  TempDir dir("emb-mapped");
  const std::string path = dir.file("t.npy");
  fs::copy_file(data_file("f4_c_v1.npy"), path);
  const std::string original = read_bytes(path);
  const Matrix<float> expected = data_table().cast<float>();
  {
    auto cow = map_npy<float>(path, MapMode::CopyOnWrite);
    const auto shared = map_npy<float>(path);
    auto other = map_npy<float>(path, MapMode::CopyOnWrite);
    cow.mutable_view().row(1).setConstant(42.0f);
    cow.mutable_data()[0] = -1.0f;
    CHECK(cow.view()(1, 3) == 42.0f);
    CHECK(cow.view()(0, 0) == -1.0f);
    CHECK(cow.view()(2, 1) == expected(2, 1));
    CHECK(same_bits(shared.view(), expected));
    CHECK(same_bits(other.view(), expected));
    CHECK(same_bits(emb::io::load_npy<float>(path), expected));
    emb_test::require_maps_file_at(cow.data(), cow.size_bytes(), path,
                                   emb::io::read_npy_header(path).data_offset, false);
  }
  CHECK(read_bytes(path) == original);
}

TEST_CASE("MappedMatrix: moves hand the mapping over; destruction unmaps it") {
  auto a = map_npy<float>(data_file("f4_c_v1.npy"));
  const float* p = a.data();
  MappedMatrix<float> b(std::move(a));
  CHECK(b.data() == p);
  CHECK(b.rows() == 3);
  CHECK(b.path() == data_file("f4_c_v1.npy"));
  CHECK(a.data() == nullptr);  // NOLINT(bugprone-use-after-move): the moved-from state is empty
  CHECK(a.rows() == 0);
  CHECK(a.empty());
  CHECK(a.path().empty());
  MappedMatrix<float> c;
  CHECK(c.empty());
  c = std::move(b);
  CHECK(c.data() == p);
  CHECK(same_bits(c.view(), data_table().cast<float>()));
  c = map_npy<float>(data_file("f4_c_v2.npy"));  // the old mapping goes, the new one stays
  CHECK(!emb_test::mapping_containing(p).has_value());
  CHECK(same_bits(c.view(), data_table().cast<float>()));
  const float* q = c.data();
  { MappedMatrix<float> gone(std::move(c)); }
  CHECK(!emb_test::mapping_containing(q).has_value());
  static_assert(!std::is_copy_constructible_v<MappedMatrix<float>>);
  static_assert(!std::is_copy_assignable_v<MappedMatrix<float>>);
  static_assert(std::is_nothrow_move_constructible_v<MappedMatrix<emb::bfloat16>>);
}

TEST_CASE(
    "map_npy: files that cannot be used in place are refused, naming what they hold and what to "
    "call") {
  const auto refusal = [](auto call) {
    const std::string msg = message_of<emb::io::FileError>(call);
    CHECK(contains(msg, "emb::io::map_npy"));
    CHECK(contains(msg, "load_npy"));
    return msg;
  };
  SUBCASE("dtype") {
    std::string msg = refusal([] { map_npy<double>(data_file("f4_c_v1.npy")); });
    CHECK(contains(msg, data_file("f4_c_v1.npy")));
    CHECK(contains(msg, "'<f4' (float32)"));
    CHECK(contains(msg, "map_npy<float>"));
    msg = refusal([] { map_npy<float>(data_file("f2_c_v1.npy")); });
    CHECK(contains(msg, "'<f2' (float16)"));
    CHECK(contains(msg, "map_npy<emb::half>"));
    msg = refusal([] { map_npy<float>(data_file("map_f8_c_v1.npy")); });
    CHECK(contains(msg, "'<f8' (float64)"));
    CHECK(contains(msg, "map_npy<double>"));
    msg = refusal([] { map_npy<emb::bfloat16>(data_file("f2_c_v1.npy")); });
    CHECK(contains(msg, "no bfloat16"));
    CHECK(contains(msg, "map_npy<emb::half>"));
  }
  SUBCASE("byte order") {
    const std::string msg = refusal([] { map_npy<double>(data_file("f8_big_endian.npy")); });
    CHECK(contains(msg, "'>f8' (float64, big-endian)"));
    CHECK(contains(msg, "little-endian"));
  }
  SUBCASE("Fortran order") {
    std::string msg = refusal([] { map_npy<double>(data_file("f8_fortran_v1.npy")); });
    CHECK(contains(msg, "Fortran"));
    CHECK(contains(msg, "shape (3, 4)"));
    CHECK(contains(msg, "np.ascontiguousarray"));
    msg = refusal([] { map_npy<float>(data_file("f4_fortran_v3.npy")); });
    CHECK(contains(msg, "Fortran"));
  }
  SUBCASE("data not aligned for S") {
    TempDir dir("emb-mapped");
    const std::string path = dir.write(
        "odd.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }",
                             raw_bytes(std::vector<float>{1.5f, -2.0f}), 78));
    CHECK(emb::io::load_npy<float>(path) == emb_test::mat<float>(1, 2, {1.5f, -2.0f}));
    const std::string msg = refusal([&] { map_npy<float>(path); });
    CHECK(contains(msg, "byte 78"));
    CHECK(contains(msg, "not a multiple of 4"));
    // The same file maps where 2-byte alignment is enough.
    const std::string path16 = dir.write(
        "odd16.npy", npy_bytes("{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2), }",
                               raw_bytes(std::vector<std::uint16_t>{0x3c00, 0xc000}), 78));
    const auto h = map_npy<emb::half>(path16);
    CHECK(static_cast<float>(h.view()(0, 0)) == 1.0f);
    CHECK(static_cast<float>(h.view()(0, 1)) == -2.0f);
  }
}

TEST_CASE("map_npy: a Fortran-order array of one row or one column is C order too, and maps") {
  TempDir dir("emb-mapped");
  const std::vector<float> values = {0.5f, 1.5f, -3.0f};
  for (const std::string shape : {"(1, 3)", "(3, 1)"}) {
    CAPTURE(shape);
    const std::string path = dir.write(
        "v.npy", npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': " + shape + ", }",
                           raw_bytes(values), 128));
    const auto m = map_npy<float>(path);
    CHECK(m.size() == 3);
    CHECK(m.view() == emb::io::load_npy<float>(path));
  }
}

TEST_CASE("map_npy: an empty table maps nothing and behaves as empty") {
  TempDir dir("emb-mapped");
  const std::string path =
      dir.write("empty.npy",
                npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", "", 128));
  auto m = map_npy<float>(path, MapMode::CopyOnWrite);
  CHECK(m.rows() == 0);
  CHECK(m.cols() == 4);
  CHECK(m.empty());
  CHECK(m.data() == nullptr);
  CHECK(m.view().size() == 0);
  CHECK(m.mutable_view().size() == 0);
  CHECK(!m.advise(emb::io::Advice::Random));
  int calls = 0;
  m.warm([&](Index, Index) { ++calls; });
  CHECK(calls == 0);
}

TEST_CASE("map_npy: malformed files and bad paths throw FileError naming the file and the fault") {
  TempDir dir("emb-mapped");
  const auto fails = [&](const std::string& path, const std::string& part) {
    const std::string msg = message_of<emb::io::FileError>([&] { map_npy<float>(path); });
    CHECK(contains(msg, "emb::io::map_npy"));
    CHECK(contains(msg, path));
    CHECK(contains(msg, part));
  };
  fails(dir.file("missing.npy"), "no such file");
  fails(dir.file(""), "directory");
  fails(dir.write("empty.npy", ""), "magic");
  fails(dir.write("text.npy", "hello world"), "magic");
  const std::string good = read_bytes(data_file("f4_c_v1.npy"));
  fails(dir.write("short.npy", good.substr(0, good.size() - 4)), "truncated");
  fails(dir.write("header.npy", good.substr(0, 40)), "truncated");
  fails(dir.write("three.npy",
                  npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }",
                            std::string(32, '\0'), 128)),
        "2-D");
#ifdef __linux__
  fails("/dev/zero", "not a regular file");
#endif
}
