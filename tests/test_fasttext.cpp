// FastText: fastText's model files run with emb's parts.
//
// Expected values come from outside the code under test: what Debian's fasttext 0.9.2 program
// printed for the models in tests/data/fasttext/ (made by make_models.py there), values worked
// out by hand for two hand-made models, and an independent (Python) implementation of the
// hash. Printed numbers are compared within the precision fastText prints them with.
#include <emb/fasttext.hpp>

#include <doctest/doctest.h>

#include "test_util.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using emb::FastText;
using emb::FastTextLoss;
using emb::FastTextModel;
using emb::Index;
using emb::Matrix;
using emb::Vector;
using emb::io::FileError;

using emb_test::contains;
using emb_test::message_of;

namespace {

const std::string dir = std::string(EMB_TEST_DATA_DIR) + "/fasttext/";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot open " << path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    const std::size_t end = nl == std::string::npos ? text.size() : nl;
    out.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::vector<std::string> fields(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string f;
  while (in >> f) out.push_back(f);
  return out;
}

double number(const std::string& s) { return std::stod(s); }

// One unit in the last of the `digits` significant digits fastText printed `text` with.
double last_digit(const std::string& text, int digits) {
  const double v = std::abs(number(text));
  if (v == 0.0) return 0.0;
  return std::pow(10.0, std::floor(std::log10(v)) - digits + 1);
}

// emb's value agrees with what fastText printed: within a unit of the last printed digit, plus
// `slack` for float rounding (emb's mean divides where fastText multiplies by 1/n, and its
// matrix products sum in another order).
bool agrees(double value, const std::string& printed, int digits, double slack) {
  return std::abs(value - number(printed)) <= last_digit(printed, digits) + slack;
}

// The slack of a ranked value (a probability, a similarity): relative 1e-4, and 1e-7 absolute.
// hs multiplies factors 1 - f computed in float, so one float ulp of f moves a deep leaf's
// probability by up to ~2e-5 of itself (fastText's own rounding, seen on these models).
double ranked_slack(double value) { return 1e-4 * std::abs(value) + 1e-7; }

// A printed vector (after `skip` leading fields) against emb's, with fastText's 5 digits.
void check_vector(const Vector<float>& v, const std::vector<std::string>& printed,
                  std::size_t skip, const std::string& what) {
  REQUIRE_MESSAGE(printed.size() == skip + static_cast<std::size_t>(v.size()), what);
  // Sums of rows of about this size: their rounding is relative to it, not to each element.
  const double scale = std::max(1e-3, static_cast<double>(v.cwiseAbs().maxCoeff()));
  for (Index j = 0; j < v.size(); ++j) {
    const std::string& p = printed[skip + static_cast<std::size_t>(j)];
    CHECK_MESSAGE(agrees(v[j], p, 5, 2e-6 * scale),
                  what << ": element " << j << " is " << v[j] << ", fastText printed " << p);
  }
}

// emb's ranked (name, value) list against fastText's printed one: the same names in the same
// order except where two values tie within the printed precision.
void check_ranked(const std::vector<std::pair<std::string, float>>& got,
                  const std::vector<std::pair<std::string, std::string>>& want, int digits,
                  const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what << ": " << got.size() << " results, fastText "
                                                  << want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double value = got[i].second;
    const std::string& printed = want[i].second;
    CHECK_MESSAGE(agrees(value, printed, digits, ranked_slack(value)),
                  what << ": result " << i << " (" << got[i].first << ") is " << value
                       << ", fastText printed " << want[i].first << " " << printed);
    if (got[i].first != want[i].first) {
      // A different name at this rank only for a tie with fastText's own value there.
      const auto it = std::find_if(want.begin(), want.end(),
                                   [&](const auto& w) { return w.first == got[i].first; });
      const bool tie = it != want.end() && agrees(value, it->second, digits, ranked_slack(value)) &&
                       agrees(number(it->second), printed, digits, ranked_slack(value));
      CHECK_MESSAGE(tie, what << ": result " << i << " is " << got[i].first << ", fastText has "
                              << want[i].first);
    }
  }
}

// predict-prob's line "label p label p ..." as (label, printed p) pairs.
std::vector<std::pair<std::string, std::string>> printed_pairs(const std::string& line) {
  const auto f = fields(line);
  std::vector<std::pair<std::string, std::string>> out;
  for (std::size_t i = 0; i + 1 < f.size(); i += 2) out.emplace_back(f[i], f[i + 1]);
  return out;
}

std::vector<std::pair<std::string, float>> named(
    const FastText& ft, const std::vector<std::pair<Index, float>>& scored) {
  std::vector<std::pair<std::string, float>> out;
  for (const auto& [id, p] : scored) out.emplace_back(std::string(ft.label(id)), p);
  return out;
}

// predict_lines on `text` against the lines predict-prob printed for it.
void check_predict_lines(const FastText& ft, const std::string& text, int k, float threshold,
                         const std::vector<std::string>& printed, const std::string& what) {
  const auto batch = ft.predict_lines(text, k, threshold);
  REQUIRE(batch.size() == printed.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    check_ranked(named(ft, batch[i]), printed_pairs(printed[i]), 6,
                 what + " line " + std::to_string(i + 1));
  }
}

struct ModelFile {
  std::string name;  // file name in tests/data/fasttext
  std::string tag;   // prefix of its expected outputs
  bool supervised;
};

const std::vector<ModelFile> models = {
    {"sup_softmax.bin", "sup_softmax_bin", true}, {"sup_hs.bin", "sup_hs_bin", true},
    {"sup_ova.bin", "sup_ova_bin", true},         {"sup_ns.bin", "sup_ns_bin", true},
    {"sup_tags.bin", "sup_tags_bin", true},       {"skipgram.bin", "skipgram_bin", false},
    {"cbow.bin", "cbow_bin", false},              {"sup_softmax.ftz", "sup_softmax_ftz", true},
    {"sup_ova.ftz", "sup_ova_ftz", true},         {"sup_tags.ftz", "sup_tags_ftz", true},
};

std::string expected(const std::string& tag, const std::string& what) {
  return slurp(dir + "expected/" + tag + "." + what + ".txt");
}

// The bytes of a file, writable: bad files are made from good ones.
struct Bytes {
  std::string data;
  template <class T>
  void put(std::size_t offset, T value) {
    REQUIRE(offset + sizeof(T) <= data.size());
    std::memcpy(&data[offset], &value, sizeof(T));
  }
  template <class T>
  T get(std::size_t offset) const {
    T v;
    std::memcpy(&v, &data[offset], sizeof(T));
    return v;
  }
};

FastText load_bytes(const std::string& data, std::size_t chunk = std::size_t{1} << 20) {
  // A heap copy of exactly the file's size: a read past its end would be a sanitizer finding.
  std::vector<char> copy(data.begin(), data.end());
  emb::io::detail::MemorySource source(copy.data(), copy.size(), "model.bin");
  return emb::io::detail::read_fasttext_model(source, emb::FastTextLoadOptions(), chunk);
}

FileError load_error(const std::string& data) {
  try {
    (void)load_bytes(data);
  } catch (const FileError& e) {
    return e;
  }
  FAIL("loading did not throw FileError");
  return FileError("", "", 0, 0, "");
}

}  // namespace

TEST_CASE("FastText: the args and the dictionary are what fastText's dump prints") {
  for (const auto& m : models) {
    CAPTURE(m.name);
    const FastText ft = FastText::load(dir + m.name);
    const auto args = lines_of(expected(m.tag, "args"));
    std::map<std::string, std::string> want;
    for (const auto& line : args) {
      const auto f = fields(line);
      REQUIRE(f.size() == 2);
      want[f[0]] = f[1];
    }
    const auto& a = ft.args();
    CHECK(std::to_string(a.dim) == want["dim"]);
    CHECK(std::to_string(a.ws) == want["ws"]);
    CHECK(std::to_string(a.epoch) == want["epoch"]);
    CHECK(std::to_string(a.min_count) == want["minCount"]);
    CHECK(std::to_string(a.neg) == want["neg"]);
    CHECK(std::to_string(a.word_ngrams) == want["wordNgrams"]);
    CHECK(std::string(emb::to_string(a.loss)) == want["loss"]);
    CHECK(std::string(emb::to_string(a.model)) == want["model"]);
    CHECK(std::to_string(a.bucket) == want["bucket"]);
    CHECK(std::to_string(a.minn) == want["minn"]);
    CHECK(std::to_string(a.maxn) == want["maxn"]);
    CHECK(std::to_string(a.lr_update_rate) == want["lrUpdateRate"]);
    CHECK(a.t == doctest::Approx(number(want["t"])));
    CHECK(ft.dim() == a.dim);
    CHECK(ft.version() == 12);
    CHECK(ft.quantized() == (m.name.find(".ftz") != std::string::npos));
    CHECK(ft.model() == (m.supervised ? FastTextModel::supervised
                                      : (m.name == "cbow.bin" ? FastTextModel::cbow
                                                              : FastTextModel::skipgram)));

    if (m.name.find(".bin") == std::string::npos) continue;
    const auto dict = lines_of(expected(m.tag, "dict"));
    REQUIRE(std::to_string(ft.nwords() + ft.nlabels()) == dict[0]);
    const emb::Vocabulary& vocab = ft.words();
    REQUIRE(vocab.size() == ft.nwords() + ft.nlabels());
    Index words = 0;
    for (std::size_t i = 1; i < dict.size(); ++i) {
      const std::string& line = dict[i];
      const std::size_t type_at = line.rfind(' ');
      const std::size_t count_at = line.rfind(' ', type_at - 1);
      const std::string word = line.substr(0, count_at);
      const auto id = static_cast<Index>(i - 1);
      CHECK(vocab.token(id) == word);
      CHECK(std::string(ft.word(id)) == word);
      CHECK(ft.find(word) == id);
      CHECK(std::to_string(ft.count(id)) == line.substr(count_at + 1, type_at - count_at - 1));
      const std::string type = line.substr(type_at + 1);
      CHECK(type == (id < ft.nwords() ? "word" : "label"));
      if (type == "word") ++words;
      if (type == "label") CHECK(std::string(ft.label(id - ft.nwords())) == word);
    }
    CHECK(words == ft.nwords());
  }
}

TEST_CASE("FastText: word vectors are print-word-vectors' for known, rare, unknown and UTF-8 words") {
  const auto words = lines_of(slurp(dir + "queries/words.txt"));
  for (const auto& m : models) {
    CAPTURE(m.name);
    const FastText ft = FastText::load(dir + m.name);
    const auto printed = lines_of(expected(m.tag, "word_vectors"));
    REQUIRE(printed.size() == words.size());
    std::vector<std::string_view> views(words.begin(), words.end());
    const Matrix<float> all = ft.word_vectors(views);
    for (std::size_t i = 0; i < words.size(); ++i) {
      const auto f = fields(printed[i]);
      REQUIRE(f[0] == words[i]);
      const Vector<float> v = ft.word_vector(words[i]);
      check_vector(v, f, 1, m.name + " '" + words[i] + "'");
      // The batch gives each word the vector a single lookup gives.
      CHECK(emb_test::bit_identical(all.row(static_cast<Index>(i)), v.transpose()));
    }
  }
}

TEST_CASE("FastText: sentence vectors are print-sentence-vectors', supervised and unsupervised") {
  const auto sup_lines = lines_of(slurp(dir + "queries/sup_lines.txt"));
  const auto unsup_lines = lines_of(slurp(dir + "queries/unsup_lines.txt"));
  for (const auto& m : models) {
    CAPTURE(m.name);
    const FastText ft = FastText::load(dir + m.name);
    const auto& lines = m.supervised ? sup_lines : unsup_lines;
    const auto printed = lines_of(expected(m.tag, "sentence_vectors"));
    REQUIRE(printed.size() == lines.size());
    for (std::size_t i = 0; i < lines.size(); ++i) {
      check_vector(ft.sentence_vector(lines[i]), fields(printed[i]), 0,
                   m.name + " line " + std::to_string(i + 1) + " '" + lines[i] + "'");
    }
  }
}

TEST_CASE("FastText: predict gives predict-prob's labels and probabilities, in its order") {
  const std::string text = slurp(dir + "queries/sup_lines.txt");
  const auto lines = lines_of(text);
  struct Run {
    const char* file;
    int k;
    float threshold;
  };
  for (const auto& m : models) {
    if (!m.supervised) continue;
    CAPTURE(m.name);
    const FastText ft = FastText::load(dir + m.name);
    const int all = m.name.rfind("sup_tags", 0) == 0 ? 25 : -1;
    for (const Run run : {Run{"predict_k1", 1, 0.0f}, Run{"predict_k3_t0.05", 3, 0.05f},
                          Run{"predict_all", all, 0.0f}}) {
      CAPTURE(run.file);
      const auto printed = lines_of(expected(m.tag, run.file));
      REQUIRE(printed.size() == lines.size());
      check_predict_lines(ft, text, run.k, run.threshold, printed, m.name + " (predict_lines)");
      for (std::size_t i = 0; i < lines.size(); ++i) {
        check_ranked(ft.predict(lines[i], run.k, run.threshold), printed_pairs(printed[i]), 6,
                     m.name + " line " + std::to_string(i + 1) + " (predict)");
      }
    }
  }
}

TEST_CASE("FastText: a last line without a newline has no </s>, as fastText reads a file") {
  const std::string text = slurp(dir + "queries/sup_lines_no_final_newline.txt");
  REQUIRE(text.back() != '\n');
  for (const auto& m : models) {
    if (!m.supervised) continue;
    CAPTURE(m.name);
    const FastText ft = FastText::load(dir + m.name);
    check_predict_lines(ft, text, 2, 0.0f, lines_of(expected(m.tag, "predict_no_final_newline")),
                        m.name);
    // The same last line passed alone gets its </s>, as one ending with '\n' does.
    const std::string last = lines_of(text).back();
    const auto with_eos = ft.predict_lines(last + "\n", 2);
    REQUIRE(with_eos.size() == 1);
    CHECK(ft.predict(last, 2) == named(ft, with_eos[0]));
  }
}

TEST_CASE("FastText: hand-made softmax model, worked out by hand") {
  // dim 2; rows </s> (0, 0), good (2, 0), bad (0, 2); labels pos (1, 0), neg (0, 1); no
  // n-grams. A line's hidden vector is the mean of its words' rows and </s>'s.
  const FastText ft = FastText::load(dir + "tiny_softmax.bin");
  CHECK(ft.loss() == FastTextLoss::softmax);
  CHECK(ft.line_ids("good") == std::vector<Index>{1, 0});
  CHECK(ft.line_ids("bad __label__pos good unknown") == std::vector<Index>{2, 1, 0});
  CHECK(ft.line_ids("") == std::vector<Index>{0});
  CHECK(emb_test::bit_identical(ft.sentence_vector("good").transpose(),
                                emb_test::mat<float>(1, 2, {1, 0})));

  // "good": logits (1, 0): p = 1 / (1 + e^-1) and e^-1 / (1 + e^-1), printed as p + 1e-5.
  const double p = 1.0 / (1.0 + std::exp(-1.0));
  auto r = ft.predict("good", -1);
  REQUIRE(r.size() == 2);
  CHECK(r[0].first == "__label__pos");
  CHECK(r[0].second == doctest::Approx(p + 1e-5).epsilon(1e-6));
  CHECK(r[1].first == "__label__neg");
  CHECK(r[1].second == doctest::Approx(1.0 - p + 1e-5).epsilon(1e-6));
  // "bad good": equal logits, p = 0.5 each; the tie comes out in fastText's heap order, the
  // later label first.
  r = ft.predict("bad good", -1);
  REQUIRE(r.size() == 2);
  CHECK(r[0].first == "__label__neg");
  CHECK(r[1].first == "__label__pos");
  CHECK(r[0].second == doctest::Approx(0.50001).epsilon(1e-6));
  // The threshold compares the probability itself; k keeps the best.
  CHECK(ft.predict("good", -1, 0.5f).size() == 1);
  CHECK(ft.predict("good", 1).size() == 1);
  CHECK(ft.predict("good", 1, 0.9f).empty());

  check_predict_lines(ft, slurp(dir + "queries/tiny_lines.txt"), -1, 0.0f,
                      lines_of(expected("tiny_softmax_bin", "predict_all")), "tiny_softmax");
}

TEST_CASE("FastText: hand-made hs model: the Huffman tree fastText builds from label counts") {
  // Label counts 5, 3, 2: fastText's tree joins c (2) and b (3) into node 3 (left c, right
  // b), then node 3 and a (5) into the root 4 (left node 3, right a). Inner node n is scored
  // by output row n - 3: the root by row 1 = (1, 0), node 3 by row 0 = (0, 1).
  // "x": hidden (0, ln 3): f(root) = sigmoid(0) = 1/2, f(node 3) = sigmoid(ln 3) = 3/4, so
  // P(a) = 1/2, P(b) = 1/2 * 3/4, P(c) = 1/2 * 1/4, each factor printed as x + 1e-5.
  const FastText ft = FastText::load(dir + "tiny_hs.bin");
  CHECK(ft.loss() == FastTextLoss::hs);
  const auto r = ft.predict("x", -1);
  REQUIRE(r.size() == 3);
  CHECK(r[0].first == "__label__a");
  CHECK(r[0].second == doctest::Approx(0.50001).epsilon(1e-6));
  CHECK(r[1].first == "__label__b");
  CHECK(r[1].second == doctest::Approx(0.50001 * 0.75001).epsilon(1e-6));
  CHECK(r[2].first == "__label__c");
  CHECK(r[2].second == doctest::Approx(0.50001 * 0.25001).epsilon(1e-6));
  // k = 1 cuts every branch below the first leaf found; a threshold cuts branches below it.
  CHECK(ft.predict("x", 1).size() == 1);
  CHECK(ft.predict("x", -1, 0.3f).size() == 2);

  check_predict_lines(ft, slurp(dir + "queries/tiny_lines.txt"), -1, 0.0f,
                      lines_of(expected("tiny_hs_bin", "predict_all")), "tiny_hs");
}

TEST_CASE("FastText: subwords are print-ngrams' n-grams and their rows hold its vectors") {
  for (const char* name : {"sup_hs", "skipgram", "cbow"}) {
    CAPTURE(name);
    const FastText ft = FastText::load(dir + name + ".bin");
    const auto printed = lines_of(expected(std::string(name) + "_bin", "ngrams"));
    std::size_t i = 0;
    while (i < printed.size()) {
      REQUIRE(printed[i].rfind("# ", 0) == 0);
      const std::string word = printed[i].substr(2);
      ++i;
      std::vector<std::vector<std::string>> rows;
      while (i < printed.size() && printed[i].rfind("# ", 0) != 0) rows.push_back(fields(printed[i++]));
      const auto subwords = ft.subwords(word);
      const auto ids = ft.subword_ids(word);
      REQUIRE_MESSAGE(subwords.size() == rows.size(), word);
      REQUIRE(ids.size() == subwords.size());
      for (std::size_t s = 0; s < rows.size(); ++s) {
        CHECK(subwords[s].first == rows[s][0]);
        CHECK(subwords[s].second == ids[s]);
        const Vector<float> row = ft.input().weight().row(ids[s]).transpose();
        check_vector(row, rows[s], 1, std::string(name) + " '" + word + "' n-gram " + rows[s][0]);
      }
    }
  }
}

TEST_CASE("FastText: nearest_neighbors and analogies are fastText's nn and analogies") {
  const FastText ft = FastText::load(dir + "skipgram.bin");
  const auto parse = [](const std::string& text, const std::string& prompt) {
    std::vector<std::vector<std::pair<std::string, std::string>>> answers;
    std::size_t pos = text.find(prompt);
    while (pos != std::string::npos) {
      pos += prompt.size();
      const std::size_t next = text.find(prompt, pos);
      const std::string block = text.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
      if (next == std::string::npos) break;  // the prompt left waiting at the end of the input
      std::vector<std::pair<std::string, std::string>> answer;
      for (const auto& line : lines_of(block)) {
        const auto f = fields(line);
        REQUIRE(f.size() == 2);
        answer.emplace_back(f[0], f[1]);
      }
      answers.push_back(answer);
      pos = next;
    }
    return answers;
  };
  const auto nn = parse(expected("skipgram_bin", "nn"), "Query word? ");
  const std::vector<std::string> queries = {"software", "licence", "zzyzx", "gröbner"};
  REQUIRE(nn.size() == queries.size());
  for (std::size_t i = 0; i < queries.size(); ++i) {
    check_ranked(ft.nearest_neighbors(queries[i], 5), nn[i], 6, "nn " + queries[i]);
  }
  const auto an = parse(expected("skipgram_bin", "analogies"), "Query triplet (A - B + C)? ");
  REQUIRE(an.size() == 2);
  check_ranked(ft.analogies("license", "licensed", "program", 5), an[0], 6, "analogy 1");
  check_ranked(ft.analogies("game", "games", "font", 5), an[1], 6, "analogy 2");
  // The query word itself is never its own neighbour.
  for (const auto& [w, s] : ft.nearest_neighbors("software", 50)) CHECK(w != "software");
}

TEST_CASE("FastText: the output layer is fastText's dump of the output matrix") {
  for (const char* name : {"sup_softmax", "sup_hs", "sup_ova", "sup_ns", "sup_tags"}) {
    CAPTURE(name);
    const FastText ft = FastText::load(dir + name + ".bin");
    const auto printed = lines_of(expected(std::string(name) + "_bin", "output"));
    const auto shape = fields(printed[0]);
    const auto& w = ft.output().weight();
    REQUIRE(std::to_string(w.rows()) == shape[0]);
    REQUIRE(std::to_string(w.cols()) == shape[1]);
    CHECK_FALSE(ft.output().has_bias());
    for (Index r = 0; r < w.rows(); ++r) {
      const auto f = fields(printed[static_cast<std::size_t>(r) + 1]);
      REQUIRE(f.size() == static_cast<std::size_t>(w.cols()));
      for (Index j = 0; j < w.cols(); ++j) {
        // Stored values printed with 6 digits: exact to that precision.
        CHECK(agrees(w(r, j), f[static_cast<std::size_t>(j)], 6, 0.0));
      }
    }
  }
}

TEST_CASE("FastText: input() is a Mean EmbeddingBag, output() a bias-free Linear, as the model is") {
  const FastText ft = FastText::load(dir + "sup_ns.bin");
  const auto& bag = ft.input();
  CHECK(bag.mode() == emb::BagMode::Mean);
  CHECK(bag.num_embeddings() == ft.nwords() + ft.args().bucket);
  CHECK(bag.embedding_dim() == ft.dim());
  CHECK(ft.output().in_features() == ft.dim());
  CHECK(ft.output().out_features() == ft.nlabels());

  // A word vector is the bag of its subword ids; a sentence vector of a supervised model the
  // bag of the line's ids; a prediction the output layer on it (ns: sigmoid table).
  for (const char* w : {"game", "zzyzx", "日本語"}) {
    const auto ids = ft.subword_ids(w);
    CHECK(emb_test::bit_identical(bag.forward(ids, {0}), ft.word_vector(w).transpose()));
  }
  const std::string line = "free chess game for the terminal";
  const auto ids = ft.line_ids(line);
  const Matrix<float> hidden = bag.forward(ids, {0});
  CHECK(emb_test::bit_identical(hidden, ft.sentence_vector(line).transpose()));
  const Matrix<float> scores = ft.output()(hidden);
  Index best = 0;
  for (Index i = 1; i < scores.cols(); ++i) {
    if (scores(0, i) > scores(0, best)) best = i;
  }
  const auto top = ft.predict(line, 1);
  REQUIRE(top.size() == 1);
  CHECK(top[0].first == ft.label(best));
  // With char n-grams on, a known word's ids are its own row, then its n-grams' buckets.
  const auto game = ft.subword_ids("game");
  REQUIRE(ft.find("game").has_value());
  CHECK(game.front() == *ft.find("game"));
  for (std::size_t i = 1; i < game.size(); ++i) CHECK(game[i] >= ft.nwords());
}

TEST_CASE("FastText: the hash is FNV-1a over bytes widened as signed chars") {
  // Values from an independent implementation (make_models.py).
  const auto lines = lines_of(slurp(dir + "expected/hashes.txt"));
  REQUIRE(lines.size() == 10);
  for (const auto& line : lines) {
    const auto f = fields(line);
    REQUIRE(f.size() == 2);
    std::string bytes;
    if (f[0] != "-") {
      for (std::size_t i = 0; i < f[0].size(); i += 2) {
        bytes.push_back(static_cast<char>(std::stoi(f[0].substr(i, 2), nullptr, 16)));
      }
    }
    CHECK_MESSAGE(std::to_string(emb::detail::fasttext_hash(bytes)) == f[1], f[0]);
  }
}

TEST_CASE("FastText: edge cases of words and lines") {
  const FastText ft = FastText::load(dir + "skipgram.bin");  // minn 3, maxn 6
  SUBCASE("an n-gram is whole UTF-8 characters, never a lone bracket") {
    const auto s = ft.subwords("日本");  // "<日本>": 4 characters, 12 bytes
    std::vector<std::string> grams;
    for (const auto& [g, id] : s) grams.push_back(g);
    CHECK(grams == std::vector<std::string>{"<日本", "<日本>", "日本>"});
  }
  SUBCASE("</s> has no n-grams; the empty word has the n-gram <> only if minn <= 2") {
    const auto eos = ft.subword_ids("</s>");
    REQUIRE(eos.size() == 1);
    CHECK(eos[0] == *ft.find("</s>"));
    CHECK(ft.subword_ids("").empty());
    CHECK((ft.word_vector("").array() == 0.0f).all());
  }
  SUBCASE("a word with no rows has a zero vector; a line of them a zero sentence vector") {
    CHECK((ft.sentence_vector("").array() == 0.0f).all());
    CHECK((ft.sentence_vector(" \t ").array() == 0.0f).all());
  }
  SUBCASE("a label is not a word: it gets its n-grams only") {
    const FastText sup = FastText::load(dir + "sup_hs.bin");
    const auto ids = sup.subword_ids("__label__games");
    REQUIRE(sup.find("__label__games").has_value());
    for (const Index id : ids) CHECK(id >= sup.nwords());
    CHECK(ids.size() == sup.subword_ids("__label__gamez").size());
  }
  SUBCASE("one trailing newline is the end of the line; another one is refused") {
    const FastText sup = FastText::load(dir + "sup_softmax.bin");
    CHECK(sup.line_ids("a game\n") == sup.line_ids("a game"));
    CHECK(emb_test::bit_identical(sup.sentence_vector("a game\n"), sup.sentence_vector("a game")));
    const auto msg = message_of<std::invalid_argument>([&] { (void)sup.predict("a\nb"); });
    CHECK(contains(msg, "emb::FastText::predict"));
    CHECK(contains(msg, "newline at byte 1"));
    CHECK_THROWS_AS((void)sup.sentence_vector("a\n\n"), std::invalid_argument);
    CHECK_THROWS_AS((void)sup.line_ids("\nb"), std::invalid_argument);
  }
}

TEST_CASE("FastText: bad calls throw invalid_argument naming the value") {
  const FastText sup = FastText::load(dir + "sup_softmax.bin");
  const FastText unsup = FastText::load(dir + "skipgram.bin");
  auto msg = message_of<std::invalid_argument>([&] { (void)unsup.predict("a game"); });
  CHECK(contains(msg, "sg model"));
  CHECK(contains(msg, "only supervised models"));
  CHECK_THROWS_AS((void)unsup.predict_lines("a game\n"), std::invalid_argument);
  msg = message_of<std::invalid_argument>([&] { (void)sup.predict("a game", 0); });
  CHECK(contains(msg, "k = 0"));
  CHECK_THROWS_AS((void)sup.predict("a game", -2), std::invalid_argument);
  CHECK_THROWS_AS((void)sup.predict_lines("", 0), std::invalid_argument);  // even with no line
  CHECK_THROWS_AS((void)unsup.nearest_neighbors("game", 0), std::invalid_argument);
  CHECK_THROWS_AS((void)unsup.analogies("a", "b", "c", -1), std::invalid_argument);
  CHECK_THROWS_AS((void)sup.label(sup.nlabels()), std::out_of_range);
  CHECK_THROWS_AS((void)sup.word(-1), std::out_of_range);
  CHECK_THROWS_AS((void)sup.count(sup.nwords() + sup.nlabels()), std::out_of_range);
  CHECK_FALSE(sup.find("no-such-word").has_value());
  CHECK(sup.predict_lines("").empty());
}

TEST_CASE("FastText: a model computing NaN is reported, not ranked") {
  Bytes b{slurp(dir + "tiny_softmax.bin")};
  b.put<float>(194 + 2 * 4, std::nanf(""));  // input row good = (NaN, 0)
  const FastText ft = load_bytes(b.data);
  const auto msg = message_of<std::runtime_error>([&] { (void)ft.predict("good"); });
  CHECK(contains(msg, "NaN"));
  Bytes h{slurp(dir + "tiny_hs.bin")};
  h.put<float>(194 + 2 * 4, std::nanf(""));  // input row x = (NaN, 0)
  CHECK_THROWS_AS((void)load_bytes(h.data).predict("x"), std::runtime_error);
}

TEST_CASE("FastText: progress counts matrix rows up to input rows + output rows") {
  std::vector<std::pair<Index, Index>> calls;
  const FastText ft = FastText::load(
      dir + "sup_softmax.bin",
      emb::FastTextLoadOptions().progress([&](Index done, Index total) { calls.emplace_back(done, total); }));
  const Index total = ft.input().num_embeddings() + ft.output().out_features();
  REQUIRE_FALSE(calls.empty());
  CHECK(calls.back() == std::make_pair(total, total));
  for (std::size_t i = 1; i < calls.size(); ++i) CHECK(calls[i].first >= calls[i - 1].first);
}

TEST_CASE("FastText: the reader gives the same model whatever the read size") {
  for (const char* name : {"sup_softmax.ftz", "skipgram.bin"}) {
    CAPTURE(name);
    const std::string data = slurp(dir + name);
    const FastText a = load_bytes(data);
    const FastText b = load_bytes(data, 3);
    CHECK(emb_test::bit_identical(a.input().weight(), b.input().weight()));
    CHECK(emb_test::bit_identical(a.output().weight(), b.output().weight()));
    CHECK(a.words().tokens() == b.words().tokens());
  }
}

TEST_CASE("FastText: huge pages and copies change nothing in the numbers") {
  const std::string path = dir + "sup_tags.bin";
  const FastText plain = FastText::load(path);
  const FastText huge = FastText::load(path, emb::FastTextLoadOptions().huge_pages(true));
  CHECK(emb::FastTextLoadOptions().huge_pages() == false);
  CHECK(emb_test::bit_identical(plain.input().weight(), huge.input().weight()));
  CHECK(emb_test::bit_identical(plain.output().weight(), huge.output().weight()));
  const FastText copy = plain;  // a copy is an independent model with the same answers
  const std::string text = slurp(dir + "queries/sup_lines.txt");
  CHECK(copy.predict_lines(text, 3) == plain.predict_lines(text, 3));
  CHECK(copy.words().tokens() == plain.words().tokens());
  CHECK(copy.input().weight().data() != plain.input().weight().data());
}

TEST_CASE("FastText: const calls from several threads give the single-threaded results") {
  const FastText ft = FastText::load(dir + "sup_hs.bin");
  const std::string text = slurp(dir + "queries/sup_lines.txt");
  const auto reference = ft.predict_lines(text, 3);
  const auto neighbours = ft.nearest_neighbors("game", 3);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        if (ft.predict_lines(text, 3) != reference) ++mismatches;
        if (ft.nearest_neighbors("game", 3) != neighbours) ++mismatches;
        if (ft.words().size() != ft.nwords() + ft.nlabels()) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(mismatches == 0);
}

// ---- bad files -------------------------------------------------------------------------------
//
// tiny_softmax.bin, 251 bytes: magic 0, version 4, args 8..63 (dim 8, loss 32, model 36,
// bucket 40, minn 44, maxn 48), dictionary 64 (size 64, nwords 68, nlabels 72, ntokens 76,
// pruned 84), entries from 92 ("</s>" 92, count 97, type 105; "good" 106, type 119; "bad" 120;
// labels 133 and 155), quantized-input flag 177, input rows 178, cols 186, data 194..217,
// quantized-output flag 218, output rows 219, cols 227, data 235..250.

TEST_CASE("FastText: a file that is not a model, or not this version, names the offset") {
  const Bytes good{slurp(dir + "tiny_softmax.bin")};
  REQUIRE(good.data.size() == 251);
  (void)load_bytes(good.data);

  Bytes b = good;
  b.put<std::int32_t>(0, 12345);
  FileError e = load_error(b.data);
  CHECK(e.offset() == 0);
  CHECK(e.path() == "model.bin");
  CHECK(contains(e.what(), "emb::FastText::load: 'model.bin', byte 0"));
  CHECK(contains(e.what(), "magic number 793712314"));
  CHECK(contains(e.what(), "found 12345"));

  for (const std::int32_t version : {13, 10, 0, -1}) {
    b = good;
    b.put<std::int32_t>(4, version);
    e = load_error(b.data);
    CHECK(e.offset() == 4);
    CHECK(contains(e.what(), "format version " + std::to_string(version) + " is not supported"));
  }
  // Version 11 is read as fastText reads it: supervised models had no char n-grams then.
  b = good;
  b.put<std::int32_t>(48, 5);  // maxn 5 with no buckets: refused in version 12
  e = load_error(b.data);
  CHECK(e.offset() == 40);
  b.put<std::int32_t>(4, 11);
  const FastText v11 = load_bytes(b.data);
  CHECK(v11.version() == 11);
  CHECK(v11.args().maxn == 0);

  e = load_error("ab");
  CHECK(e.offset() == 0);
  CHECK(contains(e.what(), "only 2 bytes"));
  e = load_error("");
  CHECK(contains(e.what(), "only 0 bytes"));
  CHECK(contains(message_of<FileError>([&] { (void)FastText::load(dir + "missing.bin"); }),
                 "no such file"));
}

TEST_CASE("FastText: args and dictionary fields that cannot be right name their offset") {
  const Bytes good{slurp(dir + "tiny_softmax.bin")};
  struct Case {
    std::size_t offset;   // the field changed
    std::int64_t value;
    int width;            // 1, 4 or 8 bytes
    std::uint64_t where;  // the offset the error names
    const char* says;
  };
  const Case cases[] = {
      {8, 0, 4, 8, "dim is 0"},
      {32, 5, 4, 32, "loss is 5"},
      {36, 0, 4, 36, "model is 0"},
      {40, -1, 4, 40, "bucket is -1"},
      {48, 3, 4, 40, "bucket is 0, but minn 0 and maxn 3"},
      {28, 2, 4, 40, "bucket is 0, but wordNgrams 2"},
      {68, 4, 4, 64, "says 5 entries, 4 words and 2 labels"},
      {64, -1, 4, 64, "says -1 entries"},
      {84, -2, 8, 84, "pruned-bucket count is -2"},
      {97, -1, 8, 97, "has count -1"},
      {119, 1, 1, 119, "entry 1 ('good') has type 1; expected 0 (a word)"},
      {119, 7, 1, 119, "has type 7"},
      {154, 0, 1, 154, "entry 3 ('__label__pos') has type 0; expected 1 (a label)"},
      {177, 2, 1, 177, "quantized-input flag is 2"},
      {178, 4, 8, 178, "the input matrix is (4, 2); expected (3, 2)"},
      {186, 3, 8, 178, "the input matrix is (3, 3); expected (3, 2)"},
      {218, 9, 1, 218, "quantized-output flag is 9"},
      {219, 1, 8, 219, "the output matrix is (1, 2); expected (2, 2)"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.says);
    Bytes b = good;
    if (c.width == 1) b.put<std::uint8_t>(c.offset, static_cast<std::uint8_t>(c.value));
    if (c.width == 4) b.put<std::int32_t>(c.offset, static_cast<std::int32_t>(c.value));
    if (c.width == 8) b.put<std::int64_t>(c.offset, c.value);
    const FileError e = load_error(b.data);
    CHECK(e.offset() == c.where);
    CHECK_MESSAGE(contains(e.what(), c.says), e.what());
  }

  SUBCASE("a repeated word") {
    Bytes b = good;
    std::memcpy(&b.data[106], "</s>", 4);  // entry 1 becomes a second "</s>"
    const FileError e = load_error(b.data);
    CHECK(e.offset() == 106);
    CHECK(contains(e.what(), "entry 1 ('</s>') repeats entry 0"));
  }
  SUBCASE("more entries than the file can hold") {
    Bytes b = good;
    b.put<std::int32_t>(64, 1000000);
    b.put<std::int32_t>(68, 1000000);
    b.put<std::int32_t>(72, 0);
    const FileError e = load_error(b.data);
    CHECK(e.offset() == 64);
    CHECK(contains(e.what(), "more than the 159 bytes left"));
  }
  SUBCASE("a pruned dictionary without quantized matrices, as fastText refuses it") {
    Bytes b = good;
    b.put<std::int64_t>(84, 0);
    const FileError e = load_error(b.data);
    CHECK(e.offset() == 177);
    CHECK(contains(e.what(), "pruned"));
  }
  SUBCASE("bytes after the output matrix") {
    const FileError e = load_error(good.data + "x");
    CHECK(e.offset() == 251);
    CHECK(contains(e.what(), "found 1 more bytes"));
  }
  SUBCASE("a word without its NUL") {
    const FileError e = load_error(good.data.substr(0, 160));  // inside "__label__neg"
    CHECK(e.offset() == 155);
    CHECK(contains(e.what(), "no terminating NUL"));
  }
}

TEST_CASE("FastText: a file truncated anywhere throws FileError at or before its end") {
  for (const char* name : {"tiny_softmax.bin", "tiny_hs.bin", "sup_softmax.bin", "sup_softmax.ftz",
                           "sup_tags.ftz"}) {
    CAPTURE(name);
    const std::string data = slurp(dir + name);
    // Every offset of the small files; a few hundred spread over the larger ones, and the
    // last bytes of each.
    const std::size_t step = data.size() < 1000 ? 1 : data.size() / 300 + 1;
    std::vector<std::size_t> cuts;
    for (std::size_t n = 0; n < data.size(); n += step) cuts.push_back(n);
    for (std::size_t k = 1; k <= 16 && k <= data.size(); ++k) cuts.push_back(data.size() - k);
    for (const std::size_t n : cuts) {
      CAPTURE(n);
      const FileError e = load_error(data.substr(0, n));
      CHECK(e.offset() <= n);
    }
  }
}

TEST_CASE("FastText: damaged quantized matrices name the field and its offset") {
  // sup_softmax.ftz: the dictionary, then the pruned-bucket map, then the quantized input:
  // qnorm flag, rows, cols, code count, codes, product quantizer (dim, nsubq, dsub, lastdsub).
  const Bytes good{slurp(dir + "sup_softmax.ftz")};
  const FastText ft = load_bytes(good.data);
  REQUIRE(ft.quantized());
  std::size_t at = 64;
  const auto size = good.get<std::int32_t>(at);
  at = 92;
  for (std::int32_t i = 0; i < size; ++i) at = good.data.find('\0', at) + 1 + 9;
  at += static_cast<std::size_t>(good.get<std::int64_t>(84)) * 8;
  REQUIRE(good.data[at] == 1);  // quantized input
  const std::size_t qnorm_at = at + 1, rows_at = at + 2, codes_at = at + 18;
  const auto codes = static_cast<std::size_t>(good.get<std::int32_t>(codes_at));
  const std::size_t pq_at = codes_at + 4 + codes;
  REQUIRE(good.get<std::int32_t>(pq_at) == ft.dim());

  Bytes b = good;
  b.put<std::uint8_t>(qnorm_at, 3);
  FileError e = load_error(b.data);
  CHECK(e.offset() == qnorm_at);
  CHECK(contains(e.what(), "qnorm flag is 3"));

  b = good;
  b.put<std::int64_t>(rows_at, good.get<std::int64_t>(rows_at) + 1);
  e = load_error(b.data);
  CHECK(e.offset() == rows_at);

  b = good;
  b.put<std::int32_t>(codes_at, -5);
  e = load_error(b.data);
  CHECK(e.offset() == codes_at);

  b = good;
  b.put<std::int32_t>(pq_at + 4, good.get<std::int32_t>(pq_at + 4) + 1);  // nsubq
  e = load_error(b.data);
  CHECK(e.offset() == pq_at);
  CHECK(contains(e.what(), "product quantizer says dim"));

  b = good;
  b.put<std::int32_t>(pq_at + 12, good.get<std::int32_t>(pq_at + 8) + 1);  // lastdsub > dsub
  e = load_error(b.data);
  CHECK(e.offset() == pq_at);
}
