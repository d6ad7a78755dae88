// emb/io/packed.hpp — a quantized table's packed bytes in a file, as NumPy's tofile / fromfile
// write and read them: row after row, nothing else. How prepacked tables move between PyTorch
// and emb:
//
//   Python:  torch.ops.quantized.embedding_bag_4bit_prepack(w).numpy().tofile("t.q4")
//   C++:     auto table = emb::io::load_packed("t.q4", /*embedding_dim=*/64, emb::QuantBits::Int4);
//   C++:     emb::io::save_packed("t.q4", table);
//   Python:  torch.from_numpy(np.fromfile("t.q4", dtype=np.uint8).reshape(rows, -1))
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../detail/error.hpp"
#include "../quantized.hpp"
#include "detail/file.hpp"
#include "file_error.hpp"

namespace emb::io {

// The table whose rows of `embedding_dim` values at `bits` a file holds; its number of rows is
// the file's size over QuantizedTable::row_bytes(embedding_dim, bits). The bytes are read once,
// straight into the table. emb::io::FileError naming the file when it cannot be read or its
// size is not a whole number of rows; std::invalid_argument for a negative dim or bad bits.
inline QuantizedTable load_packed(const std::string& path, Index embedding_dim, QuantBits bits) {
  static constexpr const char* where = "emb::io::load_packed";
  const std::size_t row_bytes = QuantizedTable::row_bytes(embedding_dim, bits);
  detail::FileSource source(path, where);
  const std::uint64_t size = source.size();
  if (size % row_bytes != 0) {
    throw FileError(where, path, 0, FileError::no_offset,
                    emb::detail::concat("its ", size, " bytes are not a whole number of ",
                                        to_string(bits), " rows of dim ", embedding_dim, " (",
                                        row_bytes, " bytes each)"));
  }
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  if (source.read(bytes.data(), bytes.size()) != bytes.size()) {
    throw FileError(where, path, 0, FileError::no_offset, "the file shrank while it was read");
  }
  return QuantizedTable::from_packed(std::move(bytes), static_cast<Index>(size / row_bytes),
                                     embedding_dim, bits);
}

// Writes the table's bytes (QuantizedTable::data(), size_bytes() of them) to `path`, which
// appears only once completely written.
inline void save_packed(const std::string& path, const QuantizedTable& table) {
  detail::AtomicWriter out(path, "emb::io::save_packed");
  out.write(table.data(), table.size_bytes());
  out.commit();
}

}  // namespace emb::io
