// emb/detail/fasttext_text.hpp — how fastText turns text into rows of its input table: its
// string hash, the char n-grams of a word (whole UTF-8 characters), the word n-grams of a
// line, its tokeniser, and a dictionary looked up by that same hash.
//
// Every rule here is fastText 0.9's, including the odd ones: bytes are widened as signed chars
// before hashing, minn/maxn are compared with n after conversion to an unsigned size, a word
// n-gram hash starts from a 32-bit hash sign-extended to 64 bits.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../index_span.hpp"

namespace emb::detail {

inline constexpr std::string_view fasttext_eos = "</s>";
inline constexpr std::string_view fasttext_label_prefix = "__label__";
inline constexpr std::uint32_t fasttext_hash_basis = 2166136261u;

// One step of fastText's hash, 32-bit FNV-1a, on one byte. The byte is widened as a signed
// char (0xC3 becomes 0xFFFFFFC3 before the xor): fastText's released models were trained
// that way, so the buckets of every non-ASCII n-gram depend on it.
inline std::uint32_t fasttext_hash_step(std::uint32_t h, char c) noexcept {
  const auto widened =
      static_cast<std::uint32_t>(static_cast<std::int32_t>(static_cast<signed char>(c)));
  return (h ^ widened) * 16777619u;
}

inline std::uint32_t fasttext_hash(std::string_view s) noexcept {
  std::uint32_t h = fasttext_hash_basis;
  for (const char c : s) h = fasttext_hash_step(h, c);
  return h;
}

inline bool utf8_continuation(char c) noexcept {
  return (static_cast<unsigned char>(c) & 0xC0u) == 0x80u;
}

// Calls emit(hash, begin, end) for every char n-gram of `word` (already wrapped in '<' and
// '>') in fastText's order: by start, then by length. An n-gram is n whole UTF-8 characters
// (a start inside a character is skipped), minn <= n <= maxn, and never a lone '<' or '>'.
// fastText compares n with minn and maxn converted to size_t, so a negative maxn means no
// upper bound and a negative minn means no n-gram at all; kept, for files that say so.
template <class Emit>
void for_each_char_ngram(std::string_view word, std::int32_t minn, std::int32_t maxn,
                         Emit&& emit) {
  const auto min_n = static_cast<std::size_t>(static_cast<std::int64_t>(minn));
  const auto max_n = static_cast<std::size_t>(static_cast<std::int64_t>(maxn));
  const std::size_t len = word.size();
  for (std::size_t i = 0; i < len; ++i) {
    if (utf8_continuation(word[i])) continue;
    std::uint32_t h = fasttext_hash_basis;
    std::size_t j = i;
    for (std::size_t n = 1; j < len && n <= max_n; ++n) {
      h = fasttext_hash_step(h, word[j++]);
      while (j < len && utf8_continuation(word[j])) h = fasttext_hash_step(h, word[j++]);
      if (n >= min_n && !(n == 1 && (i == 0 || j == len))) emit(h, i, j);
    }
  }
}

// Whether for_each_char_ngram can emit anything with these bounds (a file whose bucket count
// is 0 must not have n-grams to hash into it).
inline bool char_ngrams_possible(std::int32_t minn, std::int32_t maxn) noexcept {
  if (maxn == 0 || minn < 0) return false;
  return maxn < 0 || std::max<std::int32_t>(minn, 1) <= maxn;
}

// A 32-bit token hash as fastText keeps it in a word n-gram: stored as int32, then widened to
// 64 bits with its sign.
inline std::uint64_t fasttext_widen_hash(std::uint32_t h) noexcept {
  return static_cast<std::uint64_t>(static_cast<std::int64_t>(static_cast<std::int32_t>(h)));
}

// Calls emit(hash64) for every word n-gram of 2..n consecutive tokens, by start then length.
template <class Emit>
void for_each_word_ngram(const std::vector<std::uint32_t>& hashes, std::int64_t n, Emit&& emit) {
  const std::size_t count = hashes.size();
  for (std::size_t i = 0; i < count; ++i) {
    std::uint64_t h = fasttext_widen_hash(hashes[i]);
    for (std::size_t j = i + 1; j < count && static_cast<std::int64_t>(j - i) < n; ++j) {
      h = h * 116049371u + fasttext_widen_hash(hashes[j]);
      emit(h);
    }
  }
}

// fastText's token separators (its readWord): the ASCII blanks and NUL. '\n' also ends a line.
inline bool fasttext_separator(char c) noexcept {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f' || c == '\0';
}
// What `std::istream >> word` splits on in the C locale (print-word-vectors, and the sentence
// vectors of unsupervised models): the same without NUL.
inline bool c_space(char c) noexcept {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f';
}

// Calls f(token) for every maximal run of bytes that `separator` does not match.
template <class Separator, class F>
void for_each_token(std::string_view text, Separator separator, F&& f) {
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    while (i < n && separator(text[i])) ++i;
    std::size_t j = i;
    while (j < n && !separator(text[j])) ++j;
    if (j > i) f(text.substr(i, j - i));
    i = j;
  }
}

// A fastText dictionary: entries (words first, then labels) in file order, their counts, and
// an open-addressing table keyed by fastText's hash, so that a token hashed once for its word
// n-grams is looked up without hashing it again. Strings live in one buffer.
class FastTextDictionary {
 public:
  // Sizes the table for `entries` entries; call once, before add().
  void reserve(std::size_t entries) {
    std::size_t slots = 8;
    while (slots < 2 * entries) slots *= 2;
    slots_.assign(slots, -1);
    mask_ = slots - 1;
    ends_.reserve(entries);
    counts_.reserve(entries);
  }

  // Appends an entry; returns the id of an earlier entry with the same string instead (and
  // adds nothing) if there is one.
  Index add(std::string_view word, std::int64_t count) {
    const std::uint32_t h = fasttext_hash(word);
    std::size_t slot = h & mask_;
    while (slots_[slot] >= 0) {
      if (this->word(slots_[slot]) == word) return slots_[slot];
      slot = (slot + 1) & mask_;
    }
    chars_.insert(chars_.end(), word.begin(), word.end());
    ends_.push_back(chars_.size());
    counts_.push_back(count);
    slots_[slot] = static_cast<std::int32_t>(ends_.size() - 1);
    return static_cast<Index>(ends_.size() - 1);
  }

  Index size() const noexcept { return static_cast<Index>(ends_.size()); }

  std::string_view word(Index id) const noexcept {
    const auto i = static_cast<std::size_t>(id);
    const std::size_t begin = i == 0 ? 0 : ends_[i - 1];
    return std::string_view(chars_.data() + begin, ends_[i] - begin);
  }
  std::int64_t count(Index id) const noexcept { return counts_[static_cast<std::size_t>(id)]; }
  const std::vector<std::int64_t>& counts() const noexcept { return counts_; }

  // The id of `word`, or -1; `hash` is fasttext_hash(word).
  Index find(std::string_view word, std::uint32_t hash) const noexcept {
    if (slots_.empty()) return -1;
    std::size_t slot = hash & mask_;
    while (slots_[slot] >= 0) {
      if (this->word(slots_[slot]) == word) return slots_[slot];
      slot = (slot + 1) & mask_;
    }
    return -1;
  }
  Index find(std::string_view word) const noexcept { return find(word, fasttext_hash(word)); }

 private:
  std::vector<char> chars_;
  std::vector<std::size_t> ends_;  // entry i is chars_[ends_[i - 1], ends_[i])
  std::vector<std::int64_t> counts_;
  std::vector<std::int32_t> slots_;
  std::size_t mask_ = 0;
};

// Reused buffers of the text-to-rows functions, so that a batch allocates once.
struct FastTextScratch {
  std::string wrapped;                // "<" + word + ">"
  std::vector<std::uint32_t> hashes;  // the token hashes of a line, for its word n-grams
};

// How a fastText model maps text to rows of its input table (nwords + buckets rows): the
// dictionary, the n-gram settings and, for pruned (quantized) models, the bucket -> row map.
class FastTextRows {
 public:
  FastTextRows() = default;
  FastTextRows(FastTextDictionary dictionary, Index nwords, std::int32_t minn, std::int32_t maxn,
               std::int64_t bucket, std::int32_t word_ngrams, std::int64_t pruned_size,
               std::vector<std::pair<std::int32_t, std::int32_t>> pruned)
      : dict_(std::move(dictionary)),
        nwords_(nwords),
        minn_(minn),
        maxn_(maxn),
        bucket_(bucket),
        word_ngrams_(word_ngrams),
        pruned_size_(pruned_size),
        pruned_(std::move(pruned)) {
    std::sort(pruned_.begin(), pruned_.end());
    eos_hash_ = fasttext_hash(fasttext_eos);
  }

  const FastTextDictionary& dictionary() const noexcept { return dict_; }
  Index nwords() const noexcept { return nwords_; }

  // The input row of bucket h, or -1 when a pruned model dropped it (fastText's pushHash).
  Index bucket_row(std::int64_t h) const noexcept {
    if (pruned_size_ == 0 || h < 0) return -1;
    if (pruned_size_ > 0) {
      const auto key = static_cast<std::int32_t>(h);
      const auto it = std::lower_bound(
          pruned_.begin(), pruned_.end(), key,
          [](const std::pair<std::int32_t, std::int32_t>& p, std::int32_t k) { return p.first < k; });
      if (it == pruned_.end() || it->first != key) return -1;
      return nwords_ + it->second;
    }
    return nwords_ + h;
  }

  // Calls f(row, begin, end) for each char n-gram of `word` that has a row; [begin, end) is
  // the n-gram in "<word>", which `scratch.wrapped` holds during the calls.
  template <class F>
  void for_each_ngram_row(std::string_view word, FastTextScratch& scratch, F&& f) const {
    if (bucket_ <= 0) return;  // a model without buckets has no n-grams (checked on load)
    std::string& w = scratch.wrapped;
    w.assign(1, '<');
    w.append(word.data(), word.size());
    w.push_back('>');
    const auto bucket = static_cast<std::uint32_t>(bucket_);
    for_each_char_ngram(w, minn_, maxn_, [&](std::uint32_t h, std::size_t begin, std::size_t end) {
      const Index row = bucket_row(static_cast<std::int64_t>(h % bucket));
      if (row >= 0) f(row, begin, end);
    });
  }

  // fastText's getSubwords(word): the word's own row when it is a known word, then its char
  // n-grams (none for "</s>"). A label is not a word: it gets its n-grams only (fastText's
  // print-word-vectors stops on an assertion there).
  void add_word(std::string_view word, FastTextScratch& scratch, std::vector<Index>& out) const {
    const Index id = dict_.find(word);
    if (id >= 0 && id < nwords_) out.push_back(id);
    if (word != fasttext_eos) {
      for_each_ngram_row(word, scratch, [&](Index row, std::size_t, std::size_t) { out.push_back(row); });
    }
  }

  // fastText's getLine for supervised models: for each token that is a word, its rows (a
  // known word: its own row, and its n-grams when maxn > 0; an unknown one: its n-grams);
  // labels are skipped; "</s>" ends the line when `end_of_line`; then the word n-gram buckets.
  void add_line(std::string_view line, bool end_of_line, FastTextScratch& scratch,
                std::vector<Index>& out) const {
    scratch.hashes.clear();
    for_each_token(line, fasttext_separator, [&](std::string_view token) {
      add_token(token, fasttext_hash(token), scratch, out);
    });
    if (end_of_line) add_token(fasttext_eos, eos_hash_, scratch, out);
    if (word_ngrams_ > 1 && bucket_ > 0) {
      const auto bucket = static_cast<std::uint64_t>(bucket_);
      for_each_word_ngram(scratch.hashes, word_ngrams_, [&](std::uint64_t h) {
        const Index row = bucket_row(static_cast<std::int64_t>(h % bucket));
        if (row >= 0) out.push_back(row);
      });
    }
  }

 private:
  void add_token(std::string_view token, std::uint32_t h, FastTextScratch& scratch,
                 std::vector<Index>& out) const {
    const Index id = dict_.find(token, h);
    const bool label = id >= 0 ? id >= nwords_
                               : token.substr(0, fasttext_label_prefix.size()) ==
                                     fasttext_label_prefix;
    if (label) return;
    if (id < 0) {
      if (token != fasttext_eos) {
        for_each_ngram_row(token, scratch, [&](Index row, std::size_t, std::size_t) { out.push_back(row); });
      }
    } else {
      out.push_back(id);
      if (maxn_ > 0 && token != fasttext_eos) {
        for_each_ngram_row(token, scratch, [&](Index row, std::size_t, std::size_t) { out.push_back(row); });
      }
    }
    scratch.hashes.push_back(h);
  }

  FastTextDictionary dict_;
  Index nwords_ = 0;
  std::int32_t minn_ = 0;
  std::int32_t maxn_ = 0;
  std::int64_t bucket_ = 0;
  std::int32_t word_ngrams_ = 1;
  std::int64_t pruned_size_ = -1;  // -1: not pruned
  std::vector<std::pair<std::int32_t, std::int32_t>> pruned_;  // bucket -> row - nwords, sorted
  std::uint32_t eos_hash_ = 0;
};

}  // namespace emb::detail
