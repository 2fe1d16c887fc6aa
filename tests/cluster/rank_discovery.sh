#!/usr/bin/env bash
# Rank discovery across nodes, on the namespace cluster (netns_cluster.sh): mpirun
# starts rank_probe with SLOTS[i] ranks on node i (--map-by slot fills node0 first),
# each node showing as many GPUs as the fullest node has ranks (GPU-<node>-0, ...,
# through DTRAIN_PROBE_GPUS); every rank must report, as the hostfile and the slot
# mapping imply:
#   global rank r and size N; its node's name and the node count; its node-local rank
#   l (r minus the ranks of the nodes before it) and the node's rank count;
#   Open MPI's variables saying the same (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK,
#   _LOCAL_SIZE, _NODE_RANK, and the node count OMPI_MCA_orte_num_nodes), dtrain's
#   launcher check agreeing;
#   device cuda:l, GPU GPU-<node>-l (its node-local rank's, on its own node).
# The check must also reject two wrong layouts (one node more; the same ranks split
# otherwise), and the cluster must leave nothing behind.
# Usage: rank_discovery.sh RANK_PROBE MPIEXEC WORK_DIR SLOTS...
set -u
probe=$1 cluster_mpiexec=$2 work=$3
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/mpi-env.sh
source "$here/../../scripts/mpi-env.sh"
# shellcheck source=netns_cluster.sh
source "$here/netns_cluster.sh"
# shellcheck source=expected_ranks.sh
source "$here/expected_ranks.sh"

rm -rf "$work" && mkdir -p "$work"
cluster_up "$work/cluster" "$@"
failures=0
ranks=0 most=0
for s in "$@"; do
  ranks=$((ranks + s))
  [ "$s" -gt "$most" ] && most=$s
done
DTRAIN_PROBE_GPUS=$(seq 0 $((most - 1)) | sed 's/^/GPU-{node}-/' | paste -sd,)
export DTRAIN_PROBE_GPUS
cluster_mpirun -np "$ranks" --map-by slot -x DTRAIN_PROBE_GPUS "$probe" >"$work/probe.log" 2>&1
code=$?
cat "$work/probe.log"
if [ "$code" != 0 ]; then
  echo "FAILED: the probe exited $code"
  failures=$((failures + 1))
fi
grep '^rank=' "$work/probe.log" >"$work/probe.lines"
if ! diff <(expected_lines mpirun "$@") "$work/probe.lines"; then
  echo "FAILED: the ranks' view (>) is not the layout launched (<): slots $*"
  failures=$((failures + 1))
fi
# The check can fail: a layout with one node more, and the same ranks split otherwise
# (one rank moved from the fullest node to another).
slots=("$@")
fullest=0
for i in "${!slots[@]}"; do [ "${slots[$i]}" -gt "${slots[$fullest]}" ] && fullest=$i; done
moved=("${slots[@]}")
moved[fullest]=$((moved[fullest] - 1))
other=$(( fullest == 0 ? 1 : 0 ))
moved[other]=$((moved[other] + 1))
for wrong in "$* 1" "${moved[*]}"; do
  # shellcheck disable=SC2086
  if expected_lines mpirun $wrong | diff -q - "$work/probe.lines" >/dev/null; then
    echo "FAILED: the check accepts the wrong layout (slots $wrong)"
    failures=$((failures + 1))
  fi
done
cluster_down || failures=$((failures + 1))
echo "rank discovery on slots $*: $failures failure(s)"
[ "$failures" = 0 ]
