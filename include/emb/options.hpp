// emb/options.hpp — construction options of the embedding layers, chainable as in libtorch:
//
//   auto opts = emb::EmbeddingOptions(10, 3).padding_idx(1).max_norm(1.0);
//   opts.padding_idx();   // std::optional<Index>{1}
//
// Setters store the value as given; the layer validates the whole set when it is built
// (std::invalid_argument naming the option and its value), because padding_idx can only be
// checked against num_embeddings.
#pragma once

#include <optional>

#include "index_span.hpp"

namespace emb {

// The options Embedding and EmbeddingBag share: how the table is indexed and renormalised.
// CRTP so that every setter returns the most derived options type and chains keep their type.
template <class Derived>
class TableOptionsBase {
 public:
  Derived& padding_idx(std::optional<Index> value) {
    padding_idx_ = value;
    return self();
  }
  std::optional<Index> padding_idx() const { return padding_idx_; }

  Derived& max_norm(std::optional<double> value) {
    max_norm_ = value;
    return self();
  }
  std::optional<double> max_norm() const { return max_norm_; }

  // p of the p-norm max_norm is measured in; std::numeric_limits<double>::infinity() is max|x|.
  Derived& norm_type(double value) {
    norm_type_ = value;
    return self();
  }
  double norm_type() const { return norm_type_; }

  Derived& scale_grad_by_freq(bool value) {
    scale_grad_by_freq_ = value;
    return self();
  }
  bool scale_grad_by_freq() const { return scale_grad_by_freq_; }

 protected:
  TableOptionsBase() = default;

 private:
  Derived& self() { return static_cast<Derived&>(*this); }

  std::optional<Index> padding_idx_;
  std::optional<double> max_norm_;
  double norm_type_ = 2.0;
  bool scale_grad_by_freq_ = false;
};

class EmbeddingOptions : public TableOptionsBase<EmbeddingOptions> {
 public:
  EmbeddingOptions(Index num_embeddings, Index embedding_dim)
      : num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {}

  EmbeddingOptions& num_embeddings(Index value) {
    num_embeddings_ = value;
    return *this;
  }
  Index num_embeddings() const { return num_embeddings_; }

  EmbeddingOptions& embedding_dim(Index value) {
    embedding_dim_ = value;
    return *this;
  }
  Index embedding_dim() const { return embedding_dim_; }

 private:
  Index num_embeddings_;
  Index embedding_dim_;
};

// Options of Embedding::from_pretrained: the shape comes from the matrix. Frozen by default,
// as in PyTorch.
class FromPretrainedOptions : public TableOptionsBase<FromPretrainedOptions> {
 public:
  FromPretrainedOptions& freeze(bool value) {
    freeze_ = value;
    return *this;
  }
  bool freeze() const { return freeze_; }

 private:
  bool freeze_ = true;
};

}  // namespace emb
