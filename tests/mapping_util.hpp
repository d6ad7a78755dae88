// What the tests of mapped tables share: the kernel's own record of this process's mappings
// (/proc/self/maps) and of its resident memory (/proc/self/statm), to see a mapping from
// outside; bit-exact comparison of tables of any storage type; the test data directory.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <emb/index_span.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace emb_test {

// A file of tests/data.
inline std::string data_file(const std::string& name) {
  return std::string(EMB_TEST_DATA_DIR) + "/" + name;
}

// Same shape and equal bit patterns, element by element (NaN payloads and signed zeros count):
// any two dense Eigen objects whose scalars have the same width.
template <class A, class B>
bool same_bits(const A& a, const B& b) {
  using S = typename A::Scalar;
  static_assert(sizeof(S) == sizeof(typename B::Scalar), "same width");
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (emb::Index i = 0; i < a.rows(); ++i) {
    for (emb::Index j = 0; j < a.cols(); ++j) {
      const S x = a(i, j);
      const auto y = b(i, j);
      if (std::memcmp(&x, &y, sizeof(S)) != 0) return false;
    }
  }
  return true;
}

// One line of /proc/self/maps: "start-end perms offset dev inode path".
struct MapsEntry {
  std::uintptr_t start = 0, end = 0;
  std::string perms;         // e.g. "r--s" (read-only, shared) or "rw-p" (private, writable)
  std::uint64_t offset = 0;  // file offset of `start`
  std::string path;
};

// The mapping that holds address p, if any.
inline std::optional<MapsEntry> mapping_containing(const void* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream in("/proc/self/maps");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string range, dev, inode;
    MapsEntry e;
    fields >> range >> e.perms >> std::hex >> e.offset >> dev >> inode;
    const auto dash = range.find('-');
    e.start = std::stoull(range.substr(0, dash), nullptr, 16);
    e.end = std::stoull(range.substr(dash + 1), nullptr, 16);
    std::getline(fields >> std::ws, e.path);
    if (e.start <= address && address < e.end) return e;
  }
  return std::nullopt;
}

// Checks that [p, p + bytes) lies in one mapping of the file `path` (by its canonical name), and
// that the mapping shows byte `file_offset` of the file at p: the data is read in place.
inline void require_maps_file_at(const void* p, std::size_t bytes, const std::string& path,
                                 std::uint64_t file_offset, bool shared_read_only) {
  const auto e = mapping_containing(p);
  REQUIRE(e.has_value());
  CHECK(e->path == std::filesystem::canonical(path).string());
  CHECK(e->offset + (reinterpret_cast<std::uintptr_t>(p) - e->start) == file_offset);
  CHECK(reinterpret_cast<std::uintptr_t>(p) + bytes <= e->end);
  CHECK(e->perms == (shared_read_only ? "r--s" : "rw-p"));
}

// Resident memory of this process, from the kernel (statm's second field, in pages).
inline std::size_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace emb_test
