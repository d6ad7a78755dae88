#!/usr/bin/env bash
# Builds emb's libFuzzer targets (clang, ASan + UBSan) and runs each for a bounded time, starting
# from the seed corpus in fuzz/corpus/<target>/. Exits non-zero if any target finds a crash, a
# leak, undefined behaviour or a timeout; the input that did it is kept in the build directory.
#
#   fuzz/run.sh [seconds per target]      default 30, or $FUZZ_SECONDS
#   FUZZ_BUILD_DIR=...                    default build/fuzz
#
# Needs clang++ and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev or the package
# matching the clang version).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-${FUZZ_SECONDS:-30}}
build=${FUZZ_BUILD_DIR:-$root/build/fuzz}
targets=(npy word2vec glove fasttext)

if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang++ not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  > "$probe/probe.cpp"
if ! clang++ -fsanitize=fuzzer "$probe/probe.cpp" -o "$probe/probe" 2>/dev/null; then
  echo "fuzz: clang++ has no libFuzzer runtime (Debian: apt-get install libclang-rt-14-dev)" >&2
  exit 1
fi

cmake -S "$root/fuzz" -B "$build" -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" --parallel "$(nproc 2>/dev/null || echo 2)"
# The safetensors target is built where nlohmann/json is found (scripts/deps.sh installs it).
if [ -x "$build/fuzz_safetensors" ]; then
  targets+=(safetensors)
else
  echo "fuzz: fuzz_safetensors not built (nlohmann/json missing: apt-get install nlohmann-json3-dev)" >&2
fi

mkdir -p "$build/artifacts"
failed=()
for target in "${targets[@]}"; do
  echo "::: fuzz_$target for ${seconds}s"
  # New inputs go to a scratch directory: the committed seed corpus is only read.
  work="$probe/$target"
  mkdir -p "$work"
  if ! "$build/fuzz_$target" "$work" "$root/fuzz/corpus/$target" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -artifact_prefix="$build/artifacts/$target-" -print_final_stats=1 2>"$build/$target.log"; then
    failed+=("$target")
    tail -n 60 "$build/$target.log" >&2
  else
    grep -E "^stat::number_of_executed_units|^Done" "$build/$target.log" || true
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $build/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a finding"
