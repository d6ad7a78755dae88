#!/usr/bin/env bash
# The test command: installs what is missing, then configures, builds and runs the whole test
# suite (unit tests, examples, header and consumer checks) with the "dev" preset.
# Extra arguments go to ctest, e.g.  scripts/test.sh -R embedding
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset dev
cmake --build --preset dev --parallel "$jobs"
ctest --preset dev --parallel "$jobs" "$@"
