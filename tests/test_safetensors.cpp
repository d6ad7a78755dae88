// emb::io::SafeTensors and save_safetensors: the safetensors format.
//
// Expected values come from outside the code under test: tests/data/make_mapped_data.py lays
// files out byte by byte as the format's reference implementation (the Rust crate
// `safetensors`) writes them, with values PyTorch rounded to float16 / bfloat16 and their exact
// float32 widenings saved by NumPy; the malformed files are byte strings made here by hand, one
// per rule of the reference implementation, several copied from its own tests; and the bytes
// its writer produces for the simplest cases are its tests' expected bytes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <emb/io/npy.hpp>
#include <emb/io/safetensors.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mapping_util.hpp"
#include "test_util.hpp"

using emb::Index;
using emb::Matrix;
using emb::io::MapMode;
using emb::io::SafeTensors;
namespace fs = std::filesystem;

using emb_test::contains;
using emb_test::data_file;
using emb_test::data_table;
using emb_test::message_of;
using emb_test::read_bytes;
using emb_test::same_bits;
using emb_test::TempDir;

namespace {

// A safetensors file: the header length (8 bytes, little-endian), the header, the data.
std::string st_bytes(const std::string& header, const std::string& bytes = "") {
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + bytes;
}

std::uint64_t header_length_of(const std::string& file) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(file[static_cast<std::size_t>(i)]);
  return n;
}

std::uint32_t bits_of(float f) {
  std::uint32_t b = 0;
  std::memcpy(&b, &f, 4);
  return b;
}

// Opening `bytes` must throw a FileError naming the file and containing `part`.
void refused(const std::string& bytes, const std::string& part) {
  TempDir dir("emb-st");
  const std::string path = dir.write("bad.safetensors", bytes);
  const std::string msg = message_of<emb::io::FileError>([&] { SafeTensors::open(path); });
  CHECK(contains(msg, "emb::io::SafeTensors::open"));
  CHECK(contains(msg, path));
  CHECK(contains(msg, part));
}

SafeTensors opened(const TempDir& dir, const std::string& bytes) {
  return SafeTensors::open(dir.write("ok.safetensors", bytes));
}

}  // namespace

TEST_CASE(
    "SafeTensors: a file laid out as the reference writes it lists its tensors in file order") {
  const std::string path = data_file("st_reference.safetensors");
  const auto st = SafeTensors::open(path);
  CHECK(st.path() == path);
  // The reference writer's order: decreasing alignment (I64, F64, F32, BF16, F16), then name.
  CHECK(st.names() == std::vector<std::string>{"ids", "table.f64", "cube", "empty", "scalar",
                                               "table.f32", "table.bf16", "table.f16"});
  CHECK(st.size() == 8);
  CHECK(st.contains("cube"));
  CHECK(!st.contains("__metadata__"));
  CHECK(st.metadata() == std::map<std::string, std::string>{
                             {"format", "pt"}, {"source", "tests/data/make_mapped_data.py"}});
  // Byte ranges from the sizes: 3 x 8, 12 x 8, 12 x 4, 0, 4, 12 x 4, 12 x 2, 12 x 2.
  const std::uint64_t start = 8 + header_length_of(read_bytes(path));
  struct Expect {
    const char* name;
    const char* dtype;
    std::vector<std::uint64_t> shape;
    std::uint64_t begin, end;
  };
  const Expect expected[] = {{"ids", "I64", {3}, 0, 24},
                             {"table.f64", "F64", {3, 4}, 24, 120},
                             {"cube", "F32", {2, 2, 3}, 120, 168},
                             {"empty", "F32", {0, 4}, 168, 168},
                             {"scalar", "F32", {}, 168, 172},
                             {"table.f32", "F32", {3, 4}, 172, 220},
                             {"table.bf16", "BF16", {3, 4}, 220, 244},
                             {"table.f16", "F16", {3, 4}, 244, 268}};
  for (const auto& e : expected) {
    CAPTURE(e.name);
    const auto& info = st.info(e.name);
    CHECK(info.dtype == e.dtype);
    CHECK(info.shape == e.shape);
    CHECK(info.begin == e.begin);
    CHECK(info.end == e.end);
    CHECK(info.offset == start + e.begin);
    CHECK(info.size_bytes() == e.end - e.begin);
  }
  CHECK(st.info("cube").numel() == 12);
  CHECK(st.info("scalar").numel() == 1);
  CHECK(st.info("empty").numel() == 0);
}

TEST_CASE("SafeTensors::load: F64, F32, F16 and BF16 give PyTorch's values, bit for bit") {
  const auto st = SafeTensors::open(data_file("st_reference.safetensors"));
  const Matrix<float> f16 = emb::io::load_npy<float>(data_file("st_f16_as_f32.npy"));
  const Matrix<float> bf16 = emb::io::load_npy<float>(data_file("st_bf16_as_f32.npy"));
  const Matrix<float> f32 = emb::io::load_npy<float>(data_file("f4_c_v1.npy"));  // NumPy's float32
  CHECK(same_bits(st.load<float>("table.f16"), f16));
  CHECK(same_bits(st.load<float>("table.bf16"), bf16));
  CHECK(same_bits(st.load<double>("table.f16"), f16.cast<double>()));
  CHECK(same_bits(st.load<double>("table.bf16"), bf16.cast<double>()));
  CHECK(same_bits(st.load<float>("table.f32"), f32));
  CHECK(same_bits(st.load<double>("table.f32"), f32.cast<double>()));
  CHECK(same_bits(st.load<double>("table.f64"), data_table()));
  CHECK(same_bits(st.load<float>("table.f64"), f32));  // rounded to nearest, as NumPy does
  // The NaN keeps PyTorch's payload; the bfloat16 subnormal 2^-130 and the ties came through.
  CHECK(bits_of(st.load<float>("table.bf16")(2, 2)) == 0xffff0000u);
  CHECK(st.load<float>("table.bf16")(2, 3) == std::ldexp(1.0f, -130));
  CHECK(st.load<float>("table.bf16")(1, 0) == 1.0f);
  CHECK(st.load<float>("table.bf16")(1, 1) == 1.0f + std::ldexp(1.0f, -6));
}

TEST_CASE(
    "SafeTensors::load: the last dimension is the columns, the others are flattened into rows") {
  const auto st = SafeTensors::open(data_file("st_reference.safetensors"));
  const Matrix<float> cube = st.load<float>("cube");  // (2, 2, 3) -> (4, 3), values k / 4
  REQUIRE(cube.rows() == 4);
  REQUIRE(cube.cols() == 3);
  for (Index k = 0; k < 12; ++k) CHECK(cube.data()[k] == static_cast<float>(k) / 4);
  const Matrix<double> scalar = st.load<double>("scalar");
  CHECK(scalar.rows() == 1);
  CHECK(scalar.cols() == 1);
  CHECK(scalar(0, 0) == 2.5);
  const Matrix<float> empty = st.load<float>("empty");
  CHECK(empty.rows() == 0);
  CHECK(empty.cols() == 4);
  const auto m = st.map<float>("cube");
  CHECK(m.rows() == 4);
  CHECK(m.view() == cube);
}

TEST_CASE("SafeTensors::load / map: other dtypes and unknown names are refused by name") {
  const auto st = SafeTensors::open(data_file("st_reference.safetensors"));
  std::string msg = message_of<emb::io::FileError>([&] { st.load<float>("ids"); });
  CHECK(contains(msg, "\"ids\" holds I64 values"));
  CHECK(contains(msg, "F64, F32, F16 and BF16"));
  CHECK(contains(msg, data_file("st_reference.safetensors")));
  msg = message_of<emb::io::FileError>([&] { st.map<double>("ids"); });
  CHECK(contains(msg, "I64"));
  msg = message_of<std::out_of_range>([&] { st.info("embed_tokens"); });
  CHECK(contains(msg, "no tensor named \"embed_tokens\""));
  CHECK(contains(msg, "\"table.f32\""));
  CHECK_THROWS_AS(st.load<float>("nope"), std::out_of_range);
  CHECK_THROWS_AS(st.map<float>("nope"), std::out_of_range);
}

TEST_CASE(
    "SafeTensors::map: zero-copy views of F32, F64, F16 and BF16 tensors with the stored bits") {
  const std::string path = data_file("st_reference.safetensors");
  const auto st = SafeTensors::open(path);
  const Matrix<float> bf16 = emb::io::load_npy<float>(data_file("st_bf16_as_f32.npy"));
  const Matrix<float> f16 = emb::io::load_npy<float>(data_file("st_f16_as_f32.npy"));

  const auto b = st.map<emb::bfloat16>("table.bf16");
  REQUIRE(b.rows() == 3);
  REQUIRE(b.cols() == 4);
  for (Index i = 0; i < 3; ++i) {
    for (Index j = 0; j < 4; ++j) {
      CAPTURE(i);
      CAPTURE(j);
      // PyTorch's widening is exact: the bfloat16 bits are the top half of the float's.
      CHECK(b.view()(i, j).value == bits_of(bf16(i, j)) >> 16);
    }
  }
  CHECK(b.view()(0, 3).value == 0x3dcd);  // 0.1 to nearest bfloat16, worked out by hand
  emb_test::require_maps_file_at(b.data(), b.size_bytes(), path, st.info("table.bf16").offset,
                                 true);

  const auto h = st.map<emb::half>("table.f16");
  CHECK(same_bits(Matrix<float>(h.view().cast<float>()), f16));
  CHECK(h.view()(1, 0).x == 0x7bff);  // 65504
  CHECK(h.view()(2, 3).x == 0x3555);  // 1/3 to nearest half
  emb_test::require_maps_file_at(h.data(), h.size_bytes(), path, st.info("table.f16").offset, true);

  const auto f = st.map<float>("table.f32", MapMode::CopyOnWrite);
  CHECK(same_bits(f.view(), emb::io::load_npy<float>(data_file("f4_c_v1.npy"))));
  emb_test::require_maps_file_at(f.data(), f.size_bytes(), path, st.info("table.f32").offset,
                                 false);
  const auto d = st.map<double>("table.f64");
  CHECK(same_bits(d.view(), data_table()));
  CHECK(d.path() == path);
  CHECK(d.file_offset() == st.info("table.f64").offset);
}

TEST_CASE("SafeTensors::map: mapping a 1 GiB tensor costs no resident memory") {
  // A sparse file: the header, then 1 GiB of BF16 the file system never stores.
  TempDir dir("emb-st");
  const std::uint64_t rows = std::uint64_t{1} << 23, cols = 64, bytes = rows * cols * 2;
  std::string header = "{\"model.embed_tokens.weight\":{\"dtype\":\"BF16\",\"shape\":[" +
                       std::to_string(rows) + "," + std::to_string(cols) +
                       "],\"data_offsets\":[0," + std::to_string(bytes) + "]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string path = dir.write("big.safetensors", st_bytes(header));
  fs::resize_file(path, 8 + header.size() + bytes);
  const std::size_t before = emb_test::resident_bytes();
  const auto st = SafeTensors::open(path);
  const auto m = st.map<emb::bfloat16>("model.embed_tokens.weight");
  CHECK(emb_test::resident_bytes() < before + (std::size_t{4} << 20));
  CHECK(static_cast<std::uint64_t>(m.rows()) == rows);
  emb_test::require_maps_file_at(m.data(), m.size_bytes(), path, 8 + header.size(), true);
  CHECK(static_cast<float>(m.view()(static_cast<Index>(rows) - 1, 63)) == 0.0f);
}

TEST_CASE("SafeTensors: copies share the open file and outlive the original") {
  std::optional<SafeTensors> copy;
  {
    const auto st = SafeTensors::open(data_file("st_reference.safetensors"));
    copy = st;
  }
  CHECK(copy->size() == 8);
  CHECK(same_bits(copy->load<double>("table.f64"), data_table()));
}

TEST_CASE(
    "SafeTensors::map: a dtype other than S's, or data misaligned for S, is refused pointing to "
    "load") {
  const auto st = SafeTensors::open(data_file("st_reference.safetensors"));
  std::string msg = message_of<emb::io::FileError>([&] { st.map<float>("table.bf16"); });
  CHECK(contains(msg, "emb::io::SafeTensors::map"));
  CHECK(contains(msg, "holds BF16 values, but map<float> needs F32"));
  CHECK(contains(msg, "map<emb::bfloat16>"));
  CHECK(contains(msg, "load<float>"));
  msg = message_of<emb::io::FileError>([&] { st.map<emb::bfloat16>("table.f16"); });
  CHECK(contains(msg, "map<emb::half>"));

  // The data of this file starts 4 bytes off an 8-byte boundary (its header is 8k + 4 bytes).
  const auto odd = SafeTensors::open(data_file("st_unaligned.safetensors"));
  CHECK(odd.info("w64").offset % 8 == 4);
  msg = message_of<emb::io::FileError>([&] { odd.map<double>("w64"); });
  CHECK(contains(msg, "not a multiple of 8"));
  CHECK(contains(msg, "load<"));
  CHECK(same_bits(odd.load<double>("w64"), data_table()));
  const auto w32 = odd.map<float>("w32");  // 4-byte aligned: maps
  CHECK(same_bits(w32.view(), emb::io::load_npy<float>(data_file("f4_c_v1.npy"))));
}

TEST_CASE("SafeTensors::map: the mapping outlives the SafeTensors object and a replaced file") {
  TempDir dir("emb-st");
  const std::string path = dir.file("t.safetensors");
  const Matrix<float> original = data_table().cast<float>();
  emb::io::save_safetensors<float>(path, {{"w", original}});
  emb::io::MappedMatrix<float> m;
  {
    const auto st = SafeTensors::open(path);
    m = st.map<float>("w");
  }
  CHECK(m.view() == original);
  // Writing a new file at the path replaces it; the mapping keeps the old contents.
  const Matrix<float> other = Matrix<float>::Constant(2, 2, 7.0f);
  emb::io::save_safetensors<float>(path, {{"w", other}});
  CHECK(m.view() == original);
  CHECK(SafeTensors::open(path).load<float>("w") == other);
  fs::remove(path);
  CHECK(m.view() == original);
}

TEST_CASE(
    "SafeTensors: an open file keeps reading the file it checked, whatever the name points to "
    "later") {
  TempDir dir("emb-st");
  const std::string path = dir.file("t.safetensors");
  const Matrix<float> first = data_table().cast<float>();
  emb::io::save_safetensors<float>(path, {{"w", first}});
  const auto st = SafeTensors::open(path);
  emb::io::save_safetensors<float>(path, {{"w", Matrix<float>::Zero(1, 1)}});
  CHECK(st.load<float>("w") == first);
  CHECK(st.map<float>("w").view() == first);
}

TEST_CASE(
    "SafeTensors::map: ReadOnly refuses writes, CopyOnWrite writes to memory; the file never "
    "changes") {
  TempDir dir("emb-st");
  const std::string path = dir.file("t.safetensors");
  fs::copy_file(data_file("st_reference.safetensors"), path);
  const std::string original = read_bytes(path);
  const auto st = SafeTensors::open(path);
  {
    auto ro = st.map<emb::bfloat16>("table.bf16");
    const std::string msg = message_of<std::logic_error>([&] { ro.mutable_data(); });
    CHECK(contains(msg, path));
    auto cow = st.map<emb::bfloat16>("table.bf16", MapMode::CopyOnWrite);
    cow.mutable_view().setConstant(emb::bfloat16(3.0f));
    CHECK(static_cast<float>(cow.view()(2, 2)) == 3.0f);
    CHECK(ro.view()(0, 3).value == 0x3dcd);
    CHECK(st.load<float>("table.bf16")(0, 3) ==
          emb::io::load_npy<float>(data_file("st_bf16_as_f32.npy"))(0, 3));
  }
  CHECK(read_bytes(path) == original);
}

TEST_CASE("save_safetensors: the bytes the reference writer produces") {
  TempDir dir("emb-st");
  SUBCASE("no tensors: '{}' padded to 8 bytes (the reference's own test)") {
    const std::string path = dir.file("e.safetensors");
    emb::io::save_safetensors<float>(path, {});
    CHECK(read_bytes(path) == std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
    CHECK(SafeTensors::open(path).size() == 0);
  }
  SUBCASE("metadata only (the reference's own test)") {
    const std::string path = dir.file("m.safetensors");
    emb::io::save_safetensors<float>(path, {}, {{"framework", "pt"}});
    CHECK(read_bytes(path) ==
          std::string("\x28\0\0\0\0\0\0\0{\"__metadata__\":{\"framework\":\"pt\"}}     ", 48));
  }
  SUBCASE("two tables sorted by name, escaped metadata (make_mapped_data.py's layout)") {
    const std::string path = dir.file("w.safetensors");
    const Matrix<float> a = emb_test::mat<float>(1, 2, {1.0f, -2.0f});
    Matrix<float> b(2, 3);
    b << -2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f;
    emb::io::save_safetensors<float>(
        path, {{"b.weight", b}, {"a.bias", a}},
        {{"note", "caf\xc3\xa9 \"quoted\"\n\ttab \xe4\xbc\x98"}, {"format", "pt"}});
    CHECK(read_bytes(path) == read_bytes(data_file("st_written_f32.safetensors")));
  }
}

TEST_CASE("save_safetensors: every storage type round-trips, every tensor aligned for it") {
  TempDir dir("emb-st");
  const std::string path = dir.file("r.safetensors");
  const Matrix<double> t = data_table();
  // Sizes that are not multiples of 8 bytes, so that alignment would break if it were luck.
  const Matrix<double> small = emb_test::mat<double>(1, 3, {1.0, -0.5, 0.25});
  const auto round_trip = [&](auto tag, const char* dtype) {
    using S = decltype(tag);
    const Matrix<S> a = t.cast<float>().cast<S>(), s = small.cast<float>().cast<S>();
    emb::io::save_safetensors<S>(path, {{"z", a}, {"s", s}, {"a", s}}, {{"k", "v"}});
    const auto st = SafeTensors::open(path);
    CHECK(st.names() == std::vector<std::string>{"a", "s", "z"});
    CHECK(st.metadata().at("k") == "v");
    for (const auto& name : st.names()) {
      CAPTURE(name);
      CHECK(st.info(name).dtype == dtype);
      CHECK(st.info(name).offset % sizeof(S) == 0);
    }
    CHECK(st.info("z").shape == std::vector<std::uint64_t>{3, 4});
    CHECK(same_bits(st.map<S>("z").view(), a));
    CHECK(same_bits(st.map<S>("s").view(), s));
    CHECK(same_bits(st.load<double>("z"), a.template cast<double>()));
  };
  round_trip(float{}, "F32");
  round_trip(double{}, "F64");
  round_trip(emb::half{}, "F16");
  round_trip(emb::bfloat16{}, "BF16");
}

TEST_CASE("save_safetensors: a block of a larger table writes just its rows and columns") {
  TempDir dir("emb-st");
  const std::string path = dir.file("b.safetensors");
  const Matrix<double> t = data_table();
  emb::io::save_safetensors<double>(path, {{"block", t.block(1, 1, 2, 2)}});
  CHECK(SafeTensors::open(path).load<double>("block") == t.block(1, 1, 2, 2));
}

TEST_CASE("save_safetensors: bad names or metadata throw invalid_argument and write nothing") {
  TempDir dir("emb-st");
  const std::string path = dir.file("x.safetensors");
  const Matrix<float> a = Matrix<float>::Ones(1, 1);
  const auto bad = [&](auto call, const std::string& part) {
    const std::string msg = message_of<std::invalid_argument>(call);
    CHECK(contains(msg, "emb::io::save_safetensors"));
    CHECK(contains(msg, part));
    CHECK(!fs::exists(path));
    CHECK(!fs::exists(path + ".emb-partial"));
  };
  bad([&] { emb::io::save_safetensors<float>(path, {{"w", a}, {"w", a}}); }, "given twice");
  bad([&] { emb::io::save_safetensors<float>(path, {{"__metadata__", a}}); }, "__metadata__");
  bad([&] { emb::io::save_safetensors<float>(path, {{"\xff", a}}); }, "not valid UTF-8");
  bad(
      [&] {
        emb::io::save_safetensors<float>(path, {{"w", a}}, {{"k", "\xc0\x80"}});
      },
      "not valid UTF-8");
  bad(
      [&] {
        emb::io::save_safetensors<float>(path, {}, {{"\xed\xa0\x80", "v"}});
      },
      "not valid UTF-8");
  // The reference's limit on the header: 100,000,000 bytes.
  bad(
      [&] {
        emb::io::save_safetensors<float>(path, {}, {{"big", std::string(100'000'000, 'a')}});
      },
      "limit");
}

TEST_CASE("SafeTensors::open: files the reference implementation accepts") {
  TempDir dir("emb-st");
  const std::string i32x4(16, '\0');
  SUBCASE("its deserialization test, a header not padded to 8 bytes") {
    const auto st = opened(
        dir,
        st_bytes("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", i32x4));
    CHECK(st.info("test").dtype == "I32");
    CHECK(st.info("test").offset == 68);
  }
  SUBCASE("a scalar, shape []") {
    CHECK(opened(dir, st_bytes("{\"test\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                               std::string(4, '\0')))
              .info("test")
              .shape.empty());
  }
  SUBCASE("a tensor with no elements, at offset 0 with no bytes") {
    const auto st = opened(
        dir, st_bytes("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,0],\"data_offsets\":[0, 0]}}"));
    CHECK(st.info("test").shape == std::vector<std::uint64_t>{2, 0});
    CHECK(st.info("test").size_bytes() == 0);
    CHECK(st.info("test").offset == 68);
  }
  SUBCASE("whitespace before and after the object (its padding tests)") {
    CHECK(opened(dir, st_bytes(std::string("{}\x0d\x20\x09\x0a"))).size() == 0);
    CHECK(opened(dir, st_bytes(std::string("\x09\x0a{}\x0d\x20"))).size() == 0);
  }
  SUBCASE("fields it does not know are ignored, however nested") {
    const auto st = opened(dir, st_bytes("{\"t\":{\"note\":[{\"a\":[1,2.5,null,true]},\"x\"],"
                                         "\"dtype\":\"U8\",\"x\":{},\"shape\":[2],\"y\":null,"
                                         "\"data_offsets\":[0,2]}}",
                                         "ab"));
    CHECK(st.info("t").dtype == "U8");
    CHECK(st.info("t").shape == std::vector<std::uint64_t>{2});
  }
  SUBCASE("__metadata__ null is no metadata; empty names and escapes are names") {
    const auto st =
        opened(dir, st_bytes("{\"__metadata__\":null,\"\":{\"dtype\":\"U8\",\"shape\":[1],"
                             "\"data_offsets\":[0,1]},\"a\\u0000\\\"b\\u4f18\":{\"dtype\":"
                             "\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                             "xy"));
    CHECK(st.metadata().empty());
    CHECK(st.names() == std::vector<std::string>{"", std::string("a\0\"b\xe4\xbc\x98", 7)});
  }
  SUBCASE("tensors listed in any order in the header; offsets decide the file order") {
    const auto st =
        opened(dir, st_bytes("{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]},"
                             "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                             "xyz"));
    CHECK(st.names() == std::vector<std::string>{"a", "b"});
  }
  SUBCASE("every dtype of the format") {
    const std::pair<const char*, int> dtypes[] = {
        {"BOOL", 8},        {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
        {"I8", 8},          {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8},
        {"F8_E5M2FNUZ", 8}, {"I16", 16},    {"U16", 16},    {"F16", 16},    {"BF16", 16},
        {"I32", 32},        {"U32", 32},    {"F32", 32},    {"C64", 64},    {"F64", 64},
        {"I64", 64},        {"U64", 64}};
    for (const auto& entry : dtypes) {
      const char* dtype = entry.first;  // not a structured binding: a lambda below captures it
      const int bits = entry.second;
      CAPTURE(dtype);
      // Four elements: a whole number of bytes for every width (4 x 6 bits = 3 bytes).
      const std::size_t bytes = static_cast<std::size_t>(4 * bits / 8);
      const auto st = opened(
          dir, st_bytes(std::string("{\"t\":{\"dtype\":\"") + dtype +
                            "\",\"shape\":[4],\"data_offsets\":[0," + std::to_string(bytes) + "]}}",
                        std::string(bytes, '\0')));
      CHECK(st.info("t").dtype == dtype);
      const bool float_type = std::string(dtype) == "F64" || std::string(dtype) == "F32" ||
                              std::string(dtype) == "F16" || std::string(dtype) == "BF16";
      if (float_type) {
        CHECK(st.load<float>("t") == Matrix<float>::Zero(1, 4));
      } else {
        CHECK(contains(message_of<emb::io::FileError>([&] { st.load<float>("t"); }),
                       std::string("holds ") + dtype + " values"));
      }
    }
  }
}

TEST_CASE(
    "SafeTensors::open: every malformed file named by the reference's rules throws, naming the "
    "fault") {
  const std::string i32x4(16, '\0');
  const std::string test_i32 =
      "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
  SUBCASE("under 8 bytes: empty, 7 bytes") {
    refused("", "the file has 0 bytes");
    refused("\x01\x02\x03\x04\x05\x06\x07", "the file has 7 bytes");
  }
  SUBCASE("header length over 100,000,000: 2^40, the reference's test, 100,000,001") {
    refused(std::string("\0\0\0\0\0\x01\0\0{}", 10), "more than the format's limit of 100000000");
    refused(std::string("<\0\0\0\0\xff\xff\xff", 8) + test_i32 + i32x4, "limit");
    refused(std::string("\x01\xe1\xf5\x05\0\0\0\0{}", 10), "limit");
  }
  SUBCASE("header length past the end of the file") {
    refused(std::string("<\0\0\0\0\0\0\0", 8), "says 60 bytes, but only 0 bytes follow");
    refused(std::string("\0\xe1\xf5\x05\0\0\0\0{}", 10), "says 100000000 bytes, but only 2");
  }
  SUBCASE("a header that is not UTF-8") {
    refused(std::string("\x01\0\0\0\0\0\0\0\xff", 9), "not valid UTF-8 (byte 0xff)");
    refused(st_bytes("{\"\xc0\xaf\":1}"), "not valid UTF-8");          // overlong '/'
    refused(st_bytes("{\"\xed\xa0\x80\":1}"), "not valid UTF-8");      // a surrogate
    refused(st_bytes("{\"\xf4\x90\x80\x80\":1}"), "not valid UTF-8");  // above U+10FFFF
    refused(st_bytes("{\"\xe4\xbc\":1}"), "not valid UTF-8");          // cut short
  }
  SUBCASE("a header that is not JSON, or not an object") {
    refused(std::string("\x01\0\0\0\0\0\0\0{", 9), "not valid JSON");
    refused(st_bytes(test_i32.substr(0, 40)), "not valid JSON");  // truncated
    refused(st_bytes("{} x"), "not valid JSON");
    refused(st_bytes(std::string("{}\0\0\0\0\0\0", 8)),
            "not valid JSON");  // NUL padding is not whitespace
    refused(st_bytes(""), "not valid JSON");
    refused(st_bytes("{\"__metadata__\":{\"k\":\"v\",}}"), "not valid JSON");
    refused(st_bytes(std::string("{\"__metadata__\":{\"k\":\"\0\"}}", 26)), "NUL byte");
    refused(st_bytes("\xef\xbb\xbf{}"), "byte-order mark");
    refused(st_bytes("[]"), "the header is an array, not a JSON object");
    refused(st_bytes("12"), "not a JSON object");
  }
  SUBCASE("a name twice") {
    refused(st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                     "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                     "xy"),
            "the name \"a\" appears twice");
    refused(st_bytes("{\"__metadata__\":{},\"__metadata__\":{}}"), "appears twice");
    refused(st_bytes("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"), "the key \"k\" twice");
    refused(
        st_bytes("{\"t\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                 "x"),
        "has the field 'dtype' twice");
  }
  SUBCASE("__metadata__ that is not a map of strings") {
    refused(st_bytes("{\"__metadata__\":{\"k\":1}}"), "__metadata__ maps \"k\" to a number (1)");
    refused(st_bytes("{\"__metadata__\":{\"k\":[\"v\"]}}"), "values must be strings");
    refused(st_bytes("{\"__metadata__\":[]}"), "__metadata__ is an array");
    refused(st_bytes("{\"__metadata__\":\"x\"}"), "__metadata__ is a string");
  }
  SUBCASE("tensor entries without dtype, shape or data_offsets, or of the wrong kinds") {
    refused(st_bytes("{\"t\":[1]}"), "the entry of tensor \"t\" is an array");
    refused(st_bytes("{\"t\":{\"shape\":[1],\"data_offsets\":[0,1]}}", "x"), "has no 'dtype'");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", "x"), "has no 'shape'");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[1]}}", "x"), "has no 'data_offsets'");
    refused(st_bytes("{\"t\":{\"dtype\":8,\"shape\":[1],\"data_offsets\":[0,1]}}", "x"),
            "dtype is a number (8)");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]}}", "x"),
            "shape is a number");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", "x"),
            "shape holds a negative number (-1)");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", "x"),
            "shape holds a number that is not a non-negative integer (1.0)");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[\"1\"],\"data_offsets\":[0,1]}}", "x"),
            "shape holds a string");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[[1]],\"data_offsets\":[0,1]}}", "x"),
            "shape holds an array");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1]}}", "x"),
            "data_offsets has 1 entries");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", "x"),
            "more than two entries");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{}}}", "x"),
            "data_offsets is an object");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,-1]}}", "x"),
            "data_offsets holds a negative number");
    refused(
        st_bytes(
            "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}",
            "x"),
        "data_offsets holds a number that is not a non-negative integer");
  }
  SUBCASE("an unknown dtype") {
    refused(st_bytes("{\"t\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", "xxxx"),
            "tensor \"t\" has unknown dtype \"F33\"; the format's dtypes are BOOL, F4,");
    refused(st_bytes("{\"t\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "xxxx"),
            "unknown dtype \"f32\"");
  }
  SUBCASE(
      "offsets that overlap (the reference's JSON-attack test), leave a gap, or end before they "
      "begin") {
    std::string ten = "{";
    for (int i = 0; i < 10; ++i) {
      ten += (i ? ",\"weight_" : "\"weight_") + std::to_string(i) +
             "\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}";
    }
    refused(st_bytes(ten + "}", i32x4),
            "overlap the bytes of tensor \"weight_0\", which end at 16");
    refused(st_bytes("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", "xy"),
            "leave a gap: bytes [0, 1) of the data belong to no tensor");
    refused(st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}",
                     "xyz"),
            "gap");
    refused(st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                     "xy"),
            "overlap");
    refused(st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,1]}}",
                     "x"),
            "data_offsets [2, 1] end before they begin");
  }
  SUBCASE("a byte length that is not the shape's (the reference's invalid-info test)") {
    refused(st_bytes("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0, 4]}}"),
            "shape [2, 2] of I32 needs 16 bytes, but data_offsets [0, 4] hold 4");
  }
  SUBCASE("a shape whose size overflows 64 bits (the reference's overflow tests)") {
    refused(std::string("O\0\0\0\0\0\0\0", 8) +
                "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,18446744073709551614],\"data_offsets\":["
                "0,16]}}" +
                i32x4,
            "more elements than 64 bits can count");
    refused(std::string("N\0\0\0\0\0\0\0", 8) +
                "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,9223372036854775807],\"data_offsets\":["
                "0,16]}}" +
                i32x4,
            "more bits than 64 bits can count");
  }
  SUBCASE("sub-byte values that are not a whole number of bytes") {
    refused(st_bytes("{\"t\":{\"dtype\":\"F4\",\"shape\":[1,3],\"data_offsets\":[0,2]}}", "xy"),
            "(4-bit values) is not a whole number of bytes");
    TempDir dir("emb-st");  // ... while [1, 2] is one byte
    CHECK(opened(dir,
                 st_bytes("{\"t\":{\"dtype\":\"F4\",\"shape\":[1,2],\"data_offsets\":[0,1]}}", "x"))
              .size() == 1);
  }
  SUBCASE(
      "bytes left over after the last tensor, or missing (the reference's incomplete-buffer "
      "tests)") {
    refused(st_bytes(test_i32, i32x4 + "extra_bogus_data_for_polyglot_file"),
            "34 more bytes that belong to no tensor");
    refused(st_bytes(test_i32, i32x4.substr(0, 14)),
            "the tensors need 16 bytes after the header, but the file has only 14");
    refused(st_bytes("{}", "x"), "1 more bytes");
  }
  SUBCASE("nesting deeper than 128 levels") {
    const auto nested = [](int depth) {
      return "{\"t\":{\"x\":" + std::string(static_cast<std::size_t>(depth), '[') +
             std::string(static_cast<std::size_t>(depth), ']') +
             ",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    };
    refused(st_bytes(nested(100000), "x"), "nests deeper than 128 levels");
    TempDir dir("emb-st");
    CHECK(opened(dir, st_bytes(nested(100), "x")).size() == 1);
  }
}

TEST_CASE("SafeTensors::open: a path that is not a readable file throws FileError naming it") {
  TempDir dir("emb-st");
  for (const std::string& path : {dir.file("missing.safetensors"), dir.file("")}) {
    const std::string msg = message_of<emb::io::FileError>([&] { SafeTensors::open(path); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "cannot open"));
  }
}
