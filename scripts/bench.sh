#!/usr/bin/env bash
# The main command: installs what is missing, builds in Release and runs emb's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset release
cmake --build --preset release --parallel "$jobs" --target run_examples
