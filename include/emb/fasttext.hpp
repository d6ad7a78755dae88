// emb/fasttext.hpp — fastText models (.bin, and quantized .ftz) run with emb's parts: word
// vectors for any word, sentence vectors, label predictions, nearest neighbours.
//
//   auto ft = emb::FastText::load("model.bin");
//   emb::Vector<float> v = ft.word_vector("unseenword");         // print-word-vectors
//   emb::Vector<float> s = ft.sentence_vector("a line of text");  // print-sentence-vectors
//   for (auto& [label, p] : ft.predict("a line of text", 3))      // predict-prob, k = 3
//     std::cout << label << ' ' << p << '\n';
//
// A fastText model is a Mean EmbeddingBag over a word's id and the hashed buckets of its char
// n-grams (and, for supervised models, of a line's word n-grams), then a bias-free Linear:
// input() and output() are exactly those, an EmbeddingBag<float> and a Linear<float>.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "detail/error.hpp"
#include "detail/fasttext_loss.hpp"
#include "detail/fasttext_text.hpp"
#include "embedding_bag.hpp"
#include "index_span.hpp"
#include "io/detail/fasttext_format.hpp"
#include "io/detail/file.hpp"
#include "io/file_error.hpp"
#include "linear.hpp"
#include "vocabulary.hpp"

namespace emb {

// fastText's model kinds and losses, with its own codes.
enum class FastTextModel { cbow = 1, skipgram = 2, supervised = 3 };
enum class FastTextLoss { hs = 1, ns = 2, softmax = 3, ova = 4 };

// The names `fasttext dump <model> args` prints.
inline const char* to_string(FastTextModel model) noexcept {
  switch (model) {
    case FastTextModel::cbow: return "cbow";
    case FastTextModel::skipgram: return "sg";
    case FastTextModel::supervised: return "sup";
  }
  return "unknown";
}
inline const char* to_string(FastTextLoss loss) noexcept {
  switch (loss) {
    case FastTextLoss::hs: return "hs";
    case FastTextLoss::ns: return "ns";
    case FastTextLoss::softmax: return "softmax";
    case FastTextLoss::ova: return "one-vs-all";
  }
  return "unknown";
}

// The training arguments a model file stores (fastText's names in comments).
struct FastTextArgs {
  int dim = 0;
  int ws = 0;
  int epoch = 0;
  int min_count = 0;    // minCount
  int neg = 0;
  int word_ngrams = 0;  // wordNgrams
  FastTextLoss loss = FastTextLoss::softmax;
  FastTextModel model = FastTextModel::supervised;
  int bucket = 0;
  int minn = 0;
  int maxn = 0;
  int lr_update_rate = 0;  // lrUpdateRate
  double t = 0.0;
};

class FastTextLoadOptions {
 public:
  // Called as matrix rows arrive, (rows read, input rows + output rows).
  FastTextLoadOptions& progress(io::Progress callback) {
    progress_ = std::move(callback);
    return *this;
  }
  const io::Progress& progress() const { return progress_; }

  // Linux: read the input and output matrices into memory advised for 2 MiB pages
  // (transparent huge pages in "always" or "madvise" mode). A large model then loads with a
  // fault per 2 MiB instead of per 4 KiB and its random rows miss the TLB far less; the first
  // load on a machine whose memory is fragmented may wait while the kernel gathers the pages.
  // Off by default; elsewhere it changes nothing.
  FastTextLoadOptions& huge_pages(bool on) {
    huge_pages_ = on;
    return *this;
  }
  bool huge_pages() const { return huge_pages_; }

 private:
  io::Progress progress_;
  bool huge_pages_ = false;
};

class FastText;

namespace io::detail {
FastText read_fasttext_model(ByteSource& source, const FastTextLoadOptions& options,
                             std::size_t chunk = std::size_t{1} << 20);
}

// A fastText model file (.bin, format version 12 or 11; .ftz, dequantized to float on load).
// Every const member is safe to call from several threads at once.
class FastText {
 public:
  // (label, probability) as predict-prob prints them, most probable first.
  using Prediction = std::pair<std::string, float>;

  // Throws io::FileError naming the file and the byte offset of anything wrong in it.
  static FastText load(const std::string& path) { return load(path, FastTextLoadOptions()); }
  static FastText load(const std::string& path, const FastTextLoadOptions& options) {
    io::detail::FileSource source(path, io::detail::fasttext_where);
    return io::detail::read_fasttext_model(source, options);
  }

  // ---- what the file holds ----------------------------------------------------------------

  // Words, then labels (supervised models), in the file's order: id i is input row i for a
  // word. Built on first use.
  const Vocabulary& words() const {
    std::call_once(lazy_->vocabulary_once, [this] {
      for (Index i = 0; i < rows_.dictionary().size(); ++i) {
        lazy_->vocabulary.add(rows_.dictionary().word(i));
      }
    });
    return lazy_->vocabulary;
  }
  Index dim() const { return args_.dim; }
  Index nwords() const { return rows_.nwords(); }
  Index nlabels() const { return rows_.dictionary().size() - rows_.nwords(); }
  // Entry `id` of the dictionary (a word below nwords(), a label from there on).
  std::string_view word(Index id) const {
    detail::check_indices("emb::FastText::word", IndexSpan(&id, 1), rows_.dictionary().size());
    return rows_.dictionary().word(id);
  }
  // Label i in [0, nlabels()): the names predict returns.
  std::string_view label(Index i) const {
    detail::check_indices("emb::FastText::label", IndexSpan(&i, 1), nlabels());
    return rows_.dictionary().word(nwords() + i);
  }
  // The dictionary id of a word or label, if it has one.
  std::optional<Index> find(std::string_view token) const {
    const Index id = rows_.dictionary().find(token);
    if (id < 0) return std::nullopt;
    return id;
  }
  // How often entry `id` occurred in the training text.
  std::int64_t count(Index id) const {
    detail::check_indices("emb::FastText::count", IndexSpan(&id, 1), rows_.dictionary().size());
    return rows_.dictionary().count(id);
  }
  std::int64_t ntokens() const { return ntokens_; }
  const FastTextArgs& args() const { return args_; }
  FastTextModel model() const { return args_.model; }
  FastTextLoss loss() const { return args_.loss; }
  int version() const { return version_; }
  // Whether the file's input (and output) matrix was product-quantized (a .ftz).
  bool quantized() const { return quantized_input_; }
  bool quantized_output() const { return quantized_output_; }

  // (nwords + buckets, dim), Mean mode: row i of a word, row nwords + b of n-gram bucket b
  // (for a pruned .ftz, of the b-th kept bucket).
  const EmbeddingBag<float>& input() const { return input_; }
  // dim -> output rows, no bias: one row per label (supervised) or per word; with the hs loss
  // row r scores inner node r of the tree.
  const Linear<float>& output() const { return output_; }

  // ---- words ------------------------------------------------------------------------------

  // The input rows whose mean is the word's vector: its own row when it is a known word, then
  // a row per char n-gram of "<word>" (minn to maxn whole UTF-8 characters), as fastText's
  // getSubwords. Empty for a word without either (its vector is zero).
  std::vector<Index> subword_ids(std::string_view word) const {
    std::vector<Index> ids;
    detail::FastTextScratch scratch;
    rows_.add_word(word, scratch, ids);
    return ids;
  }

  // (string, input row) of each entry of subword_ids, as print-ngrams lists them: the word
  // itself when known, then each n-gram of "<word>" (a pruned model's dropped ones left out).
  std::vector<std::pair<std::string, Index>> subwords(std::string_view word) const {
    std::vector<std::pair<std::string, Index>> out;
    const Index id = rows_.dictionary().find(word);
    if (id >= 0 && id < nwords()) out.emplace_back(std::string(word), id);
    if (word == detail::fasttext_eos) return out;
    detail::FastTextScratch scratch;
    rows_.for_each_ngram_row(word, scratch, [&](Index row, std::size_t begin, std::size_t end) {
      out.emplace_back(scratch.wrapped.substr(begin, end - begin), row);
    });
    return out;
  }

  // print-word-vectors: the mean of the subword_ids rows; zero when there are none.
  Vector<float> word_vector(std::string_view word) const {
    const std::vector<Index> ids = subword_ids(word);
    const std::vector<Index> offsets = {0};
    return pool(ids, offsets).row(0).transpose();
  }

  // The vectors of many words, row i for words[i], in one bag lookup.
  Matrix<float> word_vectors(const std::vector<std::string_view>& words) const {
    std::vector<Index> ids, offsets;
    offsets.reserve(words.size());
    detail::FastTextScratch scratch;
    for (const std::string_view w : words) {
      offsets.push_back(static_cast<Index>(ids.size()));
      rows_.add_word(w, scratch, ids);
    }
    return pool(ids, offsets);
  }
  Matrix<float> word_vectors(const std::vector<std::string>& words) const {
    return word_vectors(std::vector<std::string_view>(words.begin(), words.end()));
  }

  // ---- lines ------------------------------------------------------------------------------
  //
  // A line is tokenised as fastText reads it (blanks and NUL separate tokens) and ends with
  // "</s>"; one trailing '\n' is allowed, any other '\n' throws std::invalid_argument.

  // The input rows of a line as fastText's getLine gives them to a supervised model: each word
  // token's rows (a known word's own row, plus its n-grams when maxn > 0; an unknown word's
  // n-grams), labels skipped, "</s>", then the buckets of the word n-grams (wordNgrams > 1).
  std::vector<Index> line_ids(std::string_view line) const {
    line = one_line("emb::FastText::line_ids", line);
    std::vector<Index> ids;
    detail::FastTextScratch scratch;
    rows_.add_line(line, true, scratch, ids);
    return ids;
  }

  // print-sentence-vectors. Supervised models: the mean of line_ids' rows. Unsupervised ones:
  // the mean of the line's word vectors, each first scaled to unit length (zero ones skipped),
  // tokens split on blanks only.
  Vector<float> sentence_vector(std::string_view line) const {
    line = one_line("emb::FastText::sentence_vector", line);
    if (args_.model == FastTextModel::supervised) {
      std::vector<Index> ids;
      detail::FastTextScratch scratch;
      rows_.add_line(line, true, scratch, ids);
      const std::vector<Index> offsets = {0};
      return pool(ids, offsets).row(0).transpose();
    }
    std::vector<std::string_view> tokens;
    detail::for_each_token(line, detail::c_space, [&](std::string_view t) { tokens.push_back(t); });
    const Matrix<float> vectors = word_vectors(tokens);
    Vector<float> sum = Vector<float>::Zero(dim());
    int count = 0;
    for (Index r = 0; r < vectors.rows(); ++r) {
      const float norm = sequential_norm(vectors.row(r).data(), dim());
      if (norm > 0.0f) {
        const auto scale = static_cast<float>(1.0 / static_cast<double>(norm));
        for (Index j = 0; j < dim(); ++j) sum[j] += vectors(r, j) * scale;
        ++count;
      }
    }
    if (count > 0) sum *= static_cast<float>(1.0 / count);
    return sum;
  }

  // predict-prob for one line: up to k labels (k = -1: all) whose probability is at least
  // `threshold`, most probable first, in fastText's order. The probability is fastText's:
  // exp(log(p + 1e-5)). A line without input rows predicts nothing. Supervised models only
  // (std::invalid_argument otherwise, and for k = 0 or k < -1).
  std::vector<Prediction> predict(std::string_view line, int k = 1, float threshold = 0.0f) const {
    static constexpr const char* where = "emb::FastText::predict";
    const std::size_t keep = checked_k(where, k);
    line = one_line(where, line);
    Batch batch;
    rows_.add_line(line, true, batch.scratch, batch.ids);
    batch.offsets.push_back(0);
    std::vector<std::vector<std::pair<Index, float>>> scored;
    predict_batch(where, batch, keep, threshold, scored);
    std::vector<Prediction> out;
    out.reserve(scored[0].size());
    for (const auto& [id, p] : scored[0]) out.emplace_back(std::string(label(id)), p);
    return out;
  }

  // predict-prob for every line of `text` (lines end with '\n'; a last line without one is
  // read as fastText reads the end of a file: without "</s>"), computed a batch of lines at a
  // time with one bag lookup and one matrix product. Entry i: (label id, probability) pairs of
  // line i (label(id) names them).
  std::vector<std::vector<std::pair<Index, float>>> predict_lines(std::string_view text, int k = 1,
                                                                  float threshold = 0.0f) const {
    static constexpr const char* where = "emb::FastText::predict_lines";
    const std::size_t keep = checked_k(where, k);
    std::vector<std::vector<std::pair<Index, float>>> out;
    Batch batch;
    std::size_t pos = 0;
    while (pos < text.size()) {
      const std::size_t nl = text.find('\n', pos);
      const bool eol = nl != std::string_view::npos;
      const std::size_t end = eol ? nl : text.size();
      batch.offsets.push_back(static_cast<Index>(batch.ids.size()));
      rows_.add_line(text.substr(pos, end - pos), eol, batch.scratch, batch.ids);
      pos = eol ? nl + 1 : text.size();
      if (batch.offsets.size() == batch_lines || pos >= text.size()) {
        predict_batch(where, batch, keep, threshold, out);
        batch.ids.clear();
        batch.offsets.clear();
      }
    }
    return out;
  }

  // ---- neighbours -------------------------------------------------------------------------

  // fastText's nn: the k words whose unit-length vectors have the largest dot product with
  // word_vector(word), divided by its norm (cosine similarity), the word itself left out.
  std::vector<std::pair<std::string, float>> nearest_neighbors(std::string_view word,
                                                               int k = 10) const {
    static constexpr const char* where = "emb::FastText::nearest_neighbors";
    check_positive_k(where, k);
    return neighbours(word_vector(word), static_cast<std::size_t>(k), {word});
  }

  // fastText's analogies: the k words nearest to a/|a| - b/|b| + c/|c| (norms + 1e-8), the
  // three words left out.
  std::vector<std::pair<std::string, float>> analogies(std::string_view a, std::string_view b,
                                                       std::string_view c, int k = 10) const {
    static constexpr const char* where = "emb::FastText::analogies";
    check_positive_k(where, k);
    Vector<float> query = Vector<float>::Zero(dim());
    const std::string_view words3[3] = {a, b, c};
    const double signs[3] = {1.0, -1.0, 1.0};
    for (int i = 0; i < 3; ++i) {
      const Vector<float> v = word_vector(words3[i]);
      const auto scale = static_cast<float>(
          signs[i] / (static_cast<double>(sequential_norm(v.data(), dim())) + 1e-8));
      for (Index j = 0; j < dim(); ++j) query[j] += scale * v[j];
    }
    return neighbours(query, static_cast<std::size_t>(k), {a, b, c});
  }

 private:
  friend FastText io::detail::read_fasttext_model(io::detail::ByteSource&,
                                                  const FastTextLoadOptions&, std::size_t);

  static constexpr std::size_t batch_lines = 256;

  struct Lazy {
    std::once_flag vocabulary_once;
    Vocabulary vocabulary;
    std::once_flag unit_once;
    Matrix<float> unit;  // (nwords, dim): each word's vector at unit length (zero stays zero)
  };

  struct Batch {
    std::vector<Index> ids;
    std::vector<Index> offsets;
    detail::FastTextScratch scratch;
  };

  explicit FastText(io::detail::FastTextFile&& file)
      : version_(file.version),
        args_(convert(file.args)),
        ntokens_(file.ntokens),
        quantized_input_(file.quantized_input),
        quantized_output_(file.quantized_output),
        tree_(args_.loss == FastTextLoss::hs && args_.model == FastTextModel::supervised
                  ? label_counts(file)
                  : std::vector<std::int64_t>()),
        rows_(std::move(file.dictionary), file.nwords, file.args.minn, file.args.maxn,
              file.args.bucket, file.args.word_ngrams, file.pruned_size, std::move(file.pruned)),
        input_(EmbeddingBag<float>::from_pretrained(
            std::move(file.input), FromPretrainedBagOptions().mode(BagMode::Mean))),
        output_(Linear<float>::from_pretrained(std::move(file.output))),
        lazy_(std::make_shared<Lazy>()) {}

  static FastTextArgs convert(const io::detail::FastTextFileArgs& a) {
    FastTextArgs out;
    out.dim = a.dim;
    out.ws = a.ws;
    out.epoch = a.epoch;
    out.min_count = a.min_count;
    out.neg = a.neg;
    out.word_ngrams = a.word_ngrams;
    out.loss = static_cast<FastTextLoss>(a.loss);
    out.model = static_cast<FastTextModel>(a.model);
    out.bucket = a.bucket;
    out.minn = a.minn;
    out.maxn = a.maxn;
    out.lr_update_rate = a.lr_update_rate;
    out.t = a.t;
    return out;
  }

  // The tree of hs, built from the label counts as fastText builds it. (Unsupervised models
  // build theirs from the word counts, but only for training: they predict nothing here.)
  static std::vector<std::int64_t> label_counts(const io::detail::FastTextFile& file) {
    const auto& counts = file.dictionary.counts();
    return std::vector<std::int64_t>(counts.begin() + static_cast<std::ptrdiff_t>(file.nwords),
                                     counts.end());
  }

  // Every bag lookup of this class: the const forward (the table has no max_norm), safe from
  // several threads at once.
  Matrix<float> pool(IndexSpan ids, IndexSpan offsets) const { return input_.forward(ids, offsets); }

  static std::string_view one_line(const char* where, std::string_view line) {
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    const std::size_t nl = line.find('\n');
    if (nl != std::string_view::npos) {
      throw std::invalid_argument(detail::concat(
          where, ": the text has a newline at byte ", nl,
          "; this call takes one line (predict_lines takes many)"));
    }
    return line;
  }

  std::size_t checked_k(const char* where, int k) const {
    if (args_.model != FastTextModel::supervised) {
      throw std::invalid_argument(detail::concat(where, ": this is a ", to_string(args_.model),
                                                 " model; only supervised models predict labels"));
    }
    if (k == -1) return static_cast<std::size_t>(output_.out_features());
    if (k < 1) {
      throw std::invalid_argument(
          detail::concat(where, ": k = ", k, " is invalid; expected 1 or more, or -1 for all labels"));
    }
    return static_cast<std::size_t>(k);
  }

  static void check_positive_k(const char* where, int k) {
    if (k < 1) {
      throw std::invalid_argument(detail::concat(where, ": k = ", k, " is invalid; expected 1 or more"));
    }
  }

  // fastText's Vector::norm: a float sum of squares in order, then its square root.
  static float sequential_norm(const float* v, Index n) noexcept {
    float sum = 0.0f;
    for (Index j = 0; j < n; ++j) sum += v[j] * v[j];
    return std::sqrt(sum);
  }

  // Scores the lines of `batch` (line b: ids[offsets[b] .. offsets[b + 1])) and appends their
  // predictions to out.
  void predict_batch(const char* where, const Batch& batch, std::size_t k, float threshold,
                     std::vector<std::vector<std::pair<Index, float>>>& out) const {
    const std::size_t lines = batch.offsets.size();
    if (lines == 0) return;
    const Matrix<float> hidden = pool(batch.ids, batch.offsets);
    Matrix<float> scores;
    if (args_.loss != FastTextLoss::hs) scores = output_.forward(hidden);
    detail::FastTextHeap heap;
    std::vector<std::pair<std::int64_t, float>> stack;
    const Index labels = output_.out_features();
    for (std::size_t b = 0; b < lines; ++b) {
      auto& result = out.emplace_back();
      const Index begin = batch.offsets[b];
      const Index end = b + 1 < lines ? batch.offsets[b + 1] : static_cast<Index>(batch.ids.size());
      if (begin == end) continue;  // fastText predicts nothing for a line without input rows
      bool finite = true;
      if (args_.loss == FastTextLoss::hs) {
        const auto h = hidden.row(static_cast<Index>(b));
        finite = tree_.k_best(k, threshold,
                              [&](std::int64_t row) { return output_.weight().row(row).dot(h); },
                              heap, stack);
      } else {
        float* p = scores.row(static_cast<Index>(b)).data();
        if (args_.loss == FastTextLoss::softmax) {
          detail::fasttext_softmax(p, labels);
        } else {
          for (Index i = 0; i < labels; ++i) p[i] = detail::fasttext_sigmoid(p[i]);
        }
        for (Index i = 0; i < labels && finite; ++i) finite = p[i] == p[i];
        if (finite) detail::fasttext_k_best(p, labels, k, threshold, heap);
      }
      if (!finite) {
        throw std::runtime_error(detail::concat(
            where, ": the model computes NaN for line ", out.size() - 1,
            " of the call (its weights hold NaN or infinite values)"));
      }
      result.reserve(heap.size());
      for (const auto& [score, id] : heap) result.emplace_back(id, std::exp(score));
    }
  }

  // fastText's getNN: best first, ties in its heap order; `banned` words are skipped.
  std::vector<std::pair<std::string, float>> neighbours(
      const Vector<float>& query, std::size_t k, std::initializer_list<std::string_view> banned) const {
    std::call_once(lazy_->unit_once, [this] {
      Matrix<float>& unit = lazy_->unit;
      unit.resize(nwords(), dim());
      std::vector<std::string_view> block;
      for (Index first = 0; first < nwords(); first += 4096) {
        const Index count = std::min<Index>(4096, nwords() - first);
        block.clear();
        for (Index i = first; i < first + count; ++i) block.push_back(rows_.dictionary().word(i));
        unit.middleRows(first, count) = word_vectors(block);
      }
      for (Index i = 0; i < nwords(); ++i) {
        float* row = unit.row(i).data();
        const float norm = sequential_norm(row, dim());
        const float scale = norm > 0.0f ? static_cast<float>(1.0 / static_cast<double>(norm)) : 0.0f;
        for (Index j = 0; j < dim(); ++j) row[j] *= scale;
      }
    });
    float query_norm = sequential_norm(query.data(), dim());
    if (std::abs(query_norm) < 1e-8f) query_norm = 1.0f;
    const Vector<float> dots = lazy_->unit * query;
    std::vector<Index> skip;
    for (const std::string_view w : banned) {
      const Index id = rows_.dictionary().find(w);
      if (id >= 0 && id < nwords()) skip.push_back(id);
    }
    detail::FastTextHeap heap;
    for (Index i = 0; i < nwords(); ++i) {
      if (std::find(skip.begin(), skip.end(), i) != skip.end()) continue;
      const float similarity = dots[i] / query_norm;
      if (!(similarity == similarity)) {
        throw std::runtime_error(detail::concat(
            "emb::FastText: the similarity to '", rows_.dictionary().word(i),
            "' is NaN (the model's weights hold NaN or infinite values)"));
      }
      if (heap.size() == k && similarity < heap.front().first) continue;
      detail::fasttext_offer(heap, k, similarity, static_cast<std::int32_t>(i));
    }
    std::sort_heap(heap.begin(), heap.end(), detail::fasttext_better);
    std::vector<std::pair<std::string, float>> out;
    out.reserve(heap.size());
    for (const auto& [similarity, id] : heap) {
      out.emplace_back(std::string(rows_.dictionary().word(id)), similarity);
    }
    return out;
  }

  int version_;
  FastTextArgs args_;
  std::int64_t ntokens_;
  bool quantized_input_;
  bool quantized_output_;
  detail::FastTextTree tree_;
  detail::FastTextRows rows_;
  EmbeddingBag<float> input_;
  Linear<float> output_;
  std::shared_ptr<Lazy> lazy_;  // derived from the above, built on first use; shared by copies
};

namespace io::detail {

// The whole reader: what FastText::load runs on a file and the fuzzer on bytes in memory.
inline FastText read_fasttext_model(ByteSource& source, const FastTextLoadOptions& options,
                                    std::size_t chunk) {
  return FastText(read_fasttext(source, options.progress(), options.huge_pages(), chunk));
}

}  // namespace io::detail

}  // namespace emb
