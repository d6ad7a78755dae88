// emb/dist/detail/manifest.hpp — the manifest of a sharded table's checkpoint: a small text file
// beside the shards naming the global shape, the options and the row range each .npy file
// holds, so that any number of processes can find the rows they own. No MPI needed here.
//
//   emb-sharded-table 1
//   table embedding_bag
//   dtype <f4
//   num_embeddings 1000
//   embedding_dim 16
//   padding_idx none
//   max_norm none
//   norm_type 2
//   scale_grad_by_freq false
//   mode mean
//   include_last_offset false
//   shards 2
//   shard 0 500 shard-0-of-2.npy
//   shard 500 1000 shard-1-of-2.npy
//
// One "key value" per line, each key once; mode and include_last_offset only for bags; then the
// shard lines, contiguous from row 0 to num_embeddings. File names are plain names in the
// checkpoint's directory (no path separators), so a manifest cannot point outside it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../detail/error.hpp"
#include "../../embedding_bag.hpp"
#include "../../index_span.hpp"
#include "../../io/detail/file.hpp"
#include "../../io/detail/parse.hpp"
#include "../../io/file_error.hpp"

namespace emb::dist::detail {

inline constexpr const char* manifest_file_name = "manifest.txt";
inline constexpr const char* manifest_magic = "emb-sharded-table 1";

// The file of rank `rank` of `ranks`: shard-<rank>-of-<ranks>.npy.
inline std::string shard_file_name(int rank, int ranks) {
  return emb::detail::concat("shard-", rank, "-of-", ranks, ".npy");
}

struct ShardFile {
  Index row_begin = 0;
  Index row_end = 0;
  std::string file;  // a plain name in the checkpoint's directory
};

struct Manifest {
  bool bag = false;            // "table embedding_bag" (else "embedding")
  std::string dtype = "<f4";   // what the shards hold: "<f4" or "<f8"
  Index num_embeddings = 0;
  Index embedding_dim = 0;
  std::optional<Index> padding_idx;
  std::optional<double> max_norm;
  double norm_type = 2.0;
  bool scale_grad_by_freq = false;
  BagMode mode = BagMode::Mean;      // bags only
  bool include_last_offset = false;  // bags only
  std::vector<ShardFile> shards;     // contiguous, in row order
};

inline std::string format_manifest(const Manifest& m) {
  using emb::detail::concat;
  const auto optional = [](const auto& value) {
    return value ? concat(*value) : std::string("none");
  };
  const auto boolean = [](bool value) { return std::string(value ? "true" : "false"); };
  std::string text = concat(manifest_magic, "\n",                                 //
                            "table ", m.bag ? "embedding_bag" : "embedding", "\n",  //
                            "dtype ", m.dtype, "\n",                                //
                            "num_embeddings ", m.num_embeddings, "\n",              //
                            "embedding_dim ", m.embedding_dim, "\n",                //
                            "padding_idx ", optional(m.padding_idx), "\n",          //
                            "max_norm ", optional(m.max_norm), "\n",                //
                            "norm_type ", m.norm_type, "\n",                        //
                            "scale_grad_by_freq ", boolean(m.scale_grad_by_freq), "\n");
  if (m.bag) {
    text += concat("mode ", to_string(m.mode), "\n", "include_last_offset ",
                   boolean(m.include_last_offset), "\n");
  }
  text += concat("shards ", m.shards.size(), "\n");
  for (const ShardFile& s : m.shards) {
    text += concat("shard ", s.row_begin, " ", s.row_end, " ", s.file, "\n");
  }
  return text;
}

// Written under a temporary name and renamed into place (io::detail::AtomicWriter).
inline void write_manifest(const std::string& path, const Manifest& m) {
  io::detail::AtomicWriter out(path, "emb::dist::save");
  out.write(format_manifest(m));
  out.commit();
}

// A plain file name: letters, digits, '.', '_', '-', not starting with '.'.
inline bool plain_file_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 255 || name[0] == '.') return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Reads and checks a manifest: every fault throws io::FileError naming the source, the line
// and what was expected there.
inline Manifest parse_manifest(io::detail::ByteSource& source) {
  using emb::detail::concat;
  static constexpr const char* where = "emb::dist::load";
  io::detail::Scanner scanner(source);
  std::uint64_t line_start = 0;
  const auto fail = [&](const std::string& problem) {
    throw io::FileError(where, source.name(), scanner.line_number(), line_start, problem);
  };
  const auto next = [&]() -> std::optional<std::string_view> {
    auto line = scanner.next_line(line_start);
    if (line) line = io::detail::trim_right(*line);
    return line;
  };

  auto first = next();
  if (!first || *first != manifest_magic) {
    fail(concat("expected '", manifest_magic, "' (is this a sharded table's manifest?), found '",
                io::detail::printable(first.value_or("")), "'"));
  }

  Manifest m;
  // Keys in the order written; each must appear once, the bag keys only for bags.
  enum Key { table, dtype, rows, dim, padding, max_norm, norm_type, freq, mode, last, count, keys };
  static constexpr const char* names[keys] = {
      "table", "dtype", "num_embeddings", "embedding_dim", "padding_idx", "max_norm",
      "norm_type", "scale_grad_by_freq", "mode", "include_last_offset", "shards"};
  bool seen[keys] = {};
  std::optional<Index> shard_count;
  std::optional<Index> raw_padding;

  const auto count_value = [&](std::string_view text, const char* what) -> Index {
    const auto v = io::detail::parse_count(text);
    if (!v) {
      fail(concat("expected a non-negative integer for ", what, ", found '",
                  io::detail::printable(text), "'"));
    }
    return *v;
  };
  const auto real_value = [&](std::string_view text, const char* what) -> double {
    double v = 0.0;
    io::detail::NumberStatus status{};
    const char* end = text.data() + text.size();
    if (text.empty() || io::detail::parse_real(text.data(), end, v, status) != end ||
        status != io::detail::NumberStatus::ok || !(v > 0.0)) {
      fail(concat("expected a positive number for ", what, ", found '",
                  io::detail::printable(text), "'"));
    }
    return v;
  };
  const auto bool_value = [&](std::string_view text, const char* what) -> bool {
    if (text == "true") return true;
    if (text == "false") return false;
    fail(concat("expected true or false for ", what, ", found '", io::detail::printable(text),
                "'"));
    return false;
  };

  while (!shard_count) {
    const auto line = next();
    if (!line) fail("the manifest ends before its 'shards' line");
    const std::size_t space = line->find(' ');
    const std::string_view key = line->substr(0, space);
    const std::string_view value =
        space == std::string_view::npos ? std::string_view() : line->substr(space + 1);
    int k = 0;
    while (k < keys && key != names[k]) ++k;
    if (k == keys) {
      fail(concat("unexpected key '", io::detail::printable(key), "'"));
    }
    if (seen[k]) fail(concat("key '", names[k], "' appears twice"));
    seen[k] = true;
    switch (k) {
      case table:
        if (value != "embedding" && value != "embedding_bag") {
          fail(concat("expected 'embedding' or 'embedding_bag' for table, found '",
                      io::detail::printable(value), "'"));
        }
        m.bag = value == "embedding_bag";
        break;
      case dtype:
        if (value != "<f4" && value != "<f8") {
          fail(concat("expected '<f4' or '<f8' for dtype, found '", io::detail::printable(value),
                      "'"));
        }
        m.dtype = std::string(value);
        break;
      case rows: m.num_embeddings = count_value(value, names[k]); break;
      case dim: m.embedding_dim = count_value(value, names[k]); break;
      case padding:
        if (value != "none") raw_padding = count_value(value, names[k]);
        break;
      case max_norm:
        if (value != "none") m.max_norm = real_value(value, names[k]);
        break;
      case norm_type: m.norm_type = real_value(value, names[k]); break;
      case freq: m.scale_grad_by_freq = bool_value(value, names[k]); break;
      case mode:
        if (value == "sum") {
          m.mode = BagMode::Sum;
        } else if (value == "mean") {
          m.mode = BagMode::Mean;
        } else if (value == "max") {
          m.mode = BagMode::Max;
        } else {
          fail(concat("expected sum, mean or max for mode, found '", io::detail::printable(value),
                      "'"));
        }
        break;
      case last: m.include_last_offset = bool_value(value, names[k]); break;
      case count: shard_count = count_value(value, names[k]); break;
      default: break;
    }
  }
  for (int k = 0; k < keys; ++k) {
    const bool bag_key = k == mode || k == last;
    if (!seen[k] && (!bag_key || m.bag)) fail(concat("key '", names[k], "' is missing"));
    if (seen[k] && bag_key && !m.bag) {
      fail(concat("key '", names[k], "' belongs to bags, but the table is an embedding"));
    }
  }
  if (raw_padding && *raw_padding >= m.num_embeddings) {
    fail(concat("padding_idx ", *raw_padding, " is not a row of a table of ", m.num_embeddings,
                " rows"));
  }
  m.padding_idx = raw_padding;

  Index covered = 0;
  for (Index s = 0; s < *shard_count; ++s) {
    const auto line = next();
    if (!line) {
      fail(concat("the manifest ends after ", s, " of its ", *shard_count, " shard lines"));
    }
    // shard <begin> <end> <file>
    std::string_view rest = *line;
    std::string_view fields[4];
    for (int f = 0; f < 4; ++f) {
      const std::size_t space = f < 3 ? rest.find(' ') : std::string_view::npos;
      fields[f] = rest.substr(0, space);
      rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
      if (f < 3 && space == std::string_view::npos) {
        fail(concat("expected 'shard <first row> <end row> <file>', found '",
                    io::detail::printable(*line), "'"));
      }
    }
    if (fields[0] != "shard") {
      fail(concat("expected a shard line, found '", io::detail::printable(*line), "'"));
    }
    ShardFile shard;
    shard.row_begin = count_value(fields[1], "a shard's first row");
    shard.row_end = count_value(fields[2], "a shard's end row");
    if (shard.row_begin != covered || shard.row_end < shard.row_begin ||
        shard.row_end > m.num_embeddings) {
      fail(concat("shard rows [", shard.row_begin, ", ", shard.row_end, ") do not continue from row ",
                  covered, " within the table's ", m.num_embeddings, " rows"));
    }
    if (!plain_file_name(fields[3])) {
      fail(concat("'", io::detail::printable(fields[3]),
                  "' is not a plain file name (letters, digits, '.', '_', '-')"));
    }
    shard.file = std::string(fields[3]);
    covered = shard.row_end;
    m.shards.push_back(std::move(shard));
  }
  if (covered != m.num_embeddings) {
    fail(concat("the shards cover rows [0, ", covered, ") of the table's ", m.num_embeddings));
  }
  while (const auto extra = next()) {
    if (!extra->empty()) {
      fail(concat("unexpected '", io::detail::printable(*extra), "' after the last shard line"));
    }
  }
  return m;
}

inline Manifest read_manifest(const std::string& path) {
  io::detail::FileSource source(path, "emb::dist::load");
  return parse_manifest(source);
}

}  // namespace emb::dist::detail
