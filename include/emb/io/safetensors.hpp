// emb/io/safetensors.hpp — needs nlohmann/json (Debian: nlohmann-json3-dev); CMake target
// emb::safetensors. Not included by emb/emb.hpp: include it yourself.
//
// safetensors files, the format Hugging Face models ship in (model.safetensors): list their
// tensors, load one converted to float or double, map one zero-copy, and write tables.
//
//   auto st = emb::io::SafeTensors::open("model.safetensors");
//   for (const auto& name : st.names()) std::cout << name << " " << st.info(name).dtype << "\n";
//   emb::Matrix<float> w = st.load<float>("model.embed_tokens.weight");       // BF16 -> float
//   auto table = st.map<emb::bfloat16>("model.embed_tokens.weight");          // no copy
//   emb::io::save_safetensors<float>("out.safetensors", {{"weight", w}}, {{"format", "pt"}});
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../detail/error.hpp"
#include "../index_span.hpp"
#include "detail/file.hpp"
#include "detail/mmap.hpp"
#include "detail/parse.hpp"
#include "detail/safetensors_format.hpp"
#include "file_error.hpp"
#include "mapped.hpp"

namespace emb::io {

// An open safetensors file: its header read and checked once (see
// detail/safetensors_format.hpp for the rules, those of the format's reference
// implementation), the file kept open so that later load() and map() calls read the same file
// even if its name is replaced meanwhile. Copies share the open file. const calls are
// thread-safe.
//
// A mapped tensor reads the file's pages: the file must not be shortened while a mapping of it
// lives (replacing it, as save_safetensors does, is safe: the old file lives on until unmapped).
class SafeTensors {
 public:
  // Opens and checks `path`; a malformed file throws emb::io::FileError (a std::runtime_error)
  // naming the file, the byte offset and the fault.
  static SafeTensors open(const std::string& path) {
    static constexpr const char* where = "emb::io::SafeTensors::open";
    auto state = std::make_shared<State>();
    state->path = path;
    detail::OpenedFile file = detail::open_for_mapping(path, where);
    state->file_size = file.size;
    detail::DescriptorSource source(file.handle.get(), file.size, path, where);
    unsigned char first[8] = {};
    const std::size_t got = source.read(first, 8);
    if (got < 8 && got != file.size) {
      throw FileError(where, path, 0, got, "cannot read the header length");
    }
    const std::uint64_t n = detail::safetensors_header_length(first, file.size, path, where);
    std::string header(static_cast<std::size_t>(n), '\0');
    if (source.read(header.data(), header.size()) != header.size()) {
      throw FileError(where, path, 0, 8, "file ends inside the header (truncated meanwhile?)");
    }
    state->layout = detail::parse_safetensors_header(header, file.size, path, where);
    state->handle = std::move(file.handle);
    return SafeTensors(std::move(state));
  }

  const std::string& path() const noexcept { return state_->path; }

  // Names of the tensors in the order of their bytes in the file (for files the reference
  // writer made, the order of the header too). __metadata__ is not a tensor.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(state_->layout.tensors.size());
    for (const auto& t : state_->layout.tensors) out.push_back(t.first);
    return out;
  }
  std::size_t size() const noexcept { return state_->layout.tensors.size(); }
  bool contains(const std::string& name) const { return state_->layout.index.count(name) != 0; }

  // dtype, shape and byte range of a tensor; an unknown name throws std::out_of_range.
  const TensorInfo& info(const std::string& name) const {
    return state_->layout.tensors[position(name, "emb::io::SafeTensors::info")].second;
  }

  // The "__metadata__" string map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const noexcept {
    return state_->layout.metadata;
  }

  // A copy of a tensor as a (rows, cols) matrix of T (float or double), converted from F64,
  // F32, F16 or BF16 (exactly, but for F64 -> float, rounded to nearest). The last dimension is
  // the columns and the others are flattened into rows: a scalar is 1 x 1, a vector 1 x n,
  // (a, b, c) is (a*b) x c. Other dtypes throw FileError naming the dtype; an unknown name
  // std::out_of_range. Any alignment is fine.
  template <class T = float>
  Matrix<T> load(const std::string& name) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "SafeTensors::load<T>: T is float or double; map<S> gives a 16-bit tensor as "
                  "it is stored");
    static constexpr const char* where = "emb::io::SafeTensors::load";
    const auto& entry = state_->layout.tensors[position(name, where)];
    const std::string& tensor = entry.first;
    const TensorInfo& info = entry.second;
    const std::string& path = state_->path;
    if (!detail::safetensors_convertible(info.dtype)) {
      throw FileError(where, path, 0, info.offset,
                      "tensor " + detail::quoted_name(tensor) + " holds " + info.dtype +
                          " values; load reads F64, F32, F16 and BF16 tensors");
    }
    const auto [rows, cols] = detail::safetensors_matrix_shape(info, tensor, path, where);
    Matrix<T> m(rows, cols);
    const auto count = static_cast<std::size_t>(m.size());
    const std::size_t item = detail::find_safetensors_dtype(info.dtype)->bits / 8;
    detail::DescriptorSource source(state_->handle.get(), state_->file_size, path, where);
    const auto truncated = [&](std::uint64_t at) {
      throw FileError(where, path, 0, at,
                      "file ends inside tensor " + detail::quoted_name(tensor) +
                          " (shortened since it was opened?)");
    };
    // Read straight into the matrix when the bytes are T's; through a staging block otherwise.
    const bool direct = detail::host_is_little_endian() && item == sizeof(T) &&
                        info.dtype == (std::is_same_v<T, float> ? "F32" : "F64");
    const std::size_t block =
        direct ? count : std::max<std::size_t>(1, (std::size_t{1} << 20) / item);
    std::vector<unsigned char> staging(direct ? 0 : std::min(count, block) * item);
    std::size_t done = 0;
    while (done < count) {
      const std::size_t k = std::min(block, count - done);
      const std::uint64_t at = info.offset + done * item;
      unsigned char* dst = direct ? reinterpret_cast<unsigned char*>(m.data()) : staging.data();
      if (read_at(source, at, dst, k * item) != k * item) truncated(at);
      if (!direct)
        detail::convert_safetensors_values(info.dtype, staging.data(), k, m.data() + done);
      done += k;
    }
    return m;
  }

  // A tensor as a zero-copy (rows, cols) table of S (float, double, emb::half, emb::bfloat16;
  // shape as in load): the tensor's dtype must be S's own (F32, F64, F16, BF16) and its data
  // aligned for S in the file (the reference writer aligns every tensor). Otherwise FileError
  // says what the file holds and that load<T> converts. The mapping lives on its own: this
  // SafeTensors object may be destroyed first.
  template <class S>
  MappedMatrix<S> map(const std::string& name, MapMode mode = MapMode::ReadOnly) const {
    static_assert(detail::is_storage_type_v<S>,
                  "SafeTensors::map<S>: S is float, double, emb::half or emb::bfloat16");
    static constexpr const char* where = "emb::io::SafeTensors::map";
    const auto& entry = state_->layout.tensors[position(name, where)];
    const std::string& tensor = entry.first;
    const TensorInfo& info = entry.second;
    const std::string& path = state_->path;
    const auto refuse = [&](const std::string& problem) {
      throw FileError(where, path, 0, info.offset,
                      "tensor " + detail::quoted_name(tensor) + " " + problem);
    };
    const char* wanted = detail::StorageType<S>::safetensors;
    const std::string call = emb::detail::concat("map<", detail::StorageType<S>::name, ">");
    if (info.dtype != wanted) {
      if (!detail::safetensors_convertible(info.dtype)) {
        refuse(emb::detail::concat("holds ", info.dtype, " values; ", call, " needs ", wanted,
                                   ", and emb maps and loads only F64, F32, F16 and BF16"));
      }
      refuse(emb::detail::concat("holds ", info.dtype, " values, but ", call, " needs ", wanted,
                                 ". Map it as map<", storage_of(info.dtype),
                                 ">, or load a converted copy with load<float> or load<double>"));
    }
    if (!detail::host_is_little_endian()) {
      refuse(
          "is little-endian, as every safetensors file is, and this machine is big-endian: "
          "the bytes cannot be used in place; load<float> or load<double> converts them");
    }
    if (info.offset % alignof(S) != 0) {
      refuse(emb::detail::concat(
          "starts at byte ", info.offset, " of the file, which is not a multiple of ", alignof(S),
          " (the alignment of ", detail::StorageType<S>::name,
          "), so it cannot be used in place (the file's writer did not align its tensors); "
          "load<float> or load<double> reads it"));
    }
    const auto [rows, cols] = detail::safetensors_matrix_shape(info, tensor, path, where);
    return detail::MappedAccess::make<S>(state_->handle.get(), path, info.offset, rows, cols, mode,
                                         where);
  }

 private:
  struct State {
    std::string path;
    detail::FileHandle handle;
    std::uint64_t file_size = 0;
    detail::SafetensorsLayout layout;
  };
  explicit SafeTensors(std::shared_ptr<const State> state) : state_(std::move(state)) {}

  std::size_t position(const std::string& name, const char* where) const {
    const auto it = state_->layout.index.find(name);
    if (it != state_->layout.index.end()) return it->second;
    std::string some;
    std::size_t shown = 0;
    for (const auto& t : state_->layout.tensors) {
      if (shown == 8) {
        some += ", ...";
        break;
      }
      some += (shown++ ? ", " : "") + detail::quoted_name(t.first);
    }
    throw std::out_of_range(emb::detail::concat(
        where, ": '", state_->path, "' has no tensor named ", detail::quoted_name(name),
        "; it has ", state_->layout.tensors.size(), " tensor(s)", shown ? ": " : "", some));
  }

  static const char* storage_of(const std::string& dtype) {
    return dtype == "F32"   ? "float"
           : dtype == "F64" ? "double"
           : dtype == "F16" ? "emb::half"
                            : "emb::bfloat16";
  }

  // pread-style: from byte `at`, independent of other readers.
  static std::size_t read_at(detail::DescriptorSource& source, std::uint64_t at, void* dst,
                             std::size_t n) {
    source.seek(at);
    return source.read(dst, n);
  }

  std::shared_ptr<const State> state_;
};

// Writes tables as a safetensors file the way the format's reference writer does: tensors of
// S's dtype (F32, F64, F16, BF16) with shape [rows, cols], laid out one after the other in the
// order of their names (the reference writer's order), the JSON header compact with
// __metadata__ first and padded with spaces to a multiple of 8 bytes, so that every tensor is
// aligned for S. Names and metadata must be UTF-8, names unique and not "__metadata__"
// (std::invalid_argument otherwise, before anything is written). The file appears at `path` only
// once completely written (a mapping of an older file at `path` keeps the old contents).
// Pass emb::Matrix<S> objects or views of them: a Ref to another layout would hold a copy.
template <class S>
void save_safetensors(
    const std::string& path,
    const std::vector<std::pair<std::string, Eigen::Ref<const Matrix<S>>>>& tensors,
    const std::map<std::string, std::string>& metadata = {}) {
  static_assert(detail::is_storage_type_v<S>,
                "save_safetensors<S>: S is float, double, emb::half or emb::bfloat16");
  static constexpr const char* where = "emb::io::save_safetensors";
  const auto bad = [&](const std::string& problem) {
    throw std::invalid_argument(emb::detail::concat(where, ": '", path, "': ", problem));
  };
  const auto utf8 = [](const std::string& s) { return detail::first_invalid_utf8(s) == s.size(); };
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return tensors[a].first < tensors[b].first; });
  std::vector<std::tuple<std::string, Index, Index>> entries;
  entries.reserve(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    const std::string& name = tensors[order[i]].first;
    if (!utf8(name)) bad("tensor name '" + detail::printable(name, 80) + "' is not valid UTF-8");
    if (name == "__metadata__") bad("\"__metadata__\" is the metadata's key, not a tensor name");
    if (i > 0 && name == tensors[order[i - 1]].first) {
      bad("the tensor name " + detail::quoted_name(name) + " is given twice");
    }
    entries.emplace_back(name, tensors[order[i]].second.rows(), tensors[order[i]].second.cols());
  }
  for (const auto& [k, v] : metadata) {
    if (!utf8(k)) bad("metadata key '" + detail::printable(k, 80) + "' is not valid UTF-8");
    if (!utf8(v)) {
      bad("the metadata value of " + detail::quoted_name(k) + " is not valid UTF-8");
    }
  }
  const std::string header =
      detail::safetensors_header(entries, detail::StorageType<S>::safetensors, sizeof(S), metadata);
  if (header.size() > detail::safetensors_max_header) {
    bad(emb::detail::concat("the header would be ", header.size(),
                            " bytes, more than the format's limit of ",
                            detail::safetensors_max_header, " (metadata too large?)"));
  }

  detail::AtomicWriter out(path, where);
  unsigned char length[8];
  for (std::size_t i = 0; i < 8; ++i) {
    length[i] =
        static_cast<unsigned char>((static_cast<std::uint64_t>(header.size()) >> (8 * i)) & 0xff);
  }
  out.write(length, 8);
  out.write(header);
  for (const std::size_t i : order) {
    const auto& m = tensors[i].second;
    detail::write_rows_little_endian(out, m.data(), m.rows(), m.cols(), m.outerStride());
  }
  out.commit();
}

}  // namespace emb::io
