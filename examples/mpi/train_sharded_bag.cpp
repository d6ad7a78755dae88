// A sharded bag table trained over MPI: every rank holds a block of the rows, brings its own
// batch of bags, and steps its own shard. The model learns a table from a "teacher" table (also
// sharded, never trained): the loss of a bag is 0.5 |pooled - teacher's pooled|^2, whose
// gradient with respect to the pooled row is their difference. Then a checkpoint is written by
// every rank and read back.
//
//   mpirun -np 2 build/dev/examples/train_sharded_bag [--steps N]
#include <emb/dist/mpi.hpp>
#include <emb/optim.hpp>

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int steps = 300;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--steps") steps = std::stoi(argv[i + 1]);
  }
  {
    const emb::dist::Communicator comm;  // MPI_COMM_WORLD
    const bool root = comm.rank() == 0;
    const auto options = emb::EmbeddingBagOptions(20'000, 16).mode(emb::BagMode::Sum);
    emb::dist::ShardedEmbeddingBag<float> table(comm, options, /*seed=*/1);
    emb::dist::ShardedEmbeddingBag<float> teacher(comm, options, /*seed=*/2);
    emb::optim::Adagrad<float> optimizer(0.5);
    if (root) {
      std::printf("table: %lld x %lld over %d ranks, rank 0 holding rows [%lld, %lld)\n",
                  static_cast<long long>(table.num_embeddings()),
                  static_cast<long long>(table.embedding_dim()), comm.size(),
                  static_cast<long long>(table.local_row_begin()),
                  static_cast<long long>(table.local_row_end()));
    }

    // Each rank's stream of batches: 64 bags of 1 to 20 ids, skewed towards low ids.
    std::mt19937_64 gen(1000 + static_cast<std::uint64_t>(comm.rank()));
    const auto item = [&] {
      const double u = static_cast<double>(gen() >> 11) * 0x1.0p-53;
      return static_cast<emb::Index>(u * u * 20'000.0);
    };
    double first_loss = 0.0, last_loss = 0.0;
    const auto start = std::chrono::steady_clock::now();
    for (int step = 1; step <= steps; ++step) {
      std::vector<emb::Index> ids, offsets;
      for (int bag = 0; bag < 64; ++bag) {
        offsets.push_back(static_cast<emb::Index>(ids.size()));
        for (std::uint64_t k = 0, n = 1 + gen() % 20; k < n; ++k) ids.push_back(item());
      }
      const emb::Matrix<float> pooled = table.forward(ids, offsets);     // collective
      const emb::Matrix<float> target = teacher.forward(ids, offsets);   // collective
      const emb::Matrix<float> grad = pooled - target;                   // d loss / d pooled
      double loss = 0.5 * static_cast<double>(grad.squaredNorm()), total = 0.0;
      MPI_Allreduce(&loss, &total, 1, MPI_DOUBLE, MPI_SUM, comm.get());
      // The shard's gradient over every rank's bags, then a step of the local shard.
      optimizer.step(table, table.backward(ids, offsets, grad));  // backward is collective
      if (step == 1) first_loss = total;
      last_loss = total;
      if (root && (step == 1 || step % 100 == 0 || step == steps)) {
        std::printf("step %4d/%d  loss %.1f\n", step, steps, total);
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto sent = table.traffic();
    if (root) {
      std::printf("rank 0 sent %.1f KiB per step (ids %.1f, rows %.1f, gradients %.1f); %.2f ms per step\n",
                  static_cast<double>(sent.total()) / steps / 1024.0,
                  static_cast<double>(sent.ids) / steps / 1024.0,
                  static_cast<double>(sent.rows) / steps / 1024.0,
                  static_cast<double>(sent.grads) / steps / 1024.0, 1e3 * seconds / steps);
      std::printf("check: loss decreased: %s\n", last_loss < 0.5 * first_loss ? "yes" : "no");
    }

    // Checkpoint: one .npy per rank and a manifest, in a directory every rank sees.
    std::string dir;
    if (root) {
      dir = (std::filesystem::temp_directory_path() /
             ("emb-sharded-example-" + std::to_string(std::random_device{}())))
                .string();
    }
    int length = static_cast<int>(dir.size());
    MPI_Bcast(&length, 1, MPI_INT, 0, comm.get());
    dir.resize(static_cast<std::size_t>(length));
    MPI_Bcast(dir.data(), length, MPI_CHAR, 0, comm.get());
    table.save(dir);
    emb::dist::ShardedEmbeddingBag<float> restored(comm, options, /*seed=*/99);
    restored.load(dir);  // on any number of ranks; here the same
    const emb::Matrix<float> a = table.gather_weight(), b = restored.gather_weight();
    if (root) {
      std::printf("check: the checkpoint reloads the same weights: %s\n", a == b ? "yes" : "no");
      std::filesystem::remove_all(dir);
    }
  }
  MPI_Finalize();
  return 0;
}
