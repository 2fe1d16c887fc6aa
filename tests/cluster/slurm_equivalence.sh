#!/usr/bin/env bash
# Equivalence across nodes under the real Slurm (DESIGN contract 2), on the namespace
# cluster (slurm_cluster.sh): launch/slurm/dtrain.sbatch, submitted with sbatch to 2
# nodes x 2 tasks and starting its ranks with mpirun inside the allocation
# (DTRAIN_LAUNCHER=mpirun; Note [srun and Open MPI over TCP] in
# slurm_rank_discovery.sh), trains configs/fashion_mnist_cnn.yaml at global batch 64
# (4 ranks x micro-batch 16) and gives the single process's trajectory (micro-batch 64)
# within 1e-4 relative, the loss of each of 25 steps. The job must say it ran 4 ranks
# on node[0-1], node1's link must have carried at least the gradients, and the
# comparison must reject the Slurm run's trajectory with one loss moved by 1e-3
# relative (it can fail).
# Usage: slurm_equivalence.sh DTRAIN METRICS_CHECK SOURCE_DIR WORK_DIR
set -u
dtrain=$1 check=$2 src=$3 work=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/mpi-env.sh
source "$here/../../scripts/mpi-env.sh"
# shellcheck source=slurm_cluster.sh
source "$here/slurm_cluster.sh"

steps=25
train=(--set train.global_batch=64 --set "train.max_steps=$steps" --set log.every_steps=5 --set eval.every_steps=0)
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }

"$dtrain" train "$src/configs/fashion_mnist_cnn.yaml" "${train[@]}" --set train.micro_batch=64 --set comm.backend=self \
  --run-dir "$work/single" >"$work/single.log" 2>&1 || { fail "the single process exited $?:"; tail -15 "$work/single.log"; }

slurm_cluster_up "$work/slurm" 2 2
# What the batch script passes on to mpirun and the ranks: the ranks' messages over TCP
# on the cluster's subnet only (Note [Nodes as namespaces]).
export DTRAIN=$dtrain DTRAIN_LAUNCHER=mpirun OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=$cluster_subnet \
       OMPI_MCA_oob_tcp_if_include=$cluster_subnet
slurm_batch --nodes=2 --ntasks-per-node=2 --gpus-per-task=0 --time=5 \
  --output="$work/job.log" "$src/launch/slurm/dtrain.sbatch" "$src/configs/fashion_mnist_cnn.yaml" "$work/slurm2x2" \
  "${train[@]}" --set train.micro_batch=16
code=$?
[ "$code" = 0 ] || { fail "the batch job did not complete:"; tail -25 "$work/job.log"; }
# The gradients crossed the link: whatever the all-reduce's algorithm, node1 cannot
# learn the sum without receiving at least the gradient's size from node0 at every
# step (fp32: 4 bytes a parameter).
received=$(cluster_exec node1 cat /proc/net/dev | awk '$1 == "eth0:" { print $2 }')
slurm_cluster_down || failures=$((failures + 1))
grep -q "dtrain job [0-9]* (restart 0): 4 task(s) on node\[0-1\]" "$work/job.log" ||
  fail "the job did not run 4 tasks on node[0-1]: $(head -3 "$work/job.log")"
grep -q "dtrain: 4 rank(s) over mpi" "$work/job.log" || fail "the job did not train on 4 ranks"
parameters=$(grep -o '([0-9]* parameters)' "$work/job.log" | head -1 | tr -dc 0-9)
least=$((steps * ${parameters:-0} * 4))
echo "node1 received ${received:-?} bytes over its link; the gradients alone are $least"
if [ -z "$parameters" ] || [ "${received:-0}" -lt "$least" ]; then
  fail "node1 received ${received:-?} bytes over its link, less than $steps steps of ${parameters:-?} fp32 gradients"
fi
"$check" compare 1e-4 $steps "$work/single" "$work/slurm2x2" || failures=$((failures + 1))

# The comparison can fail: the Slurm run with the loss of step 13 moved by 1e-3.
cp -r "$work/slurm2x2" "$work/moved"
awk '/"kind":"train","step":13,/ { match($0, /"loss":[^,]*/); v = substr($0, RSTART + 7, RLENGTH - 7);
       $0 = substr($0, 1, RSTART + 6) sprintf("%.9g", v * 1.001) substr($0, RSTART + RLENGTH) } { print }' \
  "$work/slurm2x2/metrics.jsonl" >"$work/moved/metrics.jsonl"
if "$check" compare 1e-4 $steps "$work/single" "$work/moved" >/dev/null; then
  fail "the comparison accepts a trajectory with one loss moved by 1e-3"
fi
echo "CNN under Slurm on 2 nodes x 2 tasks against one process: $failures failure(s)"
[ "$failures" = 0 ]
