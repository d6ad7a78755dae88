// Fuzzes the reader of a sharded table's checkpoint manifest (emb/dist/detail/manifest.hpp): any
// input must parse or throw emb::io::FileError; a parsed manifest's shards must cover the table
// contiguously with plain file names, and what format_manifest writes for it must parse back
// to the same text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <emb/dist/detail/manifest.hpp>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace d = emb::dist::detail;
  d::Manifest m;
  try {
    emb::io::detail::MemorySource source(data, size, "manifest.txt");
    m = d::parse_manifest(source);
  } catch (const emb::io::FileError&) {
    return 0;
  }
  emb::Index covered = 0;
  for (const auto& s : m.shards) {
    if (s.row_begin != covered || s.row_end < s.row_begin || !d::plain_file_name(s.file)) {
      std::abort();
    }
    covered = s.row_end;
  }
  if (covered != m.num_embeddings) std::abort();
  const std::string text = d::format_manifest(m);
  emb::io::detail::MemorySource again(text.data(), text.size(), "manifest.txt");
  if (d::format_manifest(d::parse_manifest(again)) != text) std::abort();
  return 0;
}
