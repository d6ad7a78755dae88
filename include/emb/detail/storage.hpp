// emb/detail/storage.hpp — where a table's rows live: the storage policy behind every table.
//
// A table's rows are either owned (a Matrix<S>, which may be moved onto 2 MiB pages) or held
// by someone else and kept alive by a shared owner (a mapped file: read-only, or copy-on-write
// private memory). Either way the kernels see the same thing: a pointer to row-major
// (rows, cols) values of S. Writes go through mutable_data(), the one hook a read-only storage
// refuses, so no kernel or optimizer needs to know where the rows are.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "../index_span.hpp"
#include "error.hpp"
#include "huge_pages.hpp"

namespace emb::detail {

template <class S>
class RowStorage {
 public:
  // Owned rows.
  explicit RowStorage(Matrix<S>&& owned = Matrix<S>()) : owned_(std::move(owned)) { point_at_owned(); }

  // Rows someone else holds; `keeper` keeps them alive as long as this storage (or a copy of
  // it) exists. `writable`: whether they may be written (copy-on-write memory); `source` names
  // them in messages (a file path).
  RowStorage(std::shared_ptr<void> keeper, S* data, Index rows, Index cols, bool writable,
             std::string source)
      : keeper_(std::move(keeper)),
        data_(data),
        rows_(rows),
        cols_(cols),
        writable_(writable),
        source_(std::move(source)) {}

  // A copy of owned rows owns a copy; a copy of read-only rows shares them (they never change);
  // a copy of writable external rows owns a copy, so that writes to one never show in the other.
  RowStorage(const RowStorage& other) { *this = other; }
  RowStorage& operator=(const RowStorage& other) {
    if (this == &other) return *this;
    if (other.external() && !other.writable_) {
      owned_ = Matrix<S>();
      keeper_ = other.keeper_;
      data_ = other.data_;
      rows_ = other.rows_;
      cols_ = other.cols_;
      writable_ = false;
      source_ = other.source_;
    } else {
      owned_ = Eigen::Map<const Matrix<S>>(other.data_, other.rows_, other.cols_);
      keeper_.reset();
      source_.clear();
      point_at_owned();
    }
    huge_pages_ = false;
    return *this;
  }
  RowStorage(RowStorage&& other) noexcept { swap(other); }
  RowStorage& operator=(RowStorage&& other) noexcept {
    RowStorage fresh;
    fresh.swap(other);
    swap(fresh);
    return *this;
  }
  ~RowStorage() = default;

  const S* data() const noexcept { return data_; }
  Index rows() const noexcept { return rows_; }
  Index cols() const noexcept { return cols_; }
  bool writable() const noexcept { return writable_; }
  bool external() const noexcept { return keeper_ != nullptr; }
  // The file the rows come from ("" for owned rows).
  const std::string& source() const noexcept { return source_; }

  Eigen::Map<const Matrix<S>> view() const noexcept {
    return Eigen::Map<const Matrix<S>>(data_, rows_, cols_);
  }

  // The rows for writing, or std::logic_error naming `where` when they are read-only.
  S* mutable_data(const char* where) {
    if (!writable_) throw_read_only(where);
    return data_;
  }
  [[noreturn]] void throw_read_only(const char* where) const {
    throw std::logic_error(concat(where, ": the table is read-only (mapped with MapMode::ReadOnly",
                                  source_.empty() ? std::string() : " from '" + source_ + "'",
                                  "); map it with MapMode::CopyOnWrite, or load it, to change it"));
  }

  // Replaces the rows by an owned matrix of the same shape (the caller checks it).
  void replace(Matrix<S>&& owned) {
    RowStorage fresh(std::move(owned));
    swap(fresh);
  }

  // Moves owned rows onto 2 MiB pages (see huge_pages.hpp); false, changing nothing, for
  // external rows, small tables, or when the kernel has no transparent huge pages.
  bool use_huge_pages() {
    const auto bytes = static_cast<std::size_t>(rows_) * static_cast<std::size_t>(cols_) * sizeof(S);
    if (external() || bytes < huge_page_min_bytes || !huge_pages_available()) return false;
    Matrix<S> fresh(rows_, cols_);  // Eigen leaves it unwritten
    if (!advise_huge_pages(fresh.data(), bytes)) return false;
    std::memcpy(static_cast<void*>(fresh.data()), owned_.data(), bytes);
    owned_.swap(fresh);
    point_at_owned();
    huge_pages_ = true;
    return true;
  }
  bool uses_huge_pages() const noexcept { return huge_pages_; }

 private:
  void point_at_owned() noexcept {
    data_ = owned_.data();
    rows_ = owned_.rows();
    cols_ = owned_.cols();
    writable_ = true;
  }
  void swap(RowStorage& other) noexcept {
    owned_.swap(other.owned_);
    keeper_.swap(other.keeper_);
    std::swap(data_, other.data_);
    std::swap(rows_, other.rows_);
    std::swap(cols_, other.cols_);
    std::swap(writable_, other.writable_);
    source_.swap(other.source_);
    std::swap(huge_pages_, other.huge_pages_);
  }

  Matrix<S> owned_;
  std::shared_ptr<void> keeper_;
  S* data_ = nullptr;
  Index rows_ = 0;
  Index cols_ = 0;
  bool writable_ = true;
  std::string source_;
  bool huge_pages_ = false;
};

// The storage of a mapped matrix (io::MappedMatrix<S>, emb/io/mapped.hpp), which it keeps
// alive: read-only, or writable copy-on-write memory. Only instantiated by from_mapped, whose
// caller has included emb/io/mapped.hpp.
template <class S, class Mapped>
RowStorage<S> mapped_storage(Mapped&& mapped) {
  auto keeper = std::make_shared<std::decay_t<Mapped>>(std::forward<Mapped>(mapped));
  using Mode = decltype(keeper->mode());
  const bool writable = keeper->mode() == Mode::CopyOnWrite;
  // The pointer is written only through mutable_data(), which read-only storage refuses.
  S* data = writable ? keeper->mutable_data() : const_cast<S*>(keeper->data());
  const Index rows = keeper->rows();
  const Index cols = keeper->cols();
  std::string path = keeper->path();
  return RowStorage<S>(std::move(keeper), data, rows, cols, writable, std::move(path));
}

}  // namespace emb::detail
