// emb/dist/mpi.hpp — tables larger than one machine: Embedding and EmbeddingBag with their rows
// sharded over the ranks of an MPI communicator. Needs MPI (it includes <mpi.h>; CMake target
// emb::mpi = emb::emb + MPI::MPI_CXX, defined when MPI is found); emb/emb.hpp does not include it.
//
//   MPI_Init(&argc, &argv);
//   emb::dist::Communicator comm;                       // MPI_COMM_WORLD
//   emb::dist::ShardedEmbeddingBag<float> table(comm, emb::EmbeddingBagOptions(n, 64), seed);
//   emb::Matrix<float> pooled = table.forward(ids, offsets);      // this rank's batch
//   emb::SparseGrad<float> g = table.backward(ids, offsets, grad); // this rank's shard's rows
//   optimizer.step(table.shard(), g);
//
// Rows are split in contiguous blocks over the ranks (row-wise sharding, as TorchRec and
// HugeCTR do it): rank r holds rows [local_row_begin(), local_row_end()) in an ordinary
// Embedding / EmbeddingBag, its shard(). Every call below is collective: every rank of the
// communicator makes it, in the same order, each with its own batch of global ids.
//
//   forward   ids go to the ranks that own their rows (MPI_Alltoallv); each owner looks its rows
//             up (for bags: pools its part of each bag) in its shard, with max_norm applied
//             there, and sends the rows back. Each rank gets what the whole table gives for
//             its batch: plain lookups bit for bit, bags to float rounding.
//   backward  gradient rows go to the owners the same way (the ids are not sent again when
//             they are those of the last forward); each owner returns its shard's row-sparse
//             gradient, in local row numbers, summed over every rank's batch (coalesced,
//             scale_grad_by_freq counting every rank's ids), for any emb::optim optimizer to
//             step the shard with.
//
// Bad input (an id out of range, bad offsets, a gradient of the wrong shape) is found by the
// rank that has it before anything is exchanged; one small MPI_Allreduce then tells every rank,
// and every rank throws the same exception, naming that rank and the value, with the table
// unchanged. No rank is left waiting in a collective.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "../detail/bag.hpp"
#include "../detail/codec.hpp"
#include "../detail/error.hpp"
#include "../detail/rng.hpp"
#include "../detail/scatter.hpp"
#include "../detail/table.hpp"
#include "../embedding.hpp"
#include "../embedding_bag.hpp"
#include "../index_span.hpp"
#include "../io/detail/file.hpp"
#include "../io/file_error.hpp"
#include "../io/npy.hpp"
#include "../options.hpp"
#include "../sparse_grad.hpp"
#include "detail/manifest.hpp"
#include "detail/routing.hpp"

namespace emb::dist {

// An MPI communicator: which processes share the tables, and this one's place among them. It
// does not own the handle (nothing is freed); MPI must be initialised while it is used.
class Communicator {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int initialised = 0, finalised = 0;
    MPI_Initialized(&initialised);
    MPI_Finalized(&finalised);
    if (!initialised || finalised) {
      throw std::logic_error(
          "emb::dist::Communicator: MPI is not initialised (call MPI_Init first) or already "
          "finalised");
    }
    if (comm == MPI_COMM_NULL) {
      throw std::invalid_argument("emb::dist::Communicator: MPI_COMM_NULL is not a communicator");
    }
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  MPI_Comm get() const noexcept { return comm_; }

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

// Bytes this rank handed to MPI for other ranks in forward and backward calls (what stays on
// the rank is not counted): the communication a step costs, to set beside the model in the
// README's "Scale" section.
struct TrafficStats {
  std::uint64_t ids = 0;      // ids to their owners, with bag lengths and per-sample weights
  std::uint64_t rows = 0;     // looked-up rows and pooled partial bags back to the callers
  std::uint64_t grads = 0;    // gradient rows to the owners
  std::uint64_t control = 0;  // counts (4 bytes per peer) and the agreement (8 bytes a call)
  std::uint64_t calls = 0;    // forward and backward calls
  std::uint64_t total() const noexcept { return ids + rows + grads + control; }
};

namespace detail {

using emb::detail::concat;

// ---- agreeing on errors -------------------------------------------------------------------

enum class Fault : std::int64_t { none, out_of_range, invalid_argument, logic_error, file, other };

// What went wrong on this rank, kept to be thrown on every rank.
struct LocalFault {
  Fault kind = Fault::none;
  std::string what;
  std::string path;  // FileError only
  std::uint64_t line = 0;
  std::uint64_t offset = 0;
};

// Runs `f`, catching what it throws: the first half of every collective call, in which each
// rank checks its own input.
template <class F>
LocalFault capture(F&& f) noexcept {
  LocalFault fault;
  try {
    f();
  } catch (const io::FileError& e) {
    fault = {Fault::file, e.what(), e.path(), e.line(), e.offset()};
  } catch (const std::out_of_range& e) {
    fault = {Fault::out_of_range, e.what(), {}, 0, 0};
  } catch (const std::invalid_argument& e) {
    fault = {Fault::invalid_argument, e.what(), {}, 0, 0};
  } catch (const std::logic_error& e) {
    fault = {Fault::logic_error, e.what(), {}, 0, 0};
  } catch (const std::exception& e) {
    fault = {Fault::other, e.what(), {}, 0, 0};
  } catch (...) {
    fault = {Fault::other, "an exception that is not a std::exception", {}, 0, 0};
  }
  return fault;
}

// The message every rank throws: "<where>: rank R of P: <what the rank found>".
[[noreturn]] inline void throw_fault(const char* where, int rank, int ranks, const LocalFault& f) {
  const std::string own = std::string(where) + ": ";
  std::string body = f.what;
  if (body.rfind(own, 0) == 0) body.erase(0, own.size());
  const std::string at = concat(where, ": rank ", rank, " of ", ranks);
  switch (f.kind) {
    case Fault::out_of_range: throw std::out_of_range(at + ": " + body);
    case Fault::invalid_argument: throw std::invalid_argument(at + ": " + body);
    case Fault::logic_error: throw std::logic_error(at + ": " + body);
    case Fault::file: {
      // FileError formats "<where>: '<path>'<place>: <problem>"; keep the problem, add the rank.
      const std::string quoted = "'" + f.path + "'";
      const std::size_t at_path = body.find(quoted);
      const std::size_t colon =
          at_path == std::string::npos ? std::string::npos : body.find(": ", at_path + quoted.size());
      const std::string problem = colon == std::string::npos ? body : body.substr(colon + 2);
      throw io::FileError(at, f.path, f.line, f.offset, problem);
    }
    default: throw std::runtime_error(at + ": " + body);
  }
}

// The second half: one MPI_Allreduce tells every rank whether any failed. If one did, the
// lowest failing rank's exception is broadcast and thrown on every rank (the same type and
// message everywhere). Otherwise returns whether `flag` holds on every rank.
inline bool agree(const Communicator& comm, const char* where, const LocalFault& fault,
                  bool flag = true) {
  int mine[2] = {fault.kind == Fault::none ? comm.size() : comm.rank(), flag ? 1 : 0};
  int all[2] = {0, 0};
  MPI_Allreduce(mine, all, 2, MPI_INT, MPI_MIN, comm.get());
  if (all[0] == comm.size()) return all[1] != 0;
  const int root = all[0];
  LocalFault f = root == comm.rank() ? fault : LocalFault{};
  std::int64_t head[5] = {static_cast<std::int64_t>(f.kind), static_cast<std::int64_t>(f.what.size()),
                          static_cast<std::int64_t>(f.path.size()),
                          static_cast<std::int64_t>(f.line), static_cast<std::int64_t>(f.offset)};
  MPI_Bcast(head, 5, MPI_INT64_T, root, comm.get());
  std::string text = f.what + f.path;
  text.resize(static_cast<std::size_t>(head[1] + head[2]));
  MPI_Bcast(text.data(), static_cast<int>(text.size()), MPI_CHAR, root, comm.get());
  f.kind = static_cast<Fault>(head[0]);
  f.what = text.substr(0, static_cast<std::size_t>(head[1]));
  f.path = text.substr(static_cast<std::size_t>(head[1]));
  f.line = static_cast<std::uint64_t>(head[3]);
  f.offset = static_cast<std::uint64_t>(head[4]);
  throw_fault(where, root, comm.size(), f);
}

// A value every rank must pass alike (an option, a root): name, value, and whether the value
// means something printed (a bit pattern does not).
struct Same {
  const char* name;
  std::int64_t value;
  bool printable = true;
};

// Throws std::invalid_argument on every rank unless every rank passed the same values.
inline void check_same(const Communicator& comm, const char* where,
                       const std::vector<Same>& values) {
  std::vector<std::int64_t> mine(values.size()), low(values.size()), high(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) mine[i] = values[i].value;
  const int n = static_cast<int>(values.size());
  MPI_Allreduce(mine.data(), low.data(), n, MPI_INT64_T, MPI_MIN, comm.get());
  MPI_Allreduce(mine.data(), high.data(), n, MPI_INT64_T, MPI_MAX, comm.get());
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (low[i] == high[i]) continue;
    throw std::invalid_argument(
        values[i].printable
            ? concat(where, ": the ranks passed different values of ", values[i].name, " (from ",
                     low[i], " to ", high[i], "); every rank must pass the same")
            : concat(where, ": the ranks passed different values of ", values[i].name,
                     "; every rank must pass the same"));
  }
}

inline std::int64_t bits_of(double value) noexcept {
  std::int64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// ---- exchanging rows ------------------------------------------------------------------------

// An MPI datatype of `bytes` contiguous bytes, so that counts and displacements are in rows:
// a batch of rows can be far larger than INT_MAX bytes.
class RowType {
 public:
  explicit RowType(std::size_t bytes) {
    MPI_Type_contiguous(static_cast<int>(bytes), MPI_BYTE, &type_);
    MPI_Type_commit(&type_);
  }
  RowType(const RowType&) = delete;
  RowType& operator=(const RowType&) = delete;
  ~RowType() { MPI_Type_free(&type_); }
  MPI_Datatype get() const noexcept { return type_; }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

inline std::uint64_t bytes_to_others(const std::vector<int>& counts, int self,
                                     std::size_t row_bytes) noexcept {
  std::uint64_t rows = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    if (static_cast<int>(r) != self) rows += static_cast<std::uint64_t>(counts[r]);
  }
  return rows * row_bytes;
}

// MPI_Alltoallv of rows of `row_bytes` bytes; returns the bytes sent to other ranks.
inline std::uint64_t exchange(const Communicator& comm, const void* send,
                              const std::vector<int>& send_counts,
                              const std::vector<int>& send_displs, void* recv,
                              const std::vector<int>& recv_counts,
                              const std::vector<int>& recv_displs, std::size_t row_bytes) {
  if (row_bytes == 0) return 0;
  const RowType type(row_bytes);
  MPI_Alltoallv(send, send_counts.data(), send_displs.data(), type.get(), recv,
                recv_counts.data(), recv_displs.data(), type.get(), comm.get());
  return bytes_to_others(send_counts, comm.rank(), row_bytes);
}

// MPI_Alltoall of `per_rank` ints to each rank.
inline std::uint64_t exchange_counts(const Communicator& comm, const std::vector<int>& send,
                                     std::vector<int>& recv, int per_rank) {
  recv.resize(send.size());
  MPI_Alltoall(send.data(), per_rank, MPI_INT, recv.data(), per_rank, MPI_INT, comm.get());
  return static_cast<std::uint64_t>(comm.size() - 1) * static_cast<std::uint64_t>(per_rank) *
         sizeof(int);
}

inline int total(const std::vector<int>& counts) noexcept {
  int sum = 0;
  for (int c : counts) sum += c;
  return sum;
}

template <class T>
void copy_row(T* dst, const T* src, Index dim) noexcept {
  if (dim != 0) std::memcpy(dst, src, static_cast<std::size_t>(dim) * sizeof(T));
}

// A batch's counts, and everything received from every rank, must stay within MPI's int counts:
// n per rank (plus one entry per bag) times the number of ranks fits in an int.
inline void check_batch_size(const char* where, std::size_t entries, int ranks) {
  const auto limit = static_cast<std::size_t>(INT_MAX / ranks);
  if (entries > limit) {
    throw std::invalid_argument(concat(where, ": a batch of ", entries,
                                       " entries is more than one call can route over ", ranks,
                                       " ranks (at most ", limit, "); split it"));
  }
}

template <class T>
constexpr const char* npy_dtype() noexcept {
  return std::is_same_v<T, float> ? "<f4" : "<f8";
}

// ---- what both sharded tables share -------------------------------------------------------

// The communicator, the global options, the blocks, this rank's shard (a Shard over its block),
// collective gather, save and load. Derived supplies the kind's name, option checks and shard.
template <class Derived, class T, class Shard, class Options>
class ShardedTable {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "sharded tables hold float or double rows");

 public:
  using Scalar = T;

  const Communicator& communicator() const noexcept { return comm_; }
  Index num_embeddings() const { return options_.num_embeddings(); }
  Index embedding_dim() const { return options_.embedding_dim(); }
  // Global row numbers, as the options gave them (normalised to [0, num_embeddings)).
  std::optional<Index> padding_idx() const { return options_.padding_idx(); }
  std::optional<double> max_norm() const { return options_.max_norm(); }
  double norm_type() const { return options_.norm_type(); }
  bool scale_grad_by_freq() const { return options_.scale_grad_by_freq(); }
  const Options& options() const noexcept { return options_; }

  // This rank's block of rows, [local_row_begin(), local_row_end()) of the global table.
  Index local_row_begin() const { return blocks_.begin(comm_.rank()); }
  Index local_row_end() const { return blocks_.end(comm_.rank()); }
  Index local_rows() const { return blocks_.size(comm_.rank()); }
  // Any rank's block, and the rank owning a global row.
  Index row_begin(int rank) const { return blocks_.begin(rank); }
  Index row_end(int rank) const { return blocks_.end(rank); }
  int owner(Index row) const {
    emb::detail::check_indices("emb::dist::owner", IndexSpan(&row, 1), num_embeddings());
    return blocks_.owner(row);
  }

  // The local shard: an ordinary table of local_rows() rows, local row k = global row
  // local_row_begin() + k, padding_idx mapped to local numbering when it falls in the block.
  // Optimizers step it (opt.step(table.shard(), grad), or opt.step(table, grad) where emb::optim
  // takes optim_table), and its weight is this rank's block.
  Shard& shard() noexcept { return shard_; }
  const Shard& shard() const noexcept { return shard_; }
  Eigen::Map<const Matrix<T>> local_weight() const { return shard_.weight(); }
  bool frozen() const { return shard_.frozen(); }
  void freeze(bool on = true) { shard_.freeze(on); }

  // Bytes sent to other ranks by forward and backward since construction or reset_traffic().
  const TrafficStats& traffic() const noexcept { return traffic_; }
  void reset_traffic() noexcept { traffic_ = {}; }

  // Collective: the whole (num_embeddings, dim) table on `root`, an empty (0, dim) matrix on the
  // other ranks. For checks and export of tables that fit one machine.
  Matrix<T> gather_weight(int root = 0) const {
    const std::string where_s = Derived::name() + std::string("::gather_weight");
    const char* where = where_s.c_str();
    const int ranks = comm_.size();
    agree(comm_, where, capture([&] {
            if (root < 0 || root >= ranks) {
              throw std::invalid_argument(concat(where, ": root ", root,
                                                 " is not a rank of the communicator (0 to ",
                                                 ranks - 1, ")"));
            }
            if (num_embeddings() > INT_MAX) {
              throw std::invalid_argument(concat(where, ": ", num_embeddings(),
                                                 " rows are more than one MPI call gathers"));
            }
          }));
    check_same(comm_, where, {{"root", root}});
    const bool here = comm_.rank() == root;
    Matrix<T> all(here ? num_embeddings() : 0, embedding_dim());
    const auto row_bytes = static_cast<std::size_t>(embedding_dim()) * sizeof(T);
    if (row_bytes == 0) return all;
    std::vector<int> counts(static_cast<std::size_t>(ranks)), displs;
    for (int r = 0; r < ranks; ++r) counts[static_cast<std::size_t>(r)] = static_cast<int>(blocks_.size(r));
    displacements(counts, displs);
    const RowType type(row_bytes);
    MPI_Gatherv(shard_.weight().data(), static_cast<int>(local_rows()), type.get(), all.data(),
                counts.data(), displs.data(), type.get(), root, comm_.get());
    return all;
  }

  // Collective checkpoint into directory `dir` (created if missing; every rank must see it, as
  // on a shared file system): each rank writes its block as shard-<rank>-of-<ranks>.npy (NumPy's
  // format: load_npy reads it), then rank 0 writes manifest.txt naming the global shape, the
  // options and each file's rows. The manifest is removed first and written last, so a save
  // that fails anywhere leaves no checkpoint that load would take. Optimizer state is not saved.
  void save(const std::string& dir) const {
    const std::string where_s = Derived::name() + std::string("::save");
    const char* where = where_s.c_str();
    namespace fs = std::filesystem;
    const fs::path base(dir);
    const bool root = comm_.rank() == 0;
    agree(comm_, where, capture([&] {
            std::error_code ec;
            fs::create_directories(base, ec);
            if (ec && !fs::is_directory(base)) {
              throw io::FileError(where, dir, 0, io::FileError::no_offset,
                                  "cannot create the directory: " + ec.message());
            }
            if (root) {
              const fs::path manifest = base / manifest_file_name;
              fs::remove(manifest, ec);
              if (ec) {
                throw io::FileError(where, manifest.string(), 0, io::FileError::no_offset,
                                    "cannot remove the old manifest: " + ec.message());
              }
            }
          }));
    agree(comm_, where, capture([&] {
            io::save_npy<T>((base / shard_file_name(comm_.rank(), comm_.size())).string(),
                            shard_.weight());
          }));
    agree(comm_, where, capture([&] {
            if (!root) return;
            Manifest m = Derived::manifest_of(options_);
            m.dtype = npy_dtype<T>();
            m.num_embeddings = num_embeddings();
            m.embedding_dim = embedding_dim();
            m.padding_idx = padding_idx();
            m.max_norm = max_norm();
            m.norm_type = norm_type();
            m.scale_grad_by_freq = scale_grad_by_freq();
            for (int r = 0; r < comm_.size(); ++r) {
              m.shards.push_back({blocks_.begin(r), blocks_.end(r), shard_file_name(r, comm_.size())});
            }
            write_manifest((base / manifest_file_name).string(), m);
          }));
  }

  // Collective: the weights of the checkpoint in `dir`, written by any number of ranks, for a
  // table of the same shape. Each rank reads only the rows it owns (seeking past the others),
  // from the files the manifest names. The table's own options stay (the checkpoint's are
  // informative), and so does optimizer state kept for the shard (opt.forget(table.shard())
  // drops it). On any fault every rank throws and no rank's table changes.
  void load(const std::string& dir) {
    const std::string where_s = Derived::name() + std::string("::load");
    const char* where = where_s.c_str();
    namespace fs = std::filesystem;
    const fs::path base(dir);
    const Index begin = local_row_begin(), end = local_row_end(), dim = embedding_dim();
    Matrix<T> block;
    agree(comm_, where, capture([&] {
            const Manifest m = read_manifest((base / manifest_file_name).string());
            if (m.num_embeddings != num_embeddings() || m.embedding_dim != dim) {
              throw std::invalid_argument(concat(
                  where, ": the checkpoint in '", dir, "' holds a (", m.num_embeddings, ", ",
                  m.embedding_dim, ") table; this table is (", num_embeddings(), ", ", dim, ")"));
            }
            block.resize(end - begin, dim);
            for (const ShardFile& s : m.shards) {
              const Index lo = std::max(begin, s.row_begin), hi = std::min(end, s.row_end);
              if (lo >= hi) continue;
              const std::string path = (base / s.file).string();
              io::detail::FileSource source(path, where);
              const io::NpyHeader header = io::detail::read_npy_header(source);
              if (header.rows != s.row_end - s.row_begin || header.cols != dim) {
                throw io::FileError(where, path, 0, io::FileError::no_offset,
                                    concat("holds a (", header.rows, ", ", header.cols,
                                           ") array; the manifest says rows [", s.row_begin,
                                           ", ", s.row_end, ") of dim ", dim));
              }
              io::detail::read_npy_rows_into(source, header, lo - s.row_begin, hi - s.row_begin,
                                             {}, block.data() + (lo - begin) * dim);
            }
          }));
    shard_.set_weight(std::move(block));
    derived().forget_route();
  }

 protected:
  ShardedTable(Communicator comm, const Options& options, std::uint64_t seed)
      : comm_(std::move(comm)),
        options_(agreed_options(comm_, options, seed)),
        blocks_(options_.num_embeddings(), comm_.size()),
        shard_(drawn_shard(seed)) {}

  Derived& derived() noexcept { return static_cast<Derived&>(*this); }

  // The options, checked on every rank, and the same on every rank.
  static Options agreed_options(const Communicator& comm, const Options& options,
                                std::uint64_t seed) {
    const std::string where = Derived::name();
    Options checked = options;
    agree(comm, where.c_str(), capture([&] {
            checked = Derived::validated(options);
            // The widest row exchanged: Max-mode backward's values and winner positions.
            const auto dim = static_cast<std::uint64_t>(checked.embedding_dim());
            if (dim > static_cast<std::uint64_t>(INT_MAX) / (sizeof(T) + 4)) {
              emb::detail::throw_bad_option(where.c_str(), "embedding_dim", concat(dim),
                                            "it is too large for one MPI row");
            }
          }));
    std::vector<Same> same = {
        {"num_embeddings", checked.num_embeddings()},
        {"embedding_dim", checked.embedding_dim()},
        {"padding_idx", checked.padding_idx().value_or(-1)},
        {"max_norm", checked.max_norm() ? bits_of(*checked.max_norm()) : 0, false},
        {"norm_type", bits_of(checked.norm_type()), false},
        {"scale_grad_by_freq", checked.scale_grad_by_freq() ? 1 : 0},
        {"seed", static_cast<std::int64_t>(seed), false}};
    Derived::add_same(checked, same);
    check_same(comm, where.c_str(), same);
    return checked;
  }

  // This rank's block of the table Embedding<T>(options, seed) draws: each row from its own
  // stream, so no rank draws (or holds) more than its block.
  Shard drawn_shard(std::uint64_t seed) {
    const Index begin = local_row_begin(), end = local_row_end(), dim = embedding_dim();
    std::optional<Shard> shard;
    agree(comm_, Derived::name(), capture([&] {
            const auto local = local_padding();
            shard.emplace(Derived::make_shard(
                options_, emb::detail::initial_weight<T, T>(end - begin, dim, local, seed, begin),
                local));
          }));
    return std::move(*shard);
  }

  // padding_idx in local numbering, when this rank owns it.
  std::optional<Index> local_padding() const {
    const auto pad = padding_idx();
    if (!pad || *pad < local_row_begin() || *pad >= local_row_end()) return std::nullopt;
    return *pad - local_row_begin();
  }

  Communicator comm_;
  Options options_;  // global, validated
  RowBlocks blocks_;
  Shard shard_;
  mutable TrafficStats traffic_;
};

}  // namespace detail

// ---- plain lookups ----------------------------------------------------------------------------

// Embedding<T> with its rows sharded over the ranks. forward(ids) of each rank's own batch of
// global ids returns what Embedding<T>(options, seed).forward(ids) would, bit for bit (max_norm
// renormalises, on their owners, the distinct rows of every rank's batch together, as one call
// over the concatenated batches would); backward returns this rank's shard's gradient over every
// rank's batch.
template <class T = float>
class ShardedEmbedding
    : public detail::ShardedTable<ShardedEmbedding<T>, T, Embedding<T>, EmbeddingOptions> {
  using Base = detail::ShardedTable<ShardedEmbedding<T>, T, Embedding<T>, EmbeddingOptions>;
  friend Base;

 public:
  // Collective: every rank passes the same options and seed (checked). The global table equals
  // Embedding<T>(options, seed)'s; this rank draws and holds only its block.
  ShardedEmbedding(Communicator comm, const EmbeddingOptions& options, std::uint64_t seed = 0)
      : Base(std::move(comm), options, seed) {}

  static constexpr const char* name() { return "emb::dist::ShardedEmbedding"; }

  // Collective: the rows of this rank's batch of global ids, (indices.size(), dim). Ids out of
  // range on any rank: std::out_of_range on every rank, naming the rank, the id and its
  // position, and nothing changes.
  Matrix<T> forward(IndexSpan indices) {
    static constexpr const char* where = "emb::dist::ShardedEmbedding::forward";
    detail::agree(this->comm_, where, detail::capture([&] { check_ids(where, indices); }));
    last_valid_ = false;
    route(indices, last_);
    ++this->traffic_.calls;
    this->traffic_.control += 8;
    const Index dim = this->embedding_dim();
    // The owner's part: its shard looks up (and renormalises) the rows every rank asked for.
    const Matrix<T> found = this->shard_.forward(IndexSpan(last_.recv_ids));
    Matrix<T> back(static_cast<Index>(indices.size()), dim);
    this->traffic_.rows += detail::exchange(this->comm_, found.data(), last_.recv_counts,
                                            last_.recv_displs, back.data(), last_.route.counts,
                                            last_.route.displs, row_bytes());
    Matrix<T> out(static_cast<Index>(indices.size()), dim);
    for (std::size_t i = 0; i < indices.size(); ++i) {
      detail::copy_row(out.data() + static_cast<Index>(i) * dim,
                       back.data() + static_cast<Index>(last_.route.slot[i]) * dim, dim);
    }
    last_indices_.assign(indices.begin(), indices.end());
    last_valid_ = true;
    return out;
  }

  Matrix<T> operator()(IndexSpan indices) { return forward(indices); }

  // Collective: the gradient of this rank's shard (local row numbers, num_embeddings =
  // local_rows()) given every rank's batch and the gradient of its forward output,
  // (indices.size(), dim). Row-sparse and coalesced, padding excluded, scale_grad_by_freq
  // counting each id over every rank's batch. When every rank passes the ids of its last
  // forward, they are not sent again.
  SparseGrad<T> backward(IndexSpan indices, const Eigen::Ref<const Matrix<T>>& grad_output) {
    static constexpr const char* where = "emb::dist::ShardedEmbedding::backward";
    const Index dim = this->embedding_dim();
    const bool same = last_valid_ && indices.size() == last_indices_.size() &&
                      std::equal(indices.begin(), indices.end(), last_indices_.begin());
    const bool reuse = detail::agree(this->comm_, where, detail::capture([&] {
                                       emb::detail::check_shape(
                                           where, "grad_output", static_cast<Index>(indices.size()),
                                           dim, grad_output.rows(), grad_output.cols());
                                       check_ids(where, indices);
                                     }),
                                     same);
    ++this->traffic_.calls;
    this->traffic_.control += 8;
    Routed fresh;
    if (!reuse) route(indices, fresh);
    const Routed& r = reuse ? last_ : fresh;
    Matrix<T> send(static_cast<Index>(indices.size()), dim);
    for (std::size_t i = 0; i < indices.size(); ++i) {
      detail::copy_row(send.data() + static_cast<Index>(r.route.slot[i]) * dim,
                       grad_output.data() + static_cast<Index>(i) * grad_output.outerStride(),
                       dim);
    }
    Matrix<T> received(static_cast<Index>(r.recv_ids.size()), dim);
    this->traffic_.grads += detail::exchange(this->comm_, send.data(), r.route.counts,
                                             r.route.displs, received.data(), r.recv_counts,
                                             r.recv_displs, row_bytes());
    return this->shard_.backward(IndexSpan(r.recv_ids), received);
  }

 private:
  // One batch's ids at their owners: the sender's route and what the owner received.
  struct Routed {
    detail::LookupRoute route;
    std::vector<int> recv_counts, recv_displs;
    std::vector<Index> recv_ids;  // local rows, from rank 0's batch first
  };

  static EmbeddingOptions validated(const EmbeddingOptions& options) {
    return emb::detail::validated_table_options(options, name());
  }
  static void add_same(const EmbeddingOptions&, std::vector<detail::Same>&) {}
  static Embedding<T> make_shard(const EmbeddingOptions& global, Matrix<T>&& block,
                                 std::optional<Index> local_padding) {
    return Embedding<T>::from_pretrained(std::move(block),
                                         FromPretrainedOptions()
                                             .freeze(false)
                                             .padding_idx(local_padding)
                                             .max_norm(global.max_norm())
                                             .norm_type(global.norm_type())
                                             .scale_grad_by_freq(global.scale_grad_by_freq()));
  }
  static detail::Manifest manifest_of(const EmbeddingOptions&) { return {}; }
  void forget_route() { last_valid_ = false; }

  std::size_t row_bytes() const {
    return static_cast<std::size_t>(this->embedding_dim()) * sizeof(T);
  }

  void check_ids(const char* where, IndexSpan indices) const {
    detail::check_batch_size(where, indices.size(), this->comm_.size());
    emb::detail::check_indices(where, indices, this->num_embeddings());
  }

  // Collective: sends each id to its owner (the counts first, then the ids).
  void route(IndexSpan indices, Routed& r) {
    detail::plan_lookups(this->blocks_, indices, r.route, owners_);
    this->traffic_.control += detail::exchange_counts(this->comm_, r.route.counts, r.recv_counts, 1);
    detail::displacements(r.recv_counts, r.recv_displs);
    r.recv_ids.resize(static_cast<std::size_t>(detail::total(r.recv_counts)));
    this->traffic_.ids += detail::exchange(this->comm_, r.route.ids.data(), r.route.counts,
                                           r.route.displs, r.recv_ids.data(), r.recv_counts,
                                           r.recv_displs, sizeof(Index));
  }

  Routed last_;  // the last forward's routing, for its backward
  bool last_valid_ = false;
  std::vector<Index> last_indices_;
  std::vector<int> owners_;
};

// ---- bags -------------------------------------------------------------------------------------

// EmbeddingBag<T> with its rows sharded over the ranks. Each rank passes its own bags (global
// ids and offsets, per_sample_weights in Sum mode); each owner pools its part of every bag and
// sends one partial row per (bag, owner) back, which the caller combines: sums add, Mean divides
// the sum by the whole bag's non-padding count, Max takes the element-wise max (ties to the
// earliest entry, as one process does). Results equal EmbeddingBag<T>(options, seed)'s to float
// rounding (a sum may be split between ranks); gradients likewise.
//
// The shard is an EmbeddingBag over the block in Sum mode for Sum and Mean tables (an owner
// holds part of a bag, so the Mean divisor is applied by the caller) and in Max mode for Max.
template <class T = float>
class ShardedEmbeddingBag
    : public detail::ShardedTable<ShardedEmbeddingBag<T>, T, EmbeddingBag<T>, EmbeddingBagOptions> {
  using Base = detail::ShardedTable<ShardedEmbeddingBag<T>, T, EmbeddingBag<T>, EmbeddingBagOptions>;
  friend Base;

 public:
  ShardedEmbeddingBag(Communicator comm, const EmbeddingBagOptions& options,
                      std::uint64_t seed = 0)
      : Base(std::move(comm), options, seed) {}

  static constexpr const char* name() { return "emb::dist::ShardedEmbeddingBag"; }

  BagMode mode() const { return this->options_.mode(); }
  bool include_last_offset() const { return this->options_.include_last_offset(); }

  // Collective: (B, dim), one pooled row per bag of this rank's batch. Bad ids, offsets or
  // per_sample_weights on any rank: every rank throws (std::out_of_range for ids,
  // std::invalid_argument for the rest), naming that rank and the value.
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets) {
    return pool(indices, offsets, include_last_offset(), nullptr);
  }
  // Sum mode only: bag b = sum of per_sample_weights[i] * W[indices[i]].
  Matrix<T> forward(IndexSpan indices, IndexSpan offsets, const Vector<T>& per_sample_weights) {
    return pool(indices, offsets, include_last_offset(), &per_sample_weights);
  }
  Matrix<T> operator()(IndexSpan indices, IndexSpan offsets) { return forward(indices, offsets); }
  // Fixed-length bags: a (B, L) matrix, one bag per row (offsets are not used).
  Matrix<T> forward(const Matrix<Index>& input) {
    const auto offsets = fixed_offsets(input);
    return pool(input, offsets, false, nullptr);
  }

  // Collective: this rank's shard's gradient (local row numbers) over every rank's bags, given
  // the gradient of this rank's forward output (B, dim). Sum / Mean: every distinct non-padding
  // id; Max: the rows that won an output element, recomputed from the current table (call it
  // before an optimizer step changes the table).
  SparseGrad<T> backward(IndexSpan indices, IndexSpan offsets,
                         const Eigen::Ref<const Matrix<T>>& grad_output) {
    return gradient(indices, offsets, include_last_offset(), grad_output, nullptr);
  }
  SparseGrad<T> backward(IndexSpan indices, IndexSpan offsets,
                         const Eigen::Ref<const Matrix<T>>& grad_output,
                         const Vector<T>& per_sample_weights) {
    return gradient(indices, offsets, include_last_offset(), grad_output, &per_sample_weights);
  }
  SparseGrad<T> backward(const Matrix<Index>& input,
                         const Eigen::Ref<const Matrix<T>>& grad_output) {
    const auto offsets = fixed_offsets(input);
    return gradient(input, offsets, false, grad_output, nullptr);
  }

 private:
  // One batch's bags at their owners: the sender's route and what the owner received.
  struct Routed {
    detail::BagRoute route;
    std::vector<int> recv_id_counts, recv_part_counts;
    std::vector<int> recv_id_displs, recv_part_displs;
    std::vector<Index> recv_ids;      // local rows, from rank 0's batch first
    std::vector<Index> recv_offsets;  // where each received partial bag starts in recv_ids
    Vector<T> recv_psw;               // per received id, when per_sample_weights were given
    bool has_psw = false;
  };

  static constexpr const char* forward_name = "emb::dist::ShardedEmbeddingBag::forward";
  static constexpr const char* backward_name = "emb::dist::ShardedEmbeddingBag::backward";

  static EmbeddingBagOptions validated(const EmbeddingBagOptions& options) {
    EmbeddingBagOptions checked = emb::detail::validated_table_options(options, name());
    const BagMode m = checked.mode();
    if (m != BagMode::Sum && m != BagMode::Mean && m != BagMode::Max) {
      emb::detail::throw_bad_option(name(), "mode", detail::concat(static_cast<int>(m)),
                                    "it must be BagMode::Sum, Mean or Max");
    }
    return checked;
  }
  static void add_same(const EmbeddingBagOptions& options, std::vector<detail::Same>& same) {
    same.push_back({"mode", static_cast<std::int64_t>(options.mode())});
    same.push_back({"include_last_offset", options.include_last_offset() ? 1 : 0});
  }
  static EmbeddingBag<T> make_shard(const EmbeddingBagOptions& global, Matrix<T>&& block,
                                    std::optional<Index> local_padding) {
    const BagMode shard_mode = global.mode() == BagMode::Max ? BagMode::Max : BagMode::Sum;
    return EmbeddingBag<T>::from_pretrained(std::move(block),
                                            FromPretrainedBagOptions()
                                                .freeze(false)
                                                .mode(shard_mode)
                                                .include_last_offset(false)
                                                .padding_idx(local_padding)
                                                .max_norm(global.max_norm())
                                                .norm_type(global.norm_type())
                                                .scale_grad_by_freq(global.scale_grad_by_freq()));
  }
  static detail::Manifest manifest_of(const EmbeddingBagOptions& options) {
    detail::Manifest m;
    m.bag = true;
    m.mode = options.mode();
    m.include_last_offset = options.include_last_offset();
    return m;
  }
  void forget_route() { last_valid_ = false; }

  static std::vector<Index> fixed_offsets(const Matrix<Index>& input) {
    return emb::detail::fixed_offsets(static_cast<std::size_t>(input.rows()), input.cols());
  }

  Index dim() const { return this->embedding_dim(); }
  std::size_t row_bytes() const { return static_cast<std::size_t>(dim()) * sizeof(T); }

  // Everything a call depends on, checked on this rank; returns the number of bags.
  std::size_t check_call(const char* where, IndexSpan indices, IndexSpan offsets,
                         bool include_last, const Vector<T>* psw) const {
    if (psw != nullptr) {
      if (mode() != BagMode::Sum) {
        throw std::invalid_argument(detail::concat(
            where, ": per_sample_weights is only supported in sum mode, not mode = ",
            to_string(mode())));
      }
      if (psw->size() != static_cast<Index>(indices.size())) {
        throw std::invalid_argument(detail::concat(where, ": per_sample_weights has ", psw->size(),
                                                   " values, expected one per index (",
                                                   indices.size(), ")"));
      }
    }
    const std::size_t bags =
        emb::detail::check_offsets(where, offsets, indices.size(), include_last);
    detail::check_batch_size(where, indices.size() + bags, this->comm_.size());
    emb::detail::check_indices(where, indices, this->num_embeddings());
    return bags;
  }

  // Collective: each rank's ids (and per-sample weights) to their owners, one message per rank
  // holding the lengths of its partial bags and then their ids.
  void route(IndexSpan indices, IndexSpan offsets, std::size_t bags, const Vector<T>* psw,
             Routed& r) {
    auto& route = r.route;
    detail::plan_bags(this->blocks_, indices, offsets, bags, this->padding_idx(), route, owners_);
    const auto ranks = static_cast<std::size_t>(this->comm_.size());
    std::vector<int> counts(2 * ranks), received;
    for (std::size_t d = 0; d < ranks; ++d) {
      counts[2 * d] = route.id_counts[d];
      counts[2 * d + 1] = route.part_counts[d];
    }
    this->traffic_.control += detail::exchange_counts(this->comm_, counts, received, 2);
    r.recv_id_counts.resize(ranks);
    r.recv_part_counts.resize(ranks);
    for (std::size_t s = 0; s < ranks; ++s) {
      r.recv_id_counts[s] = received[2 * s];
      r.recv_part_counts[s] = received[2 * s + 1];
    }
    detail::displacements(r.recv_id_counts, r.recv_id_displs);
    detail::displacements(r.recv_part_counts, r.recv_part_displs);

    // Packed per destination: its partial bags' lengths, then its ids.
    std::vector<int> send_counts(ranks), send_displs, recv_counts(ranks), recv_displs;
    for (std::size_t d = 0; d < ranks; ++d) {
      send_counts[d] = route.part_counts[d] + route.id_counts[d];
      recv_counts[d] = r.recv_part_counts[d] + r.recv_id_counts[d];
    }
    detail::displacements(send_counts, send_displs);
    detail::displacements(recv_counts, recv_displs);
    std::vector<Index> packed(route.ids.size() + route.part_length.size());
    for (std::size_t d = 0; d < ranks; ++d) {
      Index* out = packed.data() + send_displs[d];
      const auto parts = static_cast<std::size_t>(route.part_counts[d]);
      const auto first_part = static_cast<std::size_t>(route.part_displs[d]);
      std::copy_n(route.part_length.data() + first_part, parts, out);
      std::copy_n(route.ids.data() + route.id_displs[d],
                  static_cast<std::size_t>(route.id_counts[d]), out + parts);
    }
    std::vector<Index> incoming(static_cast<std::size_t>(detail::total(recv_counts)));
    this->traffic_.ids += detail::exchange(this->comm_, packed.data(), send_counts, send_displs,
                                           incoming.data(), recv_counts, recv_displs,
                                           sizeof(Index));
    r.recv_ids.resize(static_cast<std::size_t>(detail::total(r.recv_id_counts)));
    r.recv_offsets.resize(static_cast<std::size_t>(detail::total(r.recv_part_counts)));
    Index start = 0;
    for (std::size_t s = 0; s < ranks; ++s) {
      const Index* in = incoming.data() + recv_displs[s];
      const auto parts = static_cast<std::size_t>(r.recv_part_counts[s]);
      Index* offsets_out = r.recv_offsets.data() + r.recv_part_displs[s];
      for (std::size_t p = 0; p < parts; ++p) {
        offsets_out[p] = start;
        start += in[p];
      }
      std::copy_n(in + parts, static_cast<std::size_t>(r.recv_id_counts[s]),
                  r.recv_ids.data() + r.recv_id_displs[s]);
    }

    r.has_psw = psw != nullptr;
    r.recv_psw.resize(r.has_psw ? static_cast<Index>(r.recv_ids.size()) : 0);
    if (r.has_psw) {
      Vector<T> sorted(static_cast<Index>(route.ids.size()));
      for (std::size_t s = 0; s < route.position.size(); ++s) {
        sorted[static_cast<Index>(s)] = (*psw)[static_cast<Index>(route.position[s])];
      }
      this->traffic_.ids += detail::exchange(this->comm_, sorted.data(), route.id_counts,
                                             route.id_displs, r.recv_psw.data(), r.recv_id_counts,
                                             r.recv_id_displs, sizeof(T));
    }
  }

  Matrix<T> pool(IndexSpan indices, IndexSpan offsets, bool include_last, const Vector<T>* psw) {
    std::size_t bags = 0;
    detail::agree(this->comm_, forward_name, detail::capture([&] {
                    bags = check_call(forward_name, indices, offsets, include_last, psw);
                  }));
    last_valid_ = false;
    route(indices, offsets, bags, psw, last_);
    ++this->traffic_.calls;
    this->traffic_.control += 8;
    const auto& route_ = last_.route;
    // The owner's part: its shard pools (and renormalises) its part of every rank's bags.
    const IndexSpan ids(last_.recv_ids), parts(last_.recv_offsets);
    const Matrix<T> partial = last_.has_psw ? this->shard_.forward(ids, parts, last_.recv_psw)
                                            : this->shard_.forward(ids, parts);
    Matrix<T> back(static_cast<Index>(route_.part_bag.size()), dim());
    this->traffic_.rows += detail::exchange(
        this->comm_, partial.data(), last_.recv_part_counts, last_.recv_part_displs, back.data(),
        route_.part_counts, route_.part_displs, row_bytes());

    // The caller's part: combine the partial rows of each bag, owner by owner.
    Matrix<T> out = Matrix<T>::Zero(static_cast<Index>(bags), dim());
    std::vector<char> started(bags, 0);
    for (std::size_t p = 0; p < route_.part_bag.size(); ++p) {
      if (route_.part_live[p] == 0) continue;  // only padding: contributes nothing
      const auto b = static_cast<Index>(route_.part_bag[p]);
      const auto row = back.row(static_cast<Index>(p));
      if (mode() != BagMode::Max) {
        out.row(b) += row;
      } else if (!started[static_cast<std::size_t>(b)]) {
        out.row(b) = row;
        started[static_cast<std::size_t>(b)] = 1;
      } else {
        out.row(b) = out.row(b).cwiseMax(row);
      }
    }
    if (mode() == BagMode::Mean) {
      for (std::size_t b = 0; b < bags; ++b) {
        if (route_.bag_live[b] > 0) out.row(static_cast<Index>(b)) /= static_cast<T>(route_.bag_live[b]);
      }
    }
    last_indices_.assign(indices.begin(), indices.end());
    last_offsets_.assign(offsets.begin(), offsets.end());
    last_include_last_ = include_last;
    last_psw_ = psw != nullptr ? *psw : Vector<T>();
    last_valid_ = true;
    return out;
  }

  // Whether this call's input is the last forward's, so that its routing can be reused.
  bool same_as_last(IndexSpan indices, IndexSpan offsets, bool include_last,
                    const Vector<T>* psw) const {
    if (!last_valid_ || include_last != last_include_last_ ||
        (psw != nullptr) != last_.has_psw || indices.size() != last_indices_.size() ||
        offsets.size() != last_offsets_.size()) {
      return false;
    }
    if (!std::equal(indices.begin(), indices.end(), last_indices_.begin()) ||
        !std::equal(offsets.begin(), offsets.end(), last_offsets_.begin())) {
      return false;
    }
    return psw == nullptr ||
           (psw->size() == last_psw_.size() &&
            (psw->size() == 0 || std::memcmp(psw->data(), last_psw_.data(),
                                             static_cast<std::size_t>(psw->size()) * sizeof(T)) == 0));
  }

  SparseGrad<T> gradient(IndexSpan indices, IndexSpan offsets, bool include_last,
                         const Eigen::Ref<const Matrix<T>>& grad_output, const Vector<T>* psw) {
    std::size_t bags = 0;
    const bool same = same_as_last(indices, offsets, include_last, psw);
    const bool reuse = detail::agree(
        this->comm_, backward_name, detail::capture([&] {
          bags = check_call(backward_name, indices, offsets, include_last, psw);
          emb::detail::check_shape(backward_name, "grad_output", static_cast<Index>(bags), dim(),
                                   grad_output.rows(), grad_output.cols());
        }),
        same);
    ++this->traffic_.calls;
    this->traffic_.control += 8;
    Routed fresh;
    if (!reuse) route(indices, offsets, bags, psw, fresh);
    const Routed& r = reuse ? last_ : fresh;
    if (mode() == BagMode::Max) return max_gradient(r, grad_output);

    // One gradient row per partial bag; Mean's 1 / bag size applied here, where the whole bag
    // is known.
    const auto& route_ = r.route;
    const std::size_t parts = route_.part_bag.size();
    Matrix<T> send(static_cast<Index>(parts), dim());
    for (std::size_t p = 0; p < parts; ++p) {
      const auto b = static_cast<Index>(route_.part_bag[p]);
      const Index live = route_.bag_live[static_cast<std::size_t>(b)];
      if (mode() == BagMode::Mean && live > 0) {
        send.row(static_cast<Index>(p)) = grad_output.row(b) / static_cast<T>(live);
      } else if (mode() == BagMode::Mean) {
        send.row(static_cast<Index>(p)).setZero();  // only padding: no row gets a gradient
      } else {
        send.row(static_cast<Index>(p)) = grad_output.row(b);
      }
    }
    Matrix<T> received(static_cast<Index>(r.recv_offsets.size()), dim());
    this->traffic_.grads += detail::exchange(this->comm_, send.data(), route_.part_counts,
                                             route_.part_displs, received.data(),
                                             r.recv_part_counts, r.recv_part_displs, row_bytes());
    const IndexSpan ids(r.recv_ids), part_offsets(r.recv_offsets);
    return r.has_psw ? this->shard_.backward(ids, part_offsets, received, r.recv_psw)
                     : this->shard_.backward(ids, part_offsets, received);
  }

  // Max: each owner finds its partial maxima and their winners again, from the current shard,
  // and sends them with the winners' places in their bags; the caller picks each element's
  // winner (the greatest value, ties to the earliest entry of the bag) and tells each owner
  // which elements it won; the owner's gradient then goes to those winners only.
  SparseGrad<T> max_gradient(const Routed& r, const Eigen::Ref<const Matrix<T>>& grad_output) {
    const Index d = dim();
    const auto ud = static_cast<std::size_t>(d);
    const std::size_t received_parts = r.recv_offsets.size();
    const IndexSpan ids(r.recv_ids), part_offsets(r.recv_offsets);
    const auto weight = this->shard_.weight();
    std::vector<Index> winners;
    emb::detail::bag_max_winners<T>(
        emb::detail::value_view(weight.data(), weight.rows(), weight.cols()), ids, part_offsets,
        received_parts, this->shard_.padding_idx().value_or(-1), winners);
    // Reply rows: dim values (the winners' own), then dim winner places (int32, -1 for none)
    // within the partial bag.
    const std::size_t value_bytes = ud * sizeof(T);
    const std::size_t reply_bytes = value_bytes + ud * sizeof(std::int32_t);
    std::vector<unsigned char> reply(received_parts * reply_bytes);
    for (std::size_t p = 0; p < received_parts; ++p) {
      unsigned char* row = reply.data() + p * reply_bytes;
      const auto first = static_cast<std::size_t>(r.recv_offsets[p]);
      const std::size_t end = p + 1 < received_parts
                                  ? static_cast<std::size_t>(r.recv_offsets[p + 1])
                                  : r.recv_ids.size();
      for (std::size_t j = 0; j < ud; ++j) {
        const Index w = winners[p * ud + j];
        const T value = w >= 0 ? weight(w, static_cast<Index>(j)) : T(0);
        std::memcpy(row + j * sizeof(T), &value, sizeof value);
        std::int32_t place = -1;
        // The winner's first entry: an earlier entry of the same row would have won first.
        for (std::size_t k = first; w >= 0 && k < end; ++k) {
          if (r.recv_ids[k] == w) {
            place = static_cast<std::int32_t>(k - first);
            break;
          }
        }
        std::memcpy(row + value_bytes + j * sizeof(std::int32_t), &place, sizeof place);
      }
    }
    const auto& route_ = r.route;
    const std::size_t parts = route_.part_bag.size();
    std::vector<unsigned char> replies(parts * reply_bytes);
    this->traffic_.rows += detail::exchange(this->comm_, reply.data(), r.recv_part_counts,
                                            r.recv_part_displs, replies.data(), route_.part_counts,
                                            route_.part_displs, reply_bytes);

    // The caller: each element's winning partial bag.
    constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
    const std::size_t bags = static_cast<std::size_t>(grad_output.rows());
    std::vector<std::size_t> best_part(bags * ud, none), best_place(bags * ud, 0);
    std::vector<T> best(bags * ud, T(0));
    for (std::size_t p = 0; p < parts; ++p) {
      if (route_.part_live[p] == 0) continue;
      const std::size_t b = route_.part_bag[p];
      const unsigned char* row = replies.data() + p * reply_bytes;
      for (std::size_t j = 0; j < ud; ++j) {
        T value;
        std::int32_t place;
        std::memcpy(&value, row + j * sizeof(T), sizeof value);
        std::memcpy(&place, row + value_bytes + j * sizeof(std::int32_t), sizeof place);
        const std::size_t at = route_.position[route_.part_first[p] + static_cast<std::size_t>(place)];
        const std::size_t e = b * ud + j;
        if (best_part[e] == none || value > best[e] || (value == best[e] && at < best_place[e])) {
          best_part[e] = p;
          best[e] = value;
          best_place[e] = at;
        }
      }
    }
    // To each owner: per partial bag, the gradient row and which of its elements it won.
    const std::size_t mask_bytes = ud;
    const std::size_t grad_bytes = value_bytes + mask_bytes;
    std::vector<unsigned char> send(parts * grad_bytes);
    for (std::size_t p = 0; p < parts; ++p) {
      unsigned char* row = send.data() + p * grad_bytes;
      const std::size_t b = route_.part_bag[p];
      for (std::size_t j = 0; j < ud; ++j) {
        const T g = grad_output(static_cast<Index>(b), static_cast<Index>(j));
        std::memcpy(row + j * sizeof(T), &g, sizeof g);
        row[value_bytes + j] = best_part[b * ud + j] == p ? 1 : 0;
      }
    }
    std::vector<unsigned char> incoming(received_parts * grad_bytes);
    this->traffic_.grads += detail::exchange(this->comm_, send.data(), route_.part_counts,
                                             route_.part_displs, incoming.data(),
                                             r.recv_part_counts, r.recv_part_displs, grad_bytes);

    // The owner: gradient to the winners of the elements it won.
    Matrix<T> grads(static_cast<Index>(received_parts), d);
    for (std::size_t p = 0; p < received_parts; ++p) {
      const unsigned char* row = incoming.data() + p * grad_bytes;
      if (value_bytes != 0) std::memcpy(&grads(static_cast<Index>(p), 0), row, value_bytes);
      for (std::size_t j = 0; j < ud; ++j) {
        if (row[value_bytes + j] == 0) winners[p * ud + j] = -1;
      }
    }
    SparseGrad<T> grad;
    grad.num_embeddings = this->shard_.num_embeddings();
    emb::detail::max_winners_sparse(winners, received_parts, grads.data(), d, d, grad.rows,
                                    grad.values);
    return grad;
  }

  Routed last_;  // the last forward's routing, for its backward
  bool last_valid_ = false;
  std::vector<Index> last_indices_;
  std::vector<Index> last_offsets_;
  bool last_include_last_ = false;
  Vector<T> last_psw_;
  std::vector<int> owners_;
};

// emb::optim steps the table an unqualified optim_table(x) returns: a sharded table's shard.
template <class T>
Embedding<T>& optim_table(ShardedEmbedding<T>& table) noexcept {
  return table.shard();
}
template <class T>
const Embedding<T>& optim_table(const ShardedEmbedding<T>& table) noexcept {
  return table.shard();
}
template <class T>
EmbeddingBag<T>& optim_table(ShardedEmbeddingBag<T>& table) noexcept {
  return table.shard();
}
template <class T>
const EmbeddingBag<T>& optim_table(const ShardedEmbeddingBag<T>& table) noexcept {
  return table.shard();
}

}  // namespace emb::dist
