// emb/index_span.hpp — the index type and a non-owning view of contiguous indices.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

namespace emb {

using Index = std::int64_t;

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// The 16-bit storage types a table can hold (Eigen's): IEEE binary16 and bfloat16. Converting
// either to float is exact.
using half = Eigen::half;
using bfloat16 = Eigen::bfloat16;

// A read-only view of contiguous Index values, the input of every lookup.
//
// It converts implicitly from the containers a caller already holds, so `table.forward(ids)`
// works for a std::vector, a braced list, a std::array or an Eigen vector or matrix of Index.
// An Eigen matrix is read in its storage order: an emb::Matrix<Index> of shape (batch, seq) is
// row-major, so position i*seq + j is element (i, j) and the (batch*seq, dim) result of a lookup
// is the (batch, seq, dim) tensor PyTorch returns, flattened.
//
// The view does not own its data: it must not outlive the container it was made from (a braced
// list lives until the end of the full expression that holds it).
class IndexSpan {
 public:
  constexpr IndexSpan() noexcept = default;
  constexpr explicit IndexSpan(const Index* data, std::size_t size) noexcept
      : data_(data), size_(size) {}

  IndexSpan(const std::vector<Index>& v) noexcept : data_(v.data()), size_(v.size()) {}  // NOLINT
// Viewing a braced list is the point here (it outlives the call it is passed to), so GCC's
// warning that the view does not extend the list's lifetime is silenced for this constructor.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winit-list-lifetime"
#endif
  constexpr IndexSpan(std::initializer_list<Index> list) noexcept  // NOLINT
      : data_(list.begin()), size_(list.size()) {}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  template <std::size_t N>
  constexpr IndexSpan(const std::array<Index, N>& a) noexcept  // NOLINT
      : data_(a.data()), size_(N) {}

  // Eigen::Matrix and Eigen::Array of Index own contiguous storage.
  template <class Derived,
            class = std::enable_if_t<std::is_same_v<typename Derived::Scalar, Index>>>
  IndexSpan(const Eigen::PlainObjectBase<Derived>& m) noexcept  // NOLINT
      : data_(m.data()), size_(static_cast<std::size_t>(m.size())) {}

  // A Map without explicit strides views contiguous storage as well.
  template <class PlainType, int MapOptions,
            class = std::enable_if_t<std::is_same_v<typename PlainType::Scalar, Index>>>
  IndexSpan(const Eigen::Map<PlainType, MapOptions, Eigen::Stride<0, 0>>& m) noexcept  // NOLINT
      : data_(m.data()), size_(static_cast<std::size_t>(m.size())) {}

  // A vector view whose inner stride is 1 at compile time is contiguous at any runtime size:
  // Eigen::Ref<const emb::Vector<Index>>, v.head(n) / v.segment(i, n), a row of a row-major
  // (batch, seq) matrix. Strided views (a column of a row-major matrix) do not convert.
  template <class Derived,
            class = std::enable_if_t<std::is_same_v<typename Derived::Scalar, Index> &&
                                     Derived::IsVectorAtCompileTime &&
                                     Derived::InnerStrideAtCompileTime == 1>>
  IndexSpan(const Eigen::MapBase<Derived, Eigen::ReadOnlyAccessors>& v) noexcept  // NOLINT
      : data_(v.data()), size_(static_cast<std::size_t>(v.size())) {}

  constexpr const Index* data() const noexcept { return data_; }
  constexpr std::size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr const Index* begin() const noexcept { return data_; }
  constexpr const Index* end() const noexcept { return data_ + size_; }
  constexpr Index operator[](std::size_t i) const noexcept { return data_[i]; }

 private:
  const Index* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace emb
