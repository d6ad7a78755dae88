#!/usr/bin/env bash
# The main command: installs what is missing, builds the benchmarks in Release and runs emb's
# main job, the lookup-vs-matmul benchmark, then the backward benchmark and the benchmark of
# stored precisions and quantized tables. Each prints a summary table (throughput, ratio to
# memcpy, speed-up over the one-hot product, the performance targets).
#
#   scripts/bench.sh            default mode, about two and a half minutes including the build
#   scripts/bench.sh --full     every case (N from 1e2 to ~1 GiB, Zipf everywhere; ~5 minutes)
#   scripts/bench.sh --lookup   only the lookup-vs-matmul benchmark
#   scripts/bench.sh --quant    only the storage and quantization benchmark (bench_quant)
#   scripts/bench.sh --mpi      only the sharded bag table on 2 MPI ranks (target D1; a 1 GiB
#                               table, about a minute)
#   scripts/bench.sh -- ARGS    ARGS go to every program (e.g. --benchmark_filter=onehot)
#
# Results stay in build/release/bench-results/: the Google Benchmark JSON of each program, the
# plot data (lookup_vs_onehot.dat) and, when gnuplot is installed, lookup_vs_onehot.svg.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=()
programs=(bench_lookup bench_backward bench_quant)
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --full) mode=(--full) ;;
    --lookup) programs=(bench_lookup) ;;
    --quant) programs=(bench_quant) ;;
    --mpi) programs=(bench_mpi) ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset release >/dev/null
cmake --build --preset release --parallel "$jobs" --target "${programs[@]}"

out=build/release/bench-results
mkdir -p "$out"
# The thread cases pin OpenMP's threads to distinct cores: unpinned, the scheduler may stack both
# threads on one core while the other is busy, which measures the machine, not the kernel.
export OMP_PROC_BIND="${OMP_PROC_BIND:-true}" OMP_PLACES="${OMP_PLACES:-cores}"
for program in "${programs[@]}"; do
  echo
  echo "===== $program ${mode[*]:-}"
  launch=()
  if [ "$program" = bench_mpi ]; then
    # Two ranks on this machine; OpenMPI refuses root unless told, and counts cores strictly.
    launch=(mpirun -np 2)
    if mpirun --version 2>/dev/null | grep -q "Open MPI"; then
      launch+=(--oversubscribe)
      [ "$(id -u)" -eq 0 ] && launch+=(--allow-run-as-root)
    fi
  fi
  "${launch[@]}" "build/release/bench/$program" "${mode[@]}" --plot_dir="$PWD/$out" \
    --benchmark_out="$out/$program.json" --benchmark_out_format=json "${extra[@]}"
done

if [ -f "$out/lookup_vs_onehot.gp" ]; then
  if command -v gnuplot >/dev/null 2>&1; then
    gnuplot "$out/lookup_vs_onehot.gp" && echo "Plot: $out/lookup_vs_onehot.svg"
  else
    echo "gnuplot not installed: no plot (EMB_WITH_GNUPLOT=1 scripts/deps.sh installs it)"
  fi
fi
echo "JSON: $out/*.json"
