#!/usr/bin/env bash
# Target F1: emb's examples/fasttext_predict against `fasttext predict-prob` on the same model
# and input, as whole processes (model load included) timed side by side by hyperfine, best
# of several runs; then whether both printed the same labels. Then bench_fasttext (in one
# process: out-of-vocabulary word vectors and predictions against fastText's library) on the
# same models.
#
#   scripts/bench_fasttext.sh            RUNS=5 by default; RUNS=10 scripts/bench_fasttext.sh
#
# Needs Debian's fasttext, libfasttext-dev and hyperfine (installed when missing) and about
# 3 GB of disk and memory. The models are trained here, once, from text Debian ships: package
# descriptions from apt's lists labelled by their section (`apt-cache dumpavail`):
#   large  fastText's defaults for a classifier: dim 100, wordNgrams 2, 2M buckets (~810 MB)
#   small  dim 50, wordNgrams 2, 100k buckets (~30 MB): model loading no longer dominates
#   words  skipgram with char n-grams 3-6, dim 100, 2M buckets, for word vectors
# The input is every description four times over (~255k lines).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${RUNS:-5}
jobs=$(nproc 2>/dev/null || echo 2)

EMB_WITH_FASTTEXT=1 scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target fasttext_predict bench_fasttext --parallel "$jobs"
tool=$root/build/release/examples/fasttext_predict

work=$root/build/release/bench-fasttext
mkdir -p "$work"
cd "$work"
if [ ! -s all.txt ]; then
  apt-cache dumpavail | awk '
    /^Section:/ { s = $2; sub(/.*\//, "", s) }
    /^Description:/ { d = substr($0, 14) }
    /^$/ { if (s != "" && d != "") print "__label__" s " " tolower(d); s = ""; d = "" }' > all.txt
fi
if [ ! -s input.txt ]; then
  shuf --random-source=<(yes) all.txt > shuffled.txt
  head -n 50000 shuffled.txt > train.txt
  sed 's/^__label__[^ ]* //' all.txt > words.txt
  for _ in 1 2 3 4; do cat all.txt; done > input.txt
  head -n 20000 shuffled.txt > input_20k.txt
fi
train() {  # name, command, options...
  local name=$1 command=$2
  shift 2
  if [ ! -s "$name.bin" ]; then
    echo "::: training $name"
    fasttext "$command" -input "$([ "$command" = supervised ] && echo train.txt || echo words.txt)" \
      -output "$name" -thread "$jobs" -seed 1 -verbose 0 "$@"
    rm -f "$name.vec"
  fi
}
train large supervised -dim 100 -wordNgrams 2 -epoch 5
train small supervised -dim 50 -wordNgrams 2 -bucket 100000 -epoch 5
train words skipgram -dim 100 -minn 3 -maxn 6 -epoch 1

lines=$(wc -l < input.txt)
summary=()
for model in large small; do
  echo "::: F1, model $model ($(du -h "$model.bin" | cut -f1)), $lines lines, k = 1, best of $runs"
  hyperfine -N --output=pipe --warmup 1 --runs "$runs" --export-csv "f1_$model.csv" \
    -n fasttext "fasttext predict-prob $model.bin input.txt 1" \
    -n emb "$tool $model.bin input.txt 1"
  fasttext predict-prob "$model.bin" input.txt 1 > "fasttext_$model.out"
  "$tool" "$model.bin" input.txt 1 > "emb_$model.out"
  if cmp -s <(cut -d' ' -f1 "fasttext_$model.out") <(cut -d' ' -f1 "emb_$model.out"); then
    same=yes
  else
    same="NO ($(diff <(cut -d' ' -f1 "fasttext_$model.out") <(cut -d' ' -f1 "emb_$model.out") |
               grep -c '^<') lines differ)"
  fi
  printed=$(diff "fasttext_$model.out" "emb_$model.out" | grep -c '^<' || true)
  # hyperfine's CSV: command,mean,stddev,median,user,system,min,max
  ft=$(awk -F, '$1 == "fasttext" { print $7 }' "f1_$model.csv")
  em=$(awk -F, '$1 == "emb" { print $7 }' "f1_$model.csv")
  summary+=("$(awk -v m="$model" -v ft="$ft" -v em="$em" -v same="$same" -v p="$printed" \
    -v n="$lines" 'BEGIN {
      r = ft / em
      printf "F1 %-5s  fasttext %6.3f s  emb %6.3f s  %5.2fx  %-7s  labels identical: %s; lines printed differently: %d of %d",
             m, ft, em, r, (r >= 1.5 ? "met" : "NOT met"), same, p, n }')")
done

echo "::: bench_fasttext (one process; word vectors from the skipgram model)"
"$root/build/release/bench/bench_fasttext" --model=words.bin --sup_model=large.bin \
  --input=input_20k.txt --benchmark_min_time=1

echo
echo "Target F1: emb's fasttext_predict >= 1.5x faster than fasttext predict-prob, same labels"
for line in "${summary[@]}"; do echo "$line"; done
