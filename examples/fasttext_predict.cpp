// fasttext_predict: what `fasttext predict-prob` prints, computed with emb.
//
//   fasttext_predict <model.bin|.ftz> <input file|-> [k] [threshold]
//   fasttext_predict --labels <model> <input|-> [k] [threshold]    (what `fasttext predict` prints)
//   --huge-pages: load the model onto 2 MiB pages (see FastTextLoadOptions::huge_pages)
//   --block N: read N bytes at a time instead of 1 MiB (the tests check that the output does
//   not depend on where blocks end)
//
// Reads the lines (a file, or stdin for "-") in large blocks and predicts a batch of lines at
// a time: one EmbeddingBag lookup and one matrix product per batch instead of fastText's
// line-by-line vector loops. Each output line is "label p label p ..." (k best labels, -1 for
// all, those below threshold left out), the probabilities printed as fastText prints them
// (6 significant digits); a line with nothing to predict gives an empty line.
//
// Without arguments it predicts the lines of the test queries with a stored test model.
#include <emb/fasttext.hpp>

#include <cerrno>
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

// A float as std::ostream prints it by default (printf's %g with 6 significant digits).
void append_float(std::string& out, float value) {
  char buf[32];
  const auto result = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::general, 6);
  out.append(buf, result.ptr);
}

void append_predictions(std::string& out, const emb::FastText& model,
                        const std::vector<std::vector<std::pair<emb::Index, float>>>& lines,
                        bool probabilities) {
  for (const auto& line : lines) {
    bool first = true;
    for (const auto& [label, p] : line) {
      if (!first) out.push_back(' ');
      first = false;
      out.append(model.label(label));
      if (probabilities) {
        out.push_back(' ');
        append_float(out, p);
      }
    }
    out.push_back('\n');
  }
}

int run(const std::string& model_path, const std::string& input, int k, float threshold,
        bool probabilities, std::size_t block, bool huge_pages) {
  const emb::FastText model =
      emb::FastText::load(model_path, emb::FastTextLoadOptions().huge_pages(huge_pages));
  std::FILE* in = input == "-" ? stdin : std::fopen(input.c_str(), "rb");
  if (in == nullptr) {
    std::cerr << "fasttext_predict: cannot open " << input << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  // The lines that end in a block are predicted at once, the rest is kept for the next block
  // (a last line without '\n' is predicted as fastText does, without its "</s>").
  std::vector<char> buffer;
  std::size_t kept = 0;
  std::string out;
  for (;;) {
    buffer.resize(kept + block);
    const std::size_t got = std::fread(buffer.data() + kept, 1, block, in);
    const std::size_t filled = kept + got;
    const bool end = got == 0;
    std::size_t cut = filled;
    if (!end) {
      while (cut > 0 && buffer[cut - 1] != '\n') --cut;
    }
    if (cut > 0) {
      out.clear();
      append_predictions(out, model,
                         model.predict_lines(std::string_view(buffer.data(), cut), k, threshold),
                         probabilities);
      std::fwrite(out.data(), 1, out.size(), stdout);
    }
    if (end) break;
    std::memmove(buffer.data(), buffer.data() + cut, filled - cut);
    kept = filled - cut;
  }
  const bool failed = std::ferror(in) != 0;
  if (in != stdin) std::fclose(in);
  if (failed) {
    std::cerr << "fasttext_predict: error reading " << input << "\n";
    return 1;
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool probabilities = true;
  std::size_t block = std::size_t{1} << 20;
  bool huge_pages = false;
  while (!args.empty() && args[0].rfind("--", 0) == 0) {
    if (args[0] == "--labels") {
      probabilities = false;
      args.erase(args.begin());
    } else if (args[0] == "--huge-pages") {
      huge_pages = true;
      args.erase(args.begin());
    } else if (args[0] == "--block" && args.size() > 1) {
      block = static_cast<std::size_t>(std::max(1L, std::stol(args[1])));
      args.erase(args.begin(), args.begin() + 2);
    } else {
      break;
    }
  }
  if (args.empty()) {
#ifdef EMB_FASTTEXT_DATA_DIR
    const std::string dir = EMB_FASTTEXT_DATA_DIR;
    args = {dir + "/sup_softmax.bin", dir + "/queries/sup_lines.txt", "2"};
#endif
  }
  if (args.size() < 2 || args.size() > 4) {
    std::cerr << "usage: fasttext_predict [--labels] [--huge-pages] [--block N] <model> <input|-> [k] [threshold]\n";
    return 2;
  }
  try {
    const int k = args.size() > 2 ? std::stoi(args[2]) : 1;
    const float threshold = args.size() > 3 ? std::stof(args[3]) : 0.0f;
    return run(args[0], args[1], k, threshold, probabilities, block, huge_pages);
  } catch (const std::exception& e) {
    std::cerr << "fasttext_predict: " << e.what() << "\n";
    return 1;
  }
}
