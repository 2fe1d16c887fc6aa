#!/usr/bin/env bash
# Equivalence across nodes under the real Slurm (DESIGN contract 2), on the namespace
# cluster (slurm_cluster.sh): launch/slurm/dtrain.sbatch, submitted with sbatch to 2
# nodes x 2 tasks, trains configs/fashion_mnist_cnn.yaml at global batch 64 (4 ranks x
# micro-batch 16) and gives the single process's trajectory (micro-batch 64) within
# 1e-4 relative, the loss of each of 25 steps; once with each of its launchers (srun
# --mpi=pmix, its default, and mpirun inside the allocation). Each job must say it ran
# 4 ranks on node[0-1], node1's link must have carried at least the gradients of both,
# and the comparison must reject a trajectory with one loss moved by 1e-3 relative (it
# can fail). Then `dtrain sweep` runs as a batch job on the same 2 x 2 tasks.
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
# What the batch script passes on to the ranks: their messages over TCP on the
# cluster's subnet only (Note [Nodes as namespaces]).
export DTRAIN=$dtrain OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=$cluster_subnet \
       OMPI_MCA_oob_tcp_if_include=$cluster_subnet
for launcher in srun mpirun; do
  DTRAIN_LAUNCHER=$launcher slurm_batch --nodes=2 --ntasks-per-node=2 --gpus-per-task=0 --time=5 \
    --output="$work/$launcher.log" "$src/launch/slurm/dtrain.sbatch" "$src/configs/fashion_mnist_cnn.yaml" \
    "$work/$launcher" "${train[@]}" --set train.micro_batch=16 ||
    { fail "the batch job with $launcher did not complete:"; tail -25 "$work/$launcher.log"; }
  grep -q "dtrain job [0-9]* (restart 0): 4 task(s) on node\[0-1\]" "$work/$launcher.log" ||
    fail "the job with $launcher did not run 4 tasks on node[0-1]: $(head -3 "$work/$launcher.log")"
  grep -q "dtrain: 4 rank(s) over mpi" "$work/$launcher.log" || fail "the job with $launcher did not train on 4 ranks"
  "$check" compare 1e-4 $steps "$work/single" "$work/$launcher" || failures=$((failures + 1))
done
# dtrain sweep as a batch job, every point on all 4 tasks of the 2 nodes (srun): the
# regression ladder of tests/e2e/sweep_checks.sh, cut to 3 rungs; every point reaches
# its target and trains on 4 ranks.
slurm_batch --nodes=2 --ntasks-per-node=2 --gpus-per-task=0 --time=5 --output="$work/sweep.log" \
  --wrap "srun --mpi=pmix --kill-on-bad-exit=1 $dtrain sweep $src/configs/synthetic_regression.yaml \
          --target eval_loss=0.1666667 --max-epochs 2 --batches 8,16,32 --dir $work/sweep" ||
  { fail "the sweep's batch job did not complete:"; tail -25 "$work/sweep.log"; }
[ "$(grep -c '"reached":true' "$work/sweep/sweep.json" 2>/dev/null)" = 3 ] ||
  fail "the sweep under Slurm did not reach the target at its 3 points: $(tail -5 "$work/sweep.log")"
[ "$(grep -c "dtrain: 4 rank(s) over mpi" "$work/sweep.log")" = 3 ] ||
  fail "the sweep under Slurm did not run each of its 3 points on 4 ranks"
# The gradients crossed the link: whatever the all-reduce's algorithm, node1 cannot
# learn the sum without receiving at least the gradient's size from node0 at every
# step (fp32: 4 bytes a parameter), in each of the two jobs.
received=$(cluster_exec node1 cat /proc/net/dev | awk '$1 == "eth0:" { print $2 }')
slurm_cluster_down || failures=$((failures + 1))
parameters=$(grep -o '([0-9]* parameters)' "$work/srun.log" | head -1 | tr -dc 0-9)
least=$((2 * steps * ${parameters:-0} * 4))
echo "node1 received ${received:-?} bytes over its link; the gradients of the two jobs alone are $least"
if [ -z "$parameters" ] || [ "${received:-0}" -lt "$least" ]; then
  fail "node1 received ${received:-?} bytes over its link, less than 2 jobs of $steps steps of ${parameters:-?} fp32 gradients"
fi

# The comparison can fail: the srun job's trajectory with the loss of step 13 moved by 1e-3.
cp -r "$work/srun" "$work/moved"
awk '/"kind":"train","step":13,/ { match($0, /"loss":[^,]*/); v = substr($0, RSTART + 7, RLENGTH - 7);
       $0 = substr($0, 1, RSTART + 6) sprintf("%.9g", v * 1.001) substr($0, RSTART + RLENGTH) } { print }' \
  "$work/srun/metrics.jsonl" >"$work/moved/metrics.jsonl"
if "$check" compare 1e-4 $steps "$work/single" "$work/moved" >/dev/null; then
  fail "the comparison accepts a trajectory with one loss moved by 1e-3"
fi
echo "CNN under Slurm on 2 nodes x 2 tasks against one process: $failures failure(s)"
[ "$failures" = 0 ]
