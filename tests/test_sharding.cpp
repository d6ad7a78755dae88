// The MPI-free parts of the sharded tables (emb/dist/detail): how rows split into blocks, how a
// batch is routed to the blocks' owners, and the checkpoint manifest. Expected values are
// worked out by hand, or by brute force over every row.
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <emb/dist/detail/manifest.hpp>
#include <emb/dist/detail/routing.hpp>
#include <emb/io/detail/file.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

using emb::Index;
using emb::dist::detail::BagRoute;
using emb::dist::detail::LookupRoute;
using emb::dist::detail::Manifest;
using emb::dist::detail::RowBlocks;
using emb_test::contains;
using emb_test::message_of;

namespace {

Manifest parse(const std::string& text) {
  emb::io::detail::MemorySource source(text.data(), text.size(), "manifest.txt");
  return emb::dist::detail::parse_manifest(source);
}

const std::string good_bag_manifest =
    "emb-sharded-table 1\n"
    "table embedding_bag\n"
    "dtype <f4\n"
    "num_embeddings 10\n"
    "embedding_dim 3\n"
    "padding_idx 4\n"
    "max_norm 1.5\n"
    "norm_type inf\n"
    "scale_grad_by_freq true\n"
    "mode max\n"
    "include_last_offset true\n"
    "shards 3\n"
    "shard 0 4 shard-0-of-3.npy\n"
    "shard 4 7 shard-1-of-3.npy\n"
    "shard 7 10 shard-2-of-3.npy\n";

}  // namespace

TEST_CASE("RowBlocks: 10 rows over 3 ranks are [0, 4), [4, 7), [7, 10)") {
  const RowBlocks blocks(10, 3);
  CHECK(blocks.begin(0) == 0);
  CHECK(blocks.end(0) == 4);
  CHECK(blocks.begin(1) == 4);
  CHECK(blocks.end(1) == 7);
  CHECK(blocks.begin(2) == 7);
  CHECK(blocks.end(2) == 10);
  const int owners[10] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2};
  for (Index row = 0; row < 10; ++row) CHECK(blocks.owner(row) == owners[row]);
}

TEST_CASE("RowBlocks: fewer rows than ranks leaves the last ranks empty") {
  const RowBlocks blocks(3, 4);
  CHECK(blocks.size(0) == 1);
  CHECK(blocks.size(1) == 1);
  CHECK(blocks.size(2) == 1);
  CHECK(blocks.size(3) == 0);
  CHECK(blocks.begin(3) == 3);
  CHECK(blocks.owner(2) == 2);
  const RowBlocks none(0, 2);
  CHECK(none.size(0) == 0);
  CHECK(none.size(1) == 0);
}

TEST_CASE("RowBlocks: every split is contiguous, differs by at most a row, owner agrees") {
  for (Index rows = 0; rows <= 40; ++rows) {
    for (int parts = 1; parts <= 9; ++parts) {
      CAPTURE(rows);
      CAPTURE(parts);
      const RowBlocks blocks(rows, parts);
      CHECK(blocks.begin(0) == 0);
      CHECK(blocks.end(parts - 1) == rows);
      Index smallest = rows, largest = 0;
      for (int p = 0; p < parts; ++p) {
        CHECK(blocks.end(p) >= blocks.begin(p));
        smallest = std::min(smallest, blocks.size(p));
        largest = std::max(largest, blocks.size(p));
        for (Index row = blocks.begin(p); row < blocks.end(p); ++row) {
          CHECK(blocks.owner(row) == p);
        }
      }
      CHECK(largest - smallest <= 1);
    }
  }
}

TEST_CASE("plan_lookups: ids grouped by owner in batch order, as local rows, with their slots") {
  const RowBlocks blocks(10, 3);  // [0, 4), [4, 7), [7, 10)
  const std::vector<Index> ids = {9, 0, 5, 4, 0};
  LookupRoute route;
  std::vector<int> scratch;
  emb::dist::detail::plan_lookups(blocks, ids, route, scratch);
  CHECK(route.counts == std::vector<int>{2, 2, 1});
  CHECK(route.displs == std::vector<int>{0, 2, 4});
  CHECK(route.ids == std::vector<Index>{0, 0, 1, 0, 2});
  CHECK(route.slot == std::vector<std::size_t>{4, 0, 2, 3, 1});
}

TEST_CASE("plan_bags: one partial bag per (bag, owner), padding routed but not live") {
  const RowBlocks blocks(10, 2);  // [0, 5), [5, 10)
  // bags {7, 1, 8}, {}, {3, 3}, {6 (padding), 2}
  const std::vector<Index> ids = {7, 1, 8, 3, 3, 6, 2};
  const std::vector<Index> offsets = {0, 3, 3, 5};
  BagRoute route;
  std::vector<int> scratch;
  emb::dist::detail::plan_bags(blocks, ids, offsets, 4, Index{6}, route, scratch);
  CHECK(route.id_counts == std::vector<int>{4, 3});
  CHECK(route.part_counts == std::vector<int>{3, 2});
  // Rank 0: 1 (bag 0), 3 3 (bag 2), 2 (bag 3); rank 1: 7-5, 8-5 (bag 0), 6-5 (bag 3).
  CHECK(route.ids == std::vector<Index>{1, 3, 3, 2, 2, 3, 1});
  CHECK(route.position == std::vector<std::size_t>{1, 3, 4, 6, 0, 2, 5});
  CHECK(route.part_bag == std::vector<std::size_t>{0, 2, 3, 0, 3});
  CHECK(route.part_length == std::vector<Index>{1, 2, 1, 2, 1});
  CHECK(route.part_first == std::vector<std::size_t>{0, 1, 3, 4, 6});
  CHECK(route.part_live == std::vector<Index>{1, 2, 1, 2, 0});
  CHECK(route.bag_live == std::vector<Index>{3, 0, 2, 1});
}

TEST_CASE("manifest: what format_manifest writes parses back to the same manifest") {
  const Manifest m = parse(good_bag_manifest);
  CHECK(m.bag);
  CHECK(m.dtype == "<f4");
  CHECK(m.num_embeddings == 10);
  CHECK(m.embedding_dim == 3);
  CHECK(m.padding_idx == Index{4});
  CHECK(m.max_norm == 1.5);
  CHECK(std::isinf(m.norm_type));
  CHECK(m.scale_grad_by_freq);
  CHECK(m.mode == emb::BagMode::Max);
  CHECK(m.include_last_offset);
  REQUIRE(m.shards.size() == 3);
  CHECK(m.shards[1].row_begin == 4);
  CHECK(m.shards[1].row_end == 7);
  CHECK(m.shards[1].file == "shard-1-of-3.npy");
  CHECK(emb::dist::detail::format_manifest(m) == good_bag_manifest);

  Manifest plain;
  plain.num_embeddings = 5;
  plain.embedding_dim = 2;
  plain.max_norm = 0.1;  // not exact in binary: written with 17 digits, read back exactly
  plain.shards = {{0, 5, "shard-0-of-1.npy"}};
  const Manifest back = parse(emb::dist::detail::format_manifest(plain));
  CHECK_FALSE(back.bag);
  CHECK(back.max_norm == 0.1);
  CHECK_FALSE(back.padding_idx);
  CHECK(back.norm_type == 2.0);
  CHECK(emb::dist::detail::format_manifest(back) == emb::dist::detail::format_manifest(plain));
}

TEST_CASE("manifest: every fault throws FileError naming the line and what was expected") {
  const auto replace = [](std::string text, const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    return text.replace(at, from.size(), to);
  };
  struct Bad {
    std::string text;
    const char* expected;
  };
  const std::string& good = good_bag_manifest;
  const std::vector<Bad> cases = {
      {"", "expected 'emb-sharded-table 1'"},
      {replace(good, "emb-sharded-table 1", "emb-sharded-table 2"), "line 1"},
      {replace(good, "dtype <f4\n", "dtype <f4\ncolour blue\n"), "unexpected key 'colour'"},
      {replace(good, "dtype <f4\n", "dtype <f4\ndtype <f8\n"), "key 'dtype' appears twice"},
      {replace(good, "embedding_dim 3\n", ""), "key 'embedding_dim' is missing"},
      {replace(good, "table embedding_bag", "table embedding"), "belongs to bags"},
      {replace(good, "table embedding_bag", "table lookup"), "'embedding' or 'embedding_bag'"},
      {replace(good, "dtype <f4", "dtype <i4"), "'<f4' or '<f8'"},
      {replace(good, "num_embeddings 10", "num_embeddings -10"), "non-negative integer"},
      {replace(good, "max_norm 1.5", "max_norm 0"), "positive number for max_norm"},
      {replace(good, "norm_type inf", "norm_type nan"), "positive number for norm_type"},
      {replace(good, "scale_grad_by_freq true", "scale_grad_by_freq yes"), "true or false"},
      {replace(good, "mode max", "mode median"), "sum, mean or max"},
      {replace(good, "padding_idx 4", "padding_idx 10"), "padding_idx 10 is not a row"},
      {replace(good, "shard 4 7", "shard 5 7"), "do not continue from row 4"},
      {replace(good, "shard 7 10", "shard 7 11"), "do not continue from row 7"},
      {replace(good, "shard-1-of-3.npy", "../secret.npy"), "not a plain file name"},
      {replace(good, "shard-1-of-3.npy", "dir/shard.npy"), "not a plain file name"},
      {replace(good, "shard 7 10 shard-2-of-3.npy\n", ""), "after 2 of its 3 shard lines"},
      {replace(good, "shards 3", "shards 2"), "the shards cover rows [0, 7)"},
      {replace(good, "shard 0 4", "shard 0"), "expected 'shard <first row> <end row> <file>'"},
      {replace(good, "shard 0 4", "chunk 0 4"), "expected a shard line"},
      {good + "more\n", "after the last shard line"},
      {good.substr(0, good.find("shards")), "ends before its 'shards' line"},
  };
  for (const Bad& bad : cases) {
    CAPTURE(bad.text);
    const std::string msg = message_of<emb::io::FileError>([&] { (void)parse(bad.text); });
    CHECK(contains(msg, "manifest.txt"));
    CHECK(contains(msg, bad.expected));
  }
  // Blank lines at the end and CRLF line ends are fine.
  std::string crlf;
  for (char c : good) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  CHECK(parse(crlf + "\r\n\n").shards.size() == 3);
}
