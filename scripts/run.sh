#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains the default example
# (the Fashion-MNIST CNN) on 2 MPI ranks. Extra arguments go to `dtrain train`, e.g.
#   scripts/run.sh --set train.epochs=1
# DTRAIN_NP sets the number of ranks, DTRAIN_CONFIG the config.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
source "$root/scripts/mpi-env.sh"
np=${DTRAIN_NP:-2}
config=${DTRAIN_CONFIG:-$root/configs/fashion_mnist_cnn.yaml}
oversubscribe=()
[ "$(nproc)" -lt "$np" ] && oversubscribe=(--oversubscribe)
exec mpirun -np "$np" "${oversubscribe[@]}" "${DTRAIN_BUILD_DIR:-$root/build}/dtrain" train "$config" "$@"
