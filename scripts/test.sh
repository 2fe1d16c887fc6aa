#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, and runs every test with
# CTest (unit, MPI under 1/2/4 ranks, end to end, learning). Extra arguments go to
# ctest, e.g. scripts/test.sh -L unit
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh" --test
"$root/scripts/build.sh"
cd "${DTRAIN_BUILD_DIR:-$root/build}"
ctest --output-on-failure --parallel "$(nproc)" "$@"
