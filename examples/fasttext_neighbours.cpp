// fasttext_neighbours: the nearest neighbours of words a fastText model has never seen.
//
//   fasttext_neighbours <model.bin> <word> [word ...]
//
// An unknown word still gets a vector: the mean of the input rows of its char n-grams
// (FastText::subwords lists them). Its neighbours are the known words whose vectors point the
// same way, what `fasttext nn` prints. Without arguments it asks a stored test model (trained
// on the licences Debian ships and some package descriptions) about three words it does not
// know and one it knows.
#include <emb/fasttext.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
#ifdef EMB_FASTTEXT_DATA_DIR
    args = {std::string(EMB_FASTTEXT_DATA_DIR) + "/skipgram.bin", "licence", "zzyzx", "gröbner",
            "software"};
#endif
  }
  if (args.size() < 2) {
    std::cerr << "usage: fasttext_neighbours <model> <word> [word ...]\n";
    return 2;
  }
  try {
    const emb::FastText model = emb::FastText::load(args[0]);
    std::cout << "model: " << model.nwords() << " words, dim " << model.dim() << ", char n-grams "
              << model.args().minn << " to " << model.args().maxn << ", " << model.args().bucket
              << " buckets\n";
    for (std::size_t i = 1; i < args.size(); ++i) {
      const std::string& word = args[i];
      const auto subwords = model.subwords(word);
      const bool known = model.find(word).has_value();
      std::cout << word << (known ? " (known word" : " (unknown word") << ", " << subwords.size()
                << " input rows:";
      for (std::size_t s = 0; s < subwords.size() && s < 4; ++s) std::cout << ' ' << subwords[s].first;
      std::cout << (subwords.size() > 4 ? " ...)\n" : ")\n");
      std::cout << "  nearest:";
      for (const auto& [neighbour, similarity] : model.nearest_neighbors(word, 5)) {
        char value[16];
        std::snprintf(value, sizeof value, "%.3f", static_cast<double>(similarity));
        std::cout << ' ' << neighbour << " (" << value << ")";
      }
      std::cout << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fasttext_neighbours: " << e.what() << "\n";
    return 1;
  }
}
