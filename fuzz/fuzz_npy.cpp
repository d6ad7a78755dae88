// Fuzzes the .npy reader through the entry load_npy itself uses (a ByteSource): any input must
// load or throw emb::io::FileError, a loaded table must have the shape its header states, and a
// row range (load_npy_rows) must equal those rows of the whole table.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
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
  // A row range (the one a middle shard would read) must equal those rows of the whole array,
  // bit for bit, or be refused as Fortran order.
  const emb::Index begin = header.rows / 3, end = header.rows - header.rows / 4;
  emb::io::detail::MemorySource whole_source(data, size, "fuzz.npy");
  const auto whole = emb::io::detail::read_npy<float>(whole_source);
  emb::io::detail::MemorySource source(data, size, "fuzz.npy");
  const auto head = emb::io::detail::read_npy_header(source);
  emb::Matrix<float> part(end - begin, head.cols);
  try {
    emb::io::detail::read_npy_rows_into(source, head, begin, end, {}, part.data());
  } catch (const emb::io::FileError&) {
    if (!head.fortran_order) std::abort();
    return 0;
  }
  const emb::Matrix<float> expected = whole.middleRows(begin, end - begin);
  const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(part.size());
  if (bytes != 0 && std::memcmp(part.data(), expected.data(), bytes) != 0) std::abort();
  return 0;
}
