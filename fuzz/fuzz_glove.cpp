// Fuzzes the GloVe reader through the entry load_glove itself uses.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return differential([&](std::size_t chunk) {
    emb::io::detail::MemorySource source(data, size, "fuzz.txt");
    return emb::io::detail::read_glove<float>(source, {}, chunk);
  });
}
