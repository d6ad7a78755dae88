// bench_fasttext — emb's FastText against fastText's own library in the same process (when
// libfasttext is installed: Debian's libfasttext-dev), on the same model and input:
//
//   * word vectors of out-of-vocabulary words (every vector a mean of char n-gram rows):
//     emb's word_vector one word at a time, word_vectors for a batch of words in one bag
//     lookup, and fastText's getWordVector;
//   * predictions (k = 1): emb's predict_lines (a batch of lines, one bag lookup and one matrix
//     product), emb's predict one line at a time, and fastText's predictLine.
//
// Items are words or lines; bytes are the vectors produced (words) or the input text (lines).
// The whole-process comparison of target F1 (the predict-prob command against emb's example
// program) is scripts/bench_fasttext.sh, which also makes realistic models for this program:
//
//   bench_fasttext [--model=skipgram.bin] [--sup_model=supervised.bin] [--input=lines.txt]
//
// Without them it uses the small test models in tests/data/fasttext (figures then mostly
// show per-call overheads). Everything runs on one thread.
#include <emb/fasttext.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#ifdef EMB_BENCH_WITH_FASTTEXT
#include <fasttext/fasttext.h>
#endif

#include "bench_report.hpp"

namespace {

std::string g_model = std::string(EMB_BENCH_FASTTEXT_DATA) + "/skipgram.bin";
std::string g_sup_model = std::string(EMB_BENCH_FASTTEXT_DATA) + "/sup_softmax.bin";
std::string g_input = std::string(EMB_BENCH_FASTTEXT_DATA) + "/queries/sup_lines.txt";

constexpr std::size_t kWords = 4096;

struct Data {
  std::unique_ptr<emb::FastText> model, sup;
  std::vector<std::string> oov;  // words the model does not know
  std::string text;              // input lines, each ending with '\n'
  std::size_t lines = 0;
#ifdef EMB_BENCH_WITH_FASTTEXT
  std::unique_ptr<fasttext::FastText> ft_model, ft_sup;
#endif
};

Data& data() {
  static Data d = [] {
    Data out;
    out.model = std::make_unique<emb::FastText>(emb::FastText::load(g_model));
    out.sup = std::make_unique<emb::FastText>(emb::FastText::load(g_sup_model));
    // Unknown words of realistic lengths: known words with their halves swapped and a suffix,
    // so their n-grams are a mix of seen and unseen buckets.
    for (emb::Index i = 0; out.oov.size() < kWords; ++i) {
      std::string w(out.model->word(i % out.model->nwords()));
      w = w.substr(w.size() / 2) + w.substr(0, w.size() / 2) + "ing" + std::to_string(i % 7);
      if (!out.model->find(w)) out.oov.push_back(w);
    }
    std::ifstream in(g_input, std::ios::binary);
    out.text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (!out.text.empty() && out.text.back() != '\n') out.text.push_back('\n');
    for (const char c : out.text) out.lines += c == '\n';
#ifdef EMB_BENCH_WITH_FASTTEXT
    out.ft_model = std::make_unique<fasttext::FastText>();
    out.ft_model->loadModel(g_model);
    out.ft_sup = std::make_unique<fasttext::FastText>();
    out.ft_sup->loadModel(g_sup_model);
#endif
    return out;
  }();
  return d;
}

void words_done(benchmark::State& state, const emb::FastText& model) {
  const auto n = static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(kWords);
  state.SetItemsProcessed(n);
  state.SetBytesProcessed(n * model.dim() * static_cast<std::int64_t>(sizeof(float)));
}

void lines_done(benchmark::State& state, const Data& d) {
  const auto it = static_cast<std::int64_t>(state.iterations());
  state.SetItemsProcessed(it * static_cast<std::int64_t>(d.lines));
  state.SetBytesProcessed(it * static_cast<std::int64_t>(d.text.size()));
}

void oov_emb(benchmark::State& state) {
  Data& d = data();
  for (auto _ : state) {
    for (const auto& w : d.oov) benchmark::DoNotOptimize(d.model->word_vector(w).data());
  }
  words_done(state, *d.model);
}

void oov_emb_batch(benchmark::State& state) {
  Data& d = data();
  const std::vector<std::string_view> views(d.oov.begin(), d.oov.end());
  for (auto _ : state) benchmark::DoNotOptimize(d.model->word_vectors(views).data());
  words_done(state, *d.model);
}

void predict_emb_lines(benchmark::State& state) {
  Data& d = data();
  for (auto _ : state) benchmark::DoNotOptimize(d.sup->predict_lines(d.text, 1).data());
  lines_done(state, d);
}

void predict_emb_single(benchmark::State& state) {
  Data& d = data();
  std::vector<std::string_view> lines;
  std::size_t pos = 0;
  while (pos < d.text.size()) {
    const std::size_t nl = d.text.find('\n', pos);
    lines.emplace_back(d.text.data() + pos, nl - pos);
    pos = nl + 1;
  }
  for (auto _ : state) {
    for (const auto line : lines) benchmark::DoNotOptimize(d.sup->predict(line, 1).data());
  }
  lines_done(state, d);
}

#ifdef EMB_BENCH_WITH_FASTTEXT
void oov_fasttext(benchmark::State& state) {
  Data& d = data();
  fasttext::Vector vec(d.ft_model->getDimension());
  for (auto _ : state) {
    for (const auto& w : d.oov) {
      d.ft_model->getWordVector(vec, w);
      benchmark::DoNotOptimize(vec.data());
    }
  }
  words_done(state, *d.model);
}

void predict_fasttext(benchmark::State& state) {
  Data& d = data();
  std::vector<std::pair<fasttext::real, std::string>> predictions;
  for (auto _ : state) {
    std::istringstream in(d.text);
    while (d.ft_sup->predictLine(in, predictions, 1, 0.0f)) benchmark::DoNotOptimize(predictions.data());
  }
  lines_done(state, d);
}
#endif

void summarise(const std::map<std::string, bench::Result>& r) {
  const auto per_second = [&](const std::string& name, double items) -> std::string {
    const auto res = bench::find(r, name);
    if (!res || res->seconds <= 0.0) return "-";
    return bench::fixed(items / res->seconds / 1e6, 3) + " M/s";
  };
  const Data& d = data();
  std::printf("\nfastText models: %s (dim %d) for word vectors, %s (dim %d, %lld labels) for "
              "predictions, %zu input lines\n",
              g_model.c_str(), static_cast<int>(d.model->dim()), g_sup_model.c_str(),
              static_cast<int>(d.sup->dim()), static_cast<long long>(d.sup->nlabels()), d.lines);
  bench::Table table({"case", "emb", "emb batch", "fastText", "emb / fastText", "batch / fastText"});
  const auto row = [&](const char* what, const std::string& single, const std::string& batch,
                       const std::string& theirs, double items) {
    table.add({what, per_second(single, items), per_second(batch, items), per_second(theirs, items),
               bench::fixed(bench::speedup(r, single, theirs), 2, "x"),
               bench::fixed(bench::speedup(r, batch, theirs), 2, "x")});
  };
  row("OOV word vectors (words/s)", "fasttext/oov/emb_word_vector",
      "fasttext/oov/emb_word_vectors_batch", "fasttext/oov/fasttext_getWordVector", kWords);
  row("predict k=1 (lines/s)", "fasttext/predict/emb_predict", "fasttext/predict/emb_predict_lines",
      "fasttext/predict/fasttext_predictLine", static_cast<double>(d.lines));
  table.print();
  std::printf("\n");
  bench::Table verdict({"target", "measured", "goal", "verdict"});
  const auto f1 = bench::speedup(r, "fasttext/predict/emb_predict_lines",
                                 "fasttext/predict/fasttext_predictLine");
  verdict.add({"F1 predict, in one process (predict_lines / predictLine)", bench::fixed(f1, 2, "x"),
               ">= 1.5", bench::verdict(f1, 1.5, true)});
  verdict.print();
  std::printf("F1 proper compares whole processes (model load included): "
              "scripts/bench_fasttext.sh\n");
}

// --model=, --sup_model=, --input= taken out of argv before Google Benchmark sees it.
void take_paths(int& argc, char** argv) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--model=", 0) == 0) {
      g_model = arg.substr(8);
    } else if (arg.rfind("--sup_model=", 0) == 0) {
      g_sup_model = arg.substr(12);
    } else if (arg.rfind("--input=", 0) == 0) {
      g_input = arg.substr(8);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  // One thread, as fastText predicts: this program links OpenMP (for emb's threaded kernels),
  // and Eigen would otherwise spread every matrix product over all cores.
  Eigen::setNbThreads(1);
  take_paths(argc, argv);
  (void)bench::take_options(argc, argv);
  benchmark::RegisterBenchmark("fasttext/oov/emb_word_vector", oov_emb);
  benchmark::RegisterBenchmark("fasttext/oov/emb_word_vectors_batch", oov_emb_batch);
  benchmark::RegisterBenchmark("fasttext/predict/emb_predict", predict_emb_single);
  benchmark::RegisterBenchmark("fasttext/predict/emb_predict_lines", predict_emb_lines);
#ifdef EMB_BENCH_WITH_FASTTEXT
  benchmark::RegisterBenchmark("fasttext/oov/fasttext_getWordVector", oov_fasttext);
  benchmark::RegisterBenchmark("fasttext/predict/fasttext_predictLine", predict_fasttext);
#endif
  return bench::run(argc, argv, &summarise);
}
