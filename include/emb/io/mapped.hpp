// emb/io/mapped.hpp — tables read straight from a file's pages: MappedMatrix and map_npy.
//
//   auto w = emb::io::map_npy<float>("table.npy");        // a 4 GB table opens in microseconds
//   w.rows(), w.cols(), w.data(), w.view()                // (rows, cols) row-major, zero-copy
//   auto cow = emb::io::map_npy<float>("table.npy", emb::io::MapMode::CopyOnWrite);
//   cow.mutable_view()(3, 0) = 1.0f;                      // this process's copy; the file stays
//
// A mapping costs address space, not memory: a page is read from the file the first time it is
// touched, and every process that maps the file ReadOnly shares the same pages of the page cache.
// POSIX only (mmap); elsewhere mapping throws and load_npy is the way to read a table.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "../detail/error.hpp"
#include "../index_span.hpp"
#include "detail/file.hpp"
#include "detail/mmap.hpp"
#include "detail/parse.hpp"
#include "file_error.hpp"
#include "npy.hpp"

namespace emb::io {

enum class MapMode {
  // The file's own pages, shared with every process that maps the file (mmap MAP_SHARED,
  // PROT_READ). Nothing can write them: mutable_data() throws std::logic_error, and a table
  // built on the mapping refuses every write.
  ReadOnly,
  // A private mapping (MAP_PRIVATE, readable and writable): a page stays shared with the file
  // until this process writes it, and is then this process's own copy. The file never changes.
  CopyOnWrite,
};

// How the table will be read, passed to the kernel (madvise). Random suits lookups on a table
// larger than memory (no read-ahead around each row); WillNeed starts reading the whole table
// in the background.
enum class Advice { Normal, Random, Sequential, WillNeed };

template <class S>
class MappedMatrix;

namespace detail {

// What emb knows of each type a table can be stored in: its name in messages, its .npy dtype
// (NumPy has no bfloat16) and its safetensors dtype.
template <class S>
struct StorageType {
  static constexpr bool known = false;
};
template <>
struct StorageType<float> {
  static constexpr bool known = true;
  static constexpr const char *name = "float", *npy = "<f4", *safetensors = "F32";
};
template <>
struct StorageType<double> {
  static constexpr bool known = true;
  static constexpr const char *name = "double", *npy = "<f8", *safetensors = "F64";
};
template <>
struct StorageType<emb::half> {
  static constexpr bool known = true;
  static constexpr const char *name = "emb::half", *npy = "<f2", *safetensors = "F16";
};
template <>
struct StorageType<emb::bfloat16> {
  static constexpr bool known = true;
  static constexpr const char *name = "emb::bfloat16", *npy = nullptr, *safetensors = "BF16";
};

template <class S>
inline constexpr bool is_storage_type_v = StorageType<S>::known;

// Builds MappedMatrix objects (its constructor is private): maps `rows * cols` values of S that
// start at byte `offset` of the open file `fd`. The caller has checked that the range lies in
// the file and that `offset` is aligned for S.
struct MappedAccess {
  template <class S>
  static MappedMatrix<S> make(int fd, const std::string& path, std::uint64_t offset, Index rows,
                              Index cols, MapMode mode, const char* where) {
    const std::uint64_t bytes =
        static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols) * sizeof(S);
    Mapping mapping = Mapping::map(fd, offset, bytes, mode == MapMode::CopyOnWrite, path, where);
    return MappedMatrix<S>(std::move(mapping), rows, cols, path, mode, offset);
  }
};

}  // namespace detail

// A (rows, cols) row-major matrix of S that lives in a memory-mapped file: the mapping is made
// when the object is created and removed when it is destroyed. Movable, not copyable (a table
// built on it takes it over). Its lifetime is its own: the SafeTensors object or the call that
// made it may be gone. S is float, double, emb::half or emb::bfloat16.
//
// A moved-from or default-constructed MappedMatrix is empty (0 x 0, data() null). A table with
// no elements maps nothing either, and its data() is null.
template <class S>
class MappedMatrix {
  static_assert(detail::is_storage_type_v<S>,
                "MappedMatrix<S>: S is float, double, emb::half or emb::bfloat16");

 public:
  using Scalar = S;

  MappedMatrix() = default;
  MappedMatrix(MappedMatrix&& other) noexcept
      : mapping_(std::move(other.mapping_)),
        rows_(std::exchange(other.rows_, 0)),
        cols_(std::exchange(other.cols_, 0)),
        path_(std::move(other.path_)),
        mode_(other.mode_),
        offset_(std::exchange(other.offset_, 0)) {
    other.path_.clear();
  }
  MappedMatrix& operator=(MappedMatrix&& other) noexcept {
    if (this != &other) {
      mapping_ = std::move(other.mapping_);
      rows_ = std::exchange(other.rows_, 0);
      cols_ = std::exchange(other.cols_, 0);
      path_ = std::move(other.path_);
      other.path_.clear();
      mode_ = other.mode_;
      offset_ = std::exchange(other.offset_, 0);
    }
    return *this;
  }
  MappedMatrix(const MappedMatrix&) = delete;
  MappedMatrix& operator=(const MappedMatrix&) = delete;
  ~MappedMatrix() = default;  // the Mapping member unmaps

  Index rows() const noexcept { return rows_; }
  Index cols() const noexcept { return cols_; }
  Index size() const noexcept { return rows_ * cols_; }
  bool empty() const noexcept { return size() == 0; }
  // Bytes of the table: rows * cols * sizeof(S).
  std::size_t size_bytes() const noexcept { return static_cast<std::size_t>(size()) * sizeof(S); }

  // Row i starts at data() + i * cols(); aligned for S.
  const S* data() const noexcept { return reinterpret_cast<const S*>(mapping_.data()); }

  // Writable rows, for a CopyOnWrite mapping only: a ReadOnly one throws std::logic_error
  // naming the file (nothing is changed).
  S* mutable_data() {
    if (mode_ == MapMode::ReadOnly) {
      throw std::logic_error(emb::detail::concat(
          "emb::io::MappedMatrix: '", path_,
          "' is mapped ReadOnly, so its rows cannot be written; map it with "
          "MapMode::CopyOnWrite to change them in memory (the file never changes)"));
    }
    return reinterpret_cast<S*>(mapping_.data());
  }

  Eigen::Map<const Matrix<S>> view() const {
    return Eigen::Map<const Matrix<S>>(data(), rows_, cols_);
  }
  Eigen::Map<Matrix<S>> mutable_view() {
    return Eigen::Map<Matrix<S>>(mutable_data(), rows_, cols_);
  }

  // The file mapped, as given when it was opened.
  const std::string& path() const noexcept { return path_; }
  MapMode mode() const noexcept { return mode_; }
  // Byte offset in the file of the first value.
  std::uint64_t file_offset() const noexcept { return offset_; }

  // Tells the kernel how the table will be read. Returns whether it took the advice (false for
  // an empty table, or where madvise is not available); the table is the same either way.
  bool advise(Advice advice) const noexcept {
#if EMB_IO_HAVE_MMAP
    int a = POSIX_MADV_NORMAL;
    switch (advice) {
      case Advice::Normal:
        a = POSIX_MADV_NORMAL;
        break;
      case Advice::Random:
        a = POSIX_MADV_RANDOM;
        break;
      case Advice::Sequential:
        a = POSIX_MADV_SEQUENTIAL;
        break;
      case Advice::WillNeed:
        a = POSIX_MADV_WILLNEED;
        break;
    }
    return detail::advise(mapping_, a);
#else
    (void)advice;
    return false;
#endif
  }

  // Reads the whole table into memory now and maps every page into this process, so that the
  // first lookups do not wait for the disk or fault: what a server calls before it takes
  // requests. `progress` (optional) is called with (rows resident, rows) as blocks of about
  // 8 MiB complete; its last call has done == rows. Pages of a CopyOnWrite mapping stay shared
  // with the file until written. Throws FileError if the file was shortened under the mapping
  // (where the kernel reports it, Linux 5.14+).
  void warm(const Progress& progress = {}) const {
    if (empty()) return;
    detail::ProgressReporter report(progress, rows_);
    const std::size_t row_bytes = static_cast<std::size_t>(cols_) * sizeof(S);
    detail::populate(mapping_, mapping_.data(), size_bytes(), path_, "emb::io::MappedMatrix::warm",
                     [&](std::size_t bytes_done) {
                       const auto r = static_cast<Index>(bytes_done / row_bytes);
                       report.rows_done(bytes_done >= size_bytes() ? rows_ : r);
                     });
  }

 private:
  friend struct detail::MappedAccess;
  MappedMatrix(detail::Mapping mapping, Index rows, Index cols, std::string path, MapMode mode,
               std::uint64_t offset)
      : mapping_(std::move(mapping)),
        rows_(rows),
        cols_(cols),
        path_(std::move(path)),
        mode_(mode),
        offset_(offset) {}

  detail::Mapping mapping_;
  Index rows_ = 0;
  Index cols_ = 0;
  std::string path_;
  MapMode mode_ = MapMode::ReadOnly;
  std::uint64_t offset_ = 0;
};

namespace detail {

inline constexpr const char* map_npy_where = "emb::io::map_npy";

// What a .npy header's dtype is, for messages.
inline std::string npy_dtype_name(const NpyHeader& h) {
  const char* kind = h.item_size == 2 ? "float16" : h.item_size == 4 ? "float32" : "float64";
  return emb::detail::concat("'", h.byte_order, "f", h.item_size, "' (", kind,
                             h.byte_order == '>' ? ", big-endian" : "", ")");
}

// The storage type that maps a .npy file of this item size.
constexpr const char* storage_for_item_size(std::size_t item) {
  return item == 2 ? "emb::half" : item == 4 ? "float" : "double";
}

// Whether the data of a .npy file with this header can be mapped as S; throws a FileError that
// says what the file holds and what to call instead when it cannot.
template <class S>
void check_npy_mappable(const NpyHeader& h, const std::string& path) {
  const auto refuse = [&](std::uint64_t at, const std::string& problem) {
    throw FileError(map_npy_where, path, 0, at, problem);
  };
  const std::string call = emb::detail::concat("map_npy<", StorageType<S>::name, ">");
  if constexpr (std::is_same_v<S, emb::bfloat16>) {
    refuse(0, emb::detail::concat(
                  "the file holds ", npy_dtype_name(h), " values; .npy has no bfloat16 dtype, so ",
                  call, " cannot map it. Map it as map_npy<", storage_for_item_size(h.item_size),
                  ">, load a converted copy with load_npy, or keep bfloat16 "
                  "tables in safetensors (SafeTensors::map<emb::bfloat16>)"));
  } else {
    if (h.item_size != sizeof(S)) {
      refuse(0, emb::detail::concat("the file holds ", npy_dtype_name(h), " values, but ", call,
                                    " needs '", StorageType<S>::npy, "'. Map it as map_npy<",
                                    storage_for_item_size(h.item_size), ">, or load a ",
                                    "converted copy with load_npy<float> or load_npy<double>"));
    }
    if ((h.byte_order == '<') != host_is_little_endian()) {
      refuse(0, emb::detail::concat(
                    "the file holds ", npy_dtype_name(h), " values, and this machine is ",
                    host_is_little_endian() ? "little" : "big",
                    "-endian: the bytes cannot be used in place. load_npy converts the byte "
                    "order (or save the array with a.astype('",
                    StorageType<S>::npy, "'))"));
    }
  }
  // A Fortran-order array with one row or one column has the C-order layout.
  if (h.fortran_order && h.rows > 1 && h.cols > 1) {
    refuse(0, emb::detail::concat(
                  "the array is in Fortran (column-major) order, shape (", h.rows, ", ", h.cols,
                  "); a mapped table must be C (row-major) order. load_npy reads it (and "
                  "reorders it), or save it in C order: np.save(path, np.ascontiguousarray(a))"));
  }
  if (h.data_offset % alignof(S) != 0) {
    refuse(h.data_offset, emb::detail::concat("the array data starts at byte ", h.data_offset,
                                              ", which is not a multiple of ", alignof(S),
                                              " (the alignment of ", StorageType<S>::name,
                                              "), so it cannot be used in place; load_npy "
                                              "reads it (np.save aligns the data to 64 bytes)"));
  }
}

}  // namespace detail

// Maps the 2-D array of a .npy file (any version) as a (rows, cols) table of S, zero-copy:
// the file must hold S in this machine's byte order ('<f4' for float, '<f8' for double, '<f2'
// for emb::half), in C order, with the data aligned for S (np.save's files are). Anything else
// throws emb::io::FileError saying what the file holds and to use load_npy, which converts.
// Bytes after the array are ignored, as load_npy ignores them.
template <class S = float>
MappedMatrix<S> map_npy(const std::string& path, MapMode mode = MapMode::ReadOnly) {
  static_assert(detail::is_storage_type_v<S>,
                "map_npy<S>: S is float, double, emb::half or emb::bfloat16");
  detail::OpenedFile file = detail::open_for_mapping(path, detail::map_npy_where);
  detail::DescriptorSource source(file.handle.get(), file.size, path, detail::map_npy_where);
  const NpyHeader header = detail::read_npy_header(source, detail::map_npy_where);
  detail::check_npy_mappable<S>(header, path);
  return detail::MappedAccess::make<S>(file.handle.get(), path, header.data_offset, header.rows,
                                       header.cols, mode, detail::map_npy_where);
}

}  // namespace emb::io
