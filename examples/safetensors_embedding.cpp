// Opening a large table: write a safetensors file holding a bfloat16 token-embedding table, as a
// Hugging Face model ships one, then — as a server would — open the file, find the embedding
// tensor by its name, map it without copying, and look a few token ids up through an
// Embedding<float, bfloat16> whose rows are the file's pages.
#include <cstdio>
#include <emb/embedding.hpp>
#include <emb/io/mapped.hpp>
#include <emb/io/safetensors.hpp>
#include <emb/optim.hpp>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

int main() {
  const auto path =
      (std::filesystem::temp_directory_path() / "emb_example_model.safetensors").string();

  // --- The model's side: a 32000-token vocabulary of 64-dim rows, stored in bfloat16. ---
  const emb::Index vocab = 32000, dim = 64;
  emb::Embedding<float> trained(emb::EmbeddingOptions(vocab, dim).padding_idx(0), /*seed=*/7);
  emb::Matrix<emb::bfloat16> table = trained.weight().cast<emb::bfloat16>();  // round to nearest
  table.row(42).setConstant(emb::bfloat16(0.1f));  // 0.1 is 0.10009765625 in bfloat16
  const emb::Matrix<emb::bfloat16> norm = emb::Matrix<emb::bfloat16>::Ones(1, dim);
  emb::io::save_safetensors<emb::bfloat16>(
      path, {{"model.embed_tokens.weight", table}, {"model.norm.weight", norm}},
      {{"format", "pt"}});
  std::printf("wrote %s: %llu bytes\n", path.c_str(),
              static_cast<unsigned long long>(std::filesystem::file_size(path)));

  // --- The server's side. ---
  const auto st = emb::io::SafeTensors::open(path);
  std::printf("format: %s\n", st.metadata().at("format").c_str());
  std::string embedding;  // the token embedding: the 2-D tensor whose name says "embed"
  for (const auto& name : st.names()) {
    const auto& info = st.info(name);
    std::printf("  %-26s %-4s [", name.c_str(), info.dtype.c_str());
    for (std::size_t i = 0; i < info.shape.size(); ++i) {
      std::printf("%s%llu", i ? ", " : "", static_cast<unsigned long long>(info.shape[i]));
    }
    std::printf("]\n");
    if (info.shape.size() == 2 && info.shape[0] > 1 && name.find("embed") != std::string::npos) {
      embedding = name;
    }
  }

  // Zero-copy: the table is the file's pages, shared with any other process mapping the file.
  auto mapped = st.map<emb::bfloat16>(embedding);
  mapped.advise(emb::io::Advice::Random);  // lookups jump around: no read-ahead
  std::printf("mapped %s: (%lld, %lld) bfloat16, %.1f MiB, nothing read yet\n", embedding.c_str(),
              static_cast<long long>(mapped.rows()), static_cast<long long>(mapped.cols()),
              static_cast<double>(mapped.size_bytes()) / (1 << 20));
  // A read-only table over the mapping: lookups convert bfloat16 to float inside the copy.
  auto tokens = emb::Embedding<float, emb::bfloat16>::from_mapped(
      std::move(mapped), emb::FromPretrainedOptions().padding_idx(0));

  const std::vector<emb::Index> ids = {42, 0, 7, 31999};
  const emb::Matrix<float> rows = tokens.forward(ids);
  std::printf("lookup of %zu ids: (%lld, %lld)\n", ids.size(), static_cast<long long>(rows.rows()),
              static_cast<long long>(rows.cols()));
  std::printf("  token 42: %.11f %.11f ...\n", rows(0, 0), rows(0, 1));
  std::printf("  token 0 (padding) all zero: %s\n", rows.row(1).isZero(0) ? "yes" : "no");
  // The same values as a converted copy, and as the table that was saved.
  const emb::Matrix<float> copy = st.load<float>(embedding);
  bool same = true;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto r = static_cast<emb::Index>(i);
    same =
        same && rows.row(r) == copy.row(ids[i]) && rows.row(r) == table.row(ids[i]).cast<float>();
  }
  std::printf("  same as load<float> and as the saved table: %s\n", same ? "yes" : "no");
  try {
    (void)tokens.forward({5, 32000});
  } catch (const std::out_of_range& e) {
    std::printf("  bad id: %s\n", e.what());
  }
  // Read-only: the file can never change through the table.
  emb::optim::SGD<float> sgd(0.1);
  try {
    sgd.step(tokens, tokens.backward({42}, emb::Matrix<float>::Ones(1, dim)));
  } catch (const std::logic_error& e) {
    std::printf("  an optimizer step: %s\n", e.what());
  }
  std::filesystem::remove(path);  // the mapping keeps its pages until it is destroyed
  std::printf("after the file is removed, token 42 still reads %.11f\n",
              tokens.forward({42})(0, 0));
}
