// emb/vocabulary.hpp — Vocabulary: tokens (UTF-8 strings) <-> dense ids 0..size()-1.
#pragma once

#include <cstddef>
#include <deque>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "detail/error.hpp"
#include "index_span.hpp"

namespace emb {

// Ids are given in insertion order, so row i of a table built for a vocabulary is token(i).
// Tokens are byte strings compared exactly (UTF-8 such as "优" works as is; no normalisation).
class Vocabulary {
 public:
  Vocabulary() = default;
  Vocabulary(std::initializer_list<std::string_view> tokens) {
    for (auto t : tokens) add(t);
  }
  explicit Vocabulary(const std::vector<std::string>& tokens) {
    for (const auto& t : tokens) add(t);
  }

  // The lookup map holds views into tokens_, so a copy rebuilds it over its own strings.
  Vocabulary(const Vocabulary& other) : tokens_(other.tokens_), unk_(other.unk_) { reindex(); }
  Vocabulary& operator=(const Vocabulary& other) {
    if (this != &other) {
      Vocabulary copy(other);
      *this = std::move(copy);
    }
    return *this;
  }
  // A moved deque keeps its elements where they are, so the views stay valid.
  Vocabulary(Vocabulary&&) noexcept = default;
  Vocabulary& operator=(Vocabulary&&) noexcept = default;
  ~Vocabulary() = default;

  // The id of `token`, inserting it at the end if it is new.
  Index add(std::string_view token) {
    if (const auto found = find(token)) return *found;
    const auto id = static_cast<Index>(tokens_.size());
    tokens_.emplace_back(token);  // a deque never moves its elements: the view below stays valid
    try {
      ids_.emplace(std::string_view(tokens_.back()), id);
    } catch (...) {
      tokens_.pop_back();
      throw;
    }
    return id;
  }

  std::optional<Index> find(std::string_view token) const {
    const auto it = ids_.find(token);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }

  bool contains(std::string_view token) const { return ids_.count(token) != 0; }

  // The id of `token`; an unknown token maps to the unk id when one is set, otherwise throws
  // std::out_of_range naming the token.
  Index id(std::string_view token) const {
    if (const auto found = find(token)) return *found;
    if (unk_) return *unk_;
    throw std::out_of_range(detail::concat("emb::Vocabulary::id: unknown token \"", token,
                                           "\" (vocabulary of ", size(),
                                           " tokens, no unk token set)"));
  }

  const std::string& token(Index id) const {
    detail::check_indices("emb::Vocabulary::token", IndexSpan(&id, 1), size());
    return tokens_[static_cast<std::size_t>(id)];
  }

  Index size() const { return static_cast<Index>(tokens_.size()); }
  bool empty() const { return tokens_.empty(); }

  // Makes `token` (added if missing) the id that unknown tokens map to.
  void set_unk(std::string_view token) { unk_ = add(token); }
  std::optional<Index> unk_id() const { return unk_; }

  std::vector<Index> encode(const std::vector<std::string>& tokens) const {
    std::vector<Index> out;
    out.reserve(tokens.size());
    for (const auto& t : tokens) out.push_back(id(t));
    return out;
  }

  // Splits `text` on ASCII whitespace and encodes each piece ("hello world <PAD>").
  std::vector<Index> encode_text(std::string_view text) const {
    std::vector<Index> out;
    std::size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && is_space(text[i])) ++i;
      std::size_t j = i;
      while (j < text.size() && !is_space(text[j])) ++j;
      if (j > i) out.push_back(id(text.substr(i, j - i)));
      i = j;
    }
    return out;
  }

  const std::deque<std::string>& tokens() const { return tokens_; }

 private:
  static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  }
  void reindex() {
    ids_.clear();
    ids_.reserve(tokens_.size());
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      ids_.emplace(std::string_view(tokens_[i]), static_cast<Index>(i));
    }
  }

  std::deque<std::string> tokens_;
  std::unordered_map<std::string_view, Index> ids_;
  std::optional<Index> unk_;
};

}  // namespace emb
