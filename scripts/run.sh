#!/usr/bin/env bash
# The main job: installs what is missing, builds, and trains the default example
# (the Fashion-MNIST CNN) on the devices present: one MPI rank per GPU, or 2 ranks on
# a machine without GPUs. Extra arguments go to `dtrain train`, e.g.
#   scripts/run.sh --set train.epochs=1
# DTRAIN_NP sets the number of ranks, DTRAIN_CONFIG the config.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
source "$root/scripts/mpi-env.sh"
gpus=0
command -v nvidia-smi >/dev/null && gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
np=${DTRAIN_NP:-$([ "$gpus" -gt 0 ] && echo "$gpus" || echo 2)}
config=${DTRAIN_CONFIG:-$root/configs/fashion_mnist_cnn.yaml}
oversubscribe=()
[ "$(nproc)" -lt "$np" ] && oversubscribe=(--oversubscribe)
# The ranks cannot see whether this output is a terminal (launch/train_command.cpp).
[ -t 1 ] && export DTRAIN_PROGRESS=${DTRAIN_PROGRESS:-bar}
exec mpirun -np "$np" "${oversubscribe[@]}" "${DTRAIN_BUILD_DIR:-$root/build}/dtrain" train "$config" "$@"
