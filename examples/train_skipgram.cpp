// Seed example 9: training moves vectors. A skip-gram model with negative sampling, built from
// emb parts — two Embedding tables, their sparse backward and SparseAdam — learns character
// vectors from a few hundred short Chinese reviews (examples/data/reviews_zh.txt). Praise uses
// 优 and 良, complaints use 差; after training, 优 and 良 are closer to each other than either
// is to 差, which at random initialisation they were not.
//
//   train_skipgram [--steps N] [--seed S] [--corpus FILE]
#include <emb/embedding.hpp>
#include <emb/optim.hpp>
#include <emb/similarity.hpp>
#include <emb/vocabulary.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using emb::Index;
using emb::Matrix;

// Splits a UTF-8 line into characters, dropping ASCII and CJK punctuation.
std::vector<std::string> characters(const std::string& line) {
  static const std::vector<std::string> punctuation = {"，", "。", "！", "？", "、", "；", "："};
  std::vector<std::string> out;
  for (std::size_t i = 0; i < line.size();) {
    const auto lead = static_cast<unsigned char>(line[i]);
    const std::size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    std::string ch = line.substr(i, len);
    i += len;
    if (len == 1) continue;  // ASCII: spaces, CR, punctuation
    if (std::find(punctuation.begin(), punctuation.end(), ch) != punctuation.end()) continue;
    out.push_back(std::move(ch));
  }
  return out;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct Args {
  int steps = 2000;
  std::uint64_t seed = 1;
  std::string corpus = std::string(EMB_EXAMPLE_DATA_DIR) + "/reviews_zh.txt";
};

Args parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--steps" && has_value) {
      args.steps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--seed" && has_value) {
      args.seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--corpus" && has_value) {
      args.corpus = argv[++i];
    } else {
      std::cerr << "usage: train_skipgram [--steps N] [--seed S] [--corpus FILE]\n";
      std::exit(2);
    }
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);

  // ---- corpus -> ids -----------------------------------------------------------------------
  std::ifstream in(args.corpus);
  if (!in) {
    std::cerr << "cannot open " << args.corpus << "\n";
    return 1;
  }
  emb::Vocabulary vocab;
  std::vector<std::vector<Index>> sentences;
  std::vector<double> freq;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<Index> ids;
    for (const auto& ch : characters(line)) {
      const Index id = vocab.add(ch);
      if (static_cast<std::size_t>(id) >= freq.size())
        freq.resize(static_cast<std::size_t>(id) + 1);
      freq[static_cast<std::size_t>(id)] += 1;
      ids.push_back(id);
    }
    if (!ids.empty()) sentences.push_back(std::move(ids));
  }
  for (const char* needed : {"优", "良", "差"}) {
    if (!vocab.contains(needed)) {
      std::cerr << "the corpus has no " << needed << "\n";
      return 1;
    }
  }

  // Every (center, context) pair within a window of 3 characters.
  constexpr std::ptrdiff_t window = 3;
  std::vector<std::pair<Index, Index>> pairs;
  for (const auto& s : sentences) {
    const auto n = static_cast<std::ptrdiff_t>(s.size());
    for (std::ptrdiff_t i = 0; i < n; ++i) {
      for (std::ptrdiff_t j = std::max<std::ptrdiff_t>(0, i - window);
           j <= std::min(n - 1, i + window); ++j) {
        if (j != i)
          pairs.emplace_back(s[static_cast<std::size_t>(i)], s[static_cast<std::size_t>(j)]);
      }
    }
  }
  // Negatives are drawn from the unigram distribution to the power 0.75, as word2vec does.
  std::vector<Index> noise;
  for (std::size_t id = 0; id < freq.size(); ++id) {
    const auto copies = static_cast<int>(std::lround(std::pow(freq[id], 0.75)));
    noise.insert(noise.end(), static_cast<std::size_t>(std::max(1, copies)),
                 static_cast<Index>(id));
  }
  std::cout << "corpus: " << sentences.size() << " reviews, " << vocab.size()
            << " distinct characters, " << pairs.size() << " (center, context) pairs\n";

  // ---- model: center vectors (the embeddings we keep) and context vectors ------------------
  constexpr Index dim = 16;
  constexpr Index negatives = 5;
  constexpr Index batch = 64;
  const Index V = vocab.size();
  emb::Embedding<float> center(emb::EmbeddingOptions(V, dim), args.seed);
  center.mutable_weight() *= 0.3f;  // smaller start: dot products do not saturate the sigmoid
  auto context = emb::Embedding<float>::from_pretrained(Matrix<float>::Zero(V, dim),
                                                        emb::FromPretrainedOptions().freeze(false));
  emb::optim::SparseAdam<float> optimizer(0.02);

  const Index you = vocab.id("优");
  const Index liang = vocab.id("良");
  const Index cha = vocab.id("差");
  const auto cos = [&](Index a, Index b) {
    return emb::cosine_similarity(center.weight().row(a), center.weight().row(b));
  };
  const double before_you_liang = cos(you, liang);
  const double before_you_cha = cos(you, cha);
  const double before_liang_cha = cos(liang, cha);
  std::printf("before: cos(优,良) = %+.3f  cos(优,差) = %+.3f  cos(良,差) = %+.3f\n",
              before_you_liang, before_you_cha, before_liang_cha);

  // ---- training ----------------------------------------------------------------------------
  std::mt19937_64 rng(args.seed);
  std::vector<Index> centers(static_cast<std::size_t>(batch));
  std::vector<Index> targets(static_cast<std::size_t>(batch * (negatives + 1)));
  Matrix<float> grad_center(batch, dim);
  Matrix<float> grad_context(batch * (negatives + 1), dim);
  const auto start = std::chrono::steady_clock::now();
  double first_loss = 0.0;
  double running = 0.0;
  int running_count = 0;
  double last_loss = 0.0;
  const int progress_every = std::max(1, args.steps / 10);
  for (int step = 1; step <= args.steps; ++step) {
    for (Index b = 0; b < batch; ++b) {
      const auto& [c, o] = pairs[rng() % pairs.size()];
      centers[static_cast<std::size_t>(b)] = c;
      targets[static_cast<std::size_t>(b * (negatives + 1))] = o;
      for (Index k = 1; k <= negatives; ++k) {
        targets[static_cast<std::size_t>(b * (negatives + 1) + k)] = noise[rng() % noise.size()];
      }
    }
    const Matrix<float> v = center.forward(centers);   // (batch, dim)
    const Matrix<float> u = context.forward(targets);  // (batch * (1 + negatives), dim)

    // Loss per pair: -log s(v.u_o) - sum_k log s(-v.u_k); d/d(score) = s(score) - label.
    double loss = 0.0;
    grad_center.setZero();
    for (Index b = 0; b < batch; ++b) {
      for (Index k = 0; k <= negatives; ++k) {
        const Index r = b * (negatives + 1) + k;
        const double score = v.row(b).dot(u.row(r));
        const double label = k == 0 ? 1.0 : 0.0;
        const double p = sigmoid(score);
        loss -= label == 1.0 ? std::log(p + 1e-12) : std::log(1.0 - p + 1e-12);
        const auto d = static_cast<float>((p - label) / static_cast<double>(batch));
        grad_center.row(b) += d * u.row(r);
        grad_context.row(r) = d * v.row(b);
      }
    }
    loss /= static_cast<double>(batch);

    optimizer.step(center, center.backward(centers, grad_center));
    optimizer.step(context, context.backward(targets, grad_context));

    if (step == 1) first_loss = loss;
    running += loss;
    ++running_count;
    if (step % progress_every == 0 || step == args.steps) {
      last_loss = running / running_count;
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("step %5d/%d  loss %.4f  (%.2f s)\n", step, args.steps, last_loss, seconds);
      std::fflush(stdout);
      running = 0.0;
      running_count = 0;
    }
  }

  // ---- results -----------------------------------------------------------------------------
  const double after_you_liang = cos(you, liang);
  const double after_you_cha = cos(you, cha);
  const double after_liang_cha = cos(liang, cha);
  std::printf("after:  cos(优,良) = %+.3f  cos(优,差) = %+.3f  cos(良,差) = %+.3f\n",
              after_you_liang, after_you_cha, after_liang_cha);
  for (const char* token : {"优", "良", "差", "满"}) {
    if (!vocab.contains(token)) continue;
    std::printf("nearest to %s:", token);
    for (const auto& n : emb::most_similar(center.weight(), vocab.id(token), 4)) {
      std::printf("  %s %.3f", vocab.token(n.id).c_str(), n.similarity);
    }
    std::printf("\n");
  }
  const auto yes = [](bool b) { return b ? "yes" : "no"; };
  std::printf("check: loss decreased: %s (%.4f -> %.4f)\n", yes(last_loss < first_loss), first_loss,
              last_loss);
  std::printf("check: cos(优,良) > cos(优,差): %s\n", yes(after_you_liang > after_you_cha));
  std::printf("check: cos(良,优) > cos(良,差): %s\n", yes(after_you_liang > after_liang_cha));
  return 0;
}
