#!/usr/bin/env bash
# The checkpoint directory across nodes, on the namespace cluster (netns_cluster.sh),
# 2 nodes x 1 rank (Note [Checkpoint directory seen by every node]):
#  - private: checkpoint.dir is a tmpfs mounted in node1's mount namespace alone, so
#    node1 sees another (empty) directory at rank 0's path. dtrain train must exit 2
#    (a config error) before any step, naming the directory, node1 and rank 1, and
#    saying to use a directory every node shares; rank 0's probe must be gone.
#  - shared: checkpoint.dir on the file system both nodes share; the run trains its
#    10 steps and writes the checkpoint of step 10, and no probe is left.
# Usage: checkpoint_dir_shared.sh DTRAIN MPIEXEC SOURCE_DIR WORK_DIR
set -u
dtrain=$1 cluster_mpiexec=$2 src=$3 work=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/mpi-env.sh
source "$here/../../scripts/mpi-env.sh"
# shellcheck source=netns_cluster.sh
source "$here/netns_cluster.sh"

common=(train "$src/configs/fashion_mnist_mlp.yaml" --set train.max_steps=10 --set eval.every_steps=0
        --set log.every_steps=5 --set checkpoint.every_steps=5)
rm -rf "$work" && mkdir -p "$work/private" "$work/shared"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
expect_in_log() {
  grep -qF -- "$2" "$work/$1.log" || { fail "$1: the log does not say: $2"; tail -15 "$work/$1.log"; }
}

cluster_up "$work/cluster" 1 1
cluster_exec node1 mount -t tmpfs -o size=1m dtrain-node1-private "$work/private" ||
  cluster_skip "node1 cannot mount a tmpfs in its mount namespace"

cluster_mpirun -np 2 --map-by slot "$dtrain" "${common[@]}" --set checkpoint.dir="$work/private" \
  --run-dir "$work/private_run" >"$work/private.log" 2>&1
code=$?
[ "$code" = 2 ] || { fail "private: exited $code, not 2 (a config error)"; tail -20 "$work/private.log"; }
expect_in_log private "checkpoint.dir $work/private is not the same directory on every node"
expect_in_log private "not seen on node1 by rank 1 (missing)"
expect_in_log private "Set checkpoint.dir to a directory every node shares"
if grep -q "not seen on node0" "$work/private.log"; then fail "private: node0, where rank 0 wrote, is named"; fi
[ "$(grep -c "is not the same directory on every node" "$work/private.log")" = 1 ] ||
  fail "private: the error was not said exactly once"
if grep -qs '"kind":"train"' "$work/private_run/metrics.jsonl"; then fail "private: a step ran before the error"; fi
[ -z "$(ls -A "$work/private")" ] || fail "private: left behind on node0: $(ls -A "$work/private")"

cluster_mpirun -np 2 --map-by slot "$dtrain" "${common[@]}" --set checkpoint.dir="$work/shared" \
  --run-dir "$work/shared_run" >"$work/shared.log" 2>&1 || { fail "shared: exited $?"; tail -20 "$work/shared.log"; }
[ -f "$work/shared/ckpt-000000010.dtrain" ] || fail "shared: no checkpoint of step 10 in $work/shared"
grep -qs '"kind":"train","step":10,' "$work/shared_run/metrics.jsonl" || fail "shared: no step 10 in the metrics"
[ "$(ls -A "$work/shared")" = "$(printf 'ckpt-000000005.dtrain\nckpt-000000010.dtrain')" ] ||
  fail "shared: $work/shared holds more than the checkpoints of steps 5 and 10: $(ls -A "$work/shared")"

cluster_down || failures=$((failures + 1))
echo "checkpoint.dir on 2 nodes: $failures failure(s); logs in $work"
[ "$failures" = 0 ]
