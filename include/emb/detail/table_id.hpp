// emb/detail/table_id.hpp — the identity of a table object, by which optimizers find its state.
#pragma once

#include <atomic>
#include <cstdint>

namespace emb::detail {

inline std::uint64_t next_table_id() noexcept {
  static std::atomic<std::uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}

// An address would be the obvious key, but a table destroyed and another built in its place
// would then inherit the old moments, and a moved table would lose them. So: a new id per
// table, a copy is a new table, a move carries the id (its source gets a fresh one), and no id
// is ever reused.
class TableId {
 public:
  TableId() noexcept : value_(next_table_id()) {}
  TableId(const TableId&) noexcept : value_(next_table_id()) {}
  TableId(TableId&& other) noexcept : value_(other.value_) { other.value_ = next_table_id(); }
  TableId& operator=(const TableId& other) noexcept {
    if (this != &other) value_ = next_table_id();
    return *this;
  }
  TableId& operator=(TableId&& other) noexcept {
    if (this != &other) {
      value_ = other.value_;
      other.value_ = next_table_id();
    }
    return *this;
  }
  ~TableId() = default;

  std::uint64_t value() const noexcept { return value_; }

 private:
  std::uint64_t value_;
};

}  // namespace emb::detail
