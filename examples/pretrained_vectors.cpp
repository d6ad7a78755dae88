// Pretrained vectors: load a word2vec/fastText file, wrap it in an Embedding, look a sentence
// up through the file's vocabulary, and ask for nearest neighbours. Then move the table through
// .npy, the format PyTorch and NumPy read and write.
#include <cstdio>
#include <emb/embedding.hpp>
#include <emb/io/npy.hpp>
#include <emb/io/glove.hpp>
#include <emb/io/word2vec.hpp>
#include <emb/similarity.hpp>
#include <filesystem>
#include <string>
#include <utility>

int main(int argc, char** argv) {
  // Any word2vec (text or binary), fastText .vec file works here; GloVe through load_glove.
  const std::string path =
      argc > 1 ? argv[1] : std::string(EMB_EXAMPLE_DATA_DIR) + "/tiny_vectors.vec";
  auto vectors = emb::io::load_word2vec<float>(path);
  std::printf("loaded %lld vectors of dimension %lld (%lld duplicate tokens skipped)\n",
              static_cast<long long>(vectors.vocab.size()),
              static_cast<long long>(vectors.weight.cols()),
              static_cast<long long>(vectors.duplicates));

  // Words missing from the file map to <unk> when the file has it.
  if (vectors.vocab.contains("<unk>")) vectors.vocab.set_unk("<unk>");
  const emb::Vocabulary vocab = std::move(vectors.vocab);

  // The table takes the matrix without a copy; frozen, as pretrained tables usually are.
  auto table = emb::Embedding<float>::from_pretrained(std::move(vectors.weight));

  const std::string sentence = "the king and the queen visited paris";
  const auto ids = vocab.encode_text(sentence);
  const emb::Matrix<float> rows = table.forward(ids);
  std::printf("\"%s\"\n  ids:", sentence.c_str());
  for (const auto id : ids) std::printf(" %lld", static_cast<long long>(id));
  std::printf("\n  lookup: (%lld, %lld), frozen: %s\n", static_cast<long long>(rows.rows()),
              static_cast<long long>(rows.cols()), table.frozen() ? "yes" : "no");

  std::printf("nearest neighbours (cosine similarity):\n");
  for (const char* word : {"king", "queen", "cat", "apple", "paris"}) {
    std::printf("  %-6s ->", word);
    for (const auto& n : emb::most_similar(table.weight(), vocab.id(word), 2)) {
      std::printf(" %s (%.3f)", vocab.token(n.id).c_str(), n.similarity);
    }
    std::printf("\n");
  }

  // To PyTorch: torch.from_numpy(np.load("table.npy")). From PyTorch:
  // np.save("table.npy", embedding.weight.detach().numpy()), then load_npy as below.
  const auto npy = (std::filesystem::temp_directory_path() / "emb_pretrained_vectors.npy").string();
  emb::io::save_npy<float>(npy, table.weight());
  const emb::Matrix<float> back = emb::io::load_npy<float>(npy);
  std::filesystem::remove(npy);
  std::printf(".npy round trip: (%lld, %lld), %s\n", static_cast<long long>(back.rows()),
              static_cast<long long>(back.cols()),
              back == table.weight() ? "identical" : "DIFFERENT");
}
