// Fuzzes the .npy reader through the entry load_npy itself uses (a ByteSource): any input must
// load or throw emb::io::FileError, and a loaded table must have the shape its header states.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <emb/io/npy.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  emb::io::NpyHeader header;
  try {
    emb::io::detail::MemorySource source(data, size, "fuzz.npy");
    header = emb::io::detail::read_npy_header(source);
  } catch (const emb::io::FileError&) {
    return 0;
  }
  // The header is valid: the data must then load as float and as double, with that shape.
  for (int pass = 0; pass < 2; ++pass) {
    emb::io::detail::MemorySource source(data, size, "fuzz.npy");
    Eigen::Index rows = 0, cols = 0;
    if (pass == 0) {
      const auto m = emb::io::detail::read_npy<float>(source);
      rows = m.rows(), cols = m.cols();
    } else {
      const auto m = emb::io::detail::read_npy<double>(source);
      rows = m.rows(), cols = m.cols();
    }
    if (rows != header.rows || cols != header.cols) std::abort();
  }
  return 0;
}
