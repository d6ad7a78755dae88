// Fuzzes the safetensors reader through the entry SafeTensors::open uses (the header length,
// then the header, checked against the file's size): any input must be accepted or throw
// emb::io::FileError. An accepted file must describe tensors that tile its data exactly, every
// F64/F32/F16/BF16 tensor must convert to float and to double with the same values, and a
// header emb writes for the same tables must be accepted in turn.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <emb/io/safetensors.hpp>
#include <string>
#include <tuple>
#include <vector>

namespace {

constexpr const char* kName = "fuzz.safetensors";
constexpr const char* kWhere = "fuzz";

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  emb::io::detail::SafetensorsLayout layout;
  try {
    layout = emb::io::detail::parse_safetensors(data, size, kName, kWhere);
  } catch (const emb::io::FileError&) {
    return 0;
  }
  check(layout.data_start == 8 + layout.header_size && layout.data_start <= size);
  check(layout.index.size() == layout.tensors.size());
  std::uint64_t at = layout.data_start;
  std::vector<std::tuple<std::string, emb::Index, emb::Index>> floats;
  for (std::size_t i = 0; i < layout.tensors.size(); ++i) {
    const auto& [name, info] = layout.tensors[i];
    check(layout.index.at(name) == i);
    check(info.offset == at && info.end >= info.begin && info.offset + info.size_bytes() <= size);
    at += info.size_bytes();
    const auto* dtype = emb::io::detail::find_safetensors_dtype(info.dtype);
    check(dtype != nullptr && info.numel() * dtype->bits == info.size_bytes() * 8);
    if (!emb::io::detail::safetensors_convertible(info.dtype)) continue;
    emb::Index rows = 0, cols = 0;
    try {
      std::tie(rows, cols) = emb::io::detail::safetensors_matrix_shape(info, name, kName, kWhere);
    } catch (const emb::io::FileError&) {
      check(info.numel() == 0);  // only an empty tensor can have a side too long for a matrix
      continue;
    }
    check(static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols) == info.numel());
    const auto count = static_cast<std::size_t>(info.numel());
    std::vector<float> f(count);
    std::vector<double> d(count);
    emb::io::detail::convert_safetensors_values(info.dtype, data + info.offset, count, f.data());
    emb::io::detail::convert_safetensors_values(info.dtype, data + info.offset, count, d.data());
    for (std::size_t k = 0; k < count; ++k) {
      // Narrower dtypes widen exactly, so float and double agree; F64 to float rounds once.
      const float expected = static_cast<float>(d[k]);
      check(std::memcmp(&expected, &f[k], sizeof(float)) == 0 ||
            (expected != expected && f[k] != f[k]));
    }
    floats.emplace_back(name, rows, cols);
  }
  check(at == size);

  // emb's writer: a header for these tables (sorted by name, as save_safetensors sorts them),
  // followed by zero bytes, must pass the same checks.
  std::sort(floats.begin(), floats.end());
  floats.erase(
      std::unique(floats.begin(), floats.end(),
                  [](const auto& a, const auto& b) { return std::get<0>(a) == std::get<0>(b); }),
      floats.end());
  const std::string header = emb::io::detail::safetensors_header(floats, "F32", 4, layout.metadata);
  std::uint64_t bytes = 0;
  for (const auto& t : floats) {
    bytes +=
        static_cast<std::uint64_t>(std::get<1>(t)) * static_cast<std::uint64_t>(std::get<2>(t)) * 4;
  }
  if (header.size() > emb::io::detail::safetensors_max_header || bytes > (std::uint64_t{1} << 24)) {
    return 0;
  }
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i)
    file[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  file += header;
  file.append(static_cast<std::size_t>(bytes), '\0');
  const auto again = emb::io::detail::parse_safetensors(
      reinterpret_cast<const unsigned char*>(file.data()), file.size(), kName, kWhere);
  check(again.tensors.size() == floats.size() && again.metadata == layout.metadata);
  for (const auto& t : again.tensors) check(t.second.offset % 4 == 0);
  return 0;
}
