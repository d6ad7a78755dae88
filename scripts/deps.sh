#!/usr/bin/env bash
# Installs, from Debian's archive, whatever emb's build needs and the machine lacks:
# a C++17 compiler, CMake, Eigen 3, doctest, Google Benchmark and nlohmann/json (for
# emb/io/safetensors.hpp, its tests, example and fuzzer). gnuplot is optional and is installed
# only with EMB_WITH_GNUPLOT=1; clang's libFuzzer only with EMB_WITH_FUZZ=1; fastText and
# hyperfine only with EMB_WITH_FASTTEXT=1.
# Does nothing when everything is present.
set -euo pipefail

need=()
have_header() { [ -f "/usr/include/$1" ] || [ -f "/usr/local/include/$1" ]; }
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
have_header eigen3/Eigen/Core || need+=(libeigen3-dev)
have_header doctest/doctest.h || need+=(doctest-dev)
have_header benchmark/benchmark.h || need+=(libbenchmark-dev)
have_header nlohmann/json.hpp || need+=(nlohmann-json3-dev)
if [ "${EMB_WITH_GNUPLOT:-0}" = 1 ] && ! command -v gnuplot >/dev/null 2>&1; then
  need+=(gnuplot-nox)
fi
# The fuzzers (fuzz/run.sh) need clang and its libFuzzer runtime; asked for with EMB_WITH_FUZZ=1.
if [ "${EMB_WITH_FUZZ:-0}" = 1 ]; then
  command -v clang++ >/dev/null 2>&1 || need+=(clang)
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 \
    || need+=(libclang-rt-14-dev)
fi

# The fastText benchmark (scripts/bench_fasttext.sh) compares with Debian's fasttext program
# and library and times with hyperfine; asked for with EMB_WITH_FASTTEXT=1.
if [ "${EMB_WITH_FASTTEXT:-0}" = 1 ]; then
  command -v fasttext >/dev/null 2>&1 || need+=(fasttext)
  have_header fasttext/fasttext.h || need+=(libfasttext-dev)
  command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
fi

if [ ${#need[@]} -eq 0 ]; then
  echo "deps: everything emb needs is installed"
  exit 0
fi

echo "deps: installing ${need[*]} from Debian's archive"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install ${need[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
