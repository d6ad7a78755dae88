// Fuzzes the word2vec reader (text and binary, format detection included) through the entry
// load_word2vec itself uses.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return differential([&](std::size_t chunk) {
    emb::io::detail::MemorySource source(data, size, "fuzz.vec");
    return emb::io::detail::read_word2vec<float>(source, {}, chunk);
  });
}
