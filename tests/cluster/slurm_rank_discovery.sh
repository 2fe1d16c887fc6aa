#!/usr/bin/env bash
# Rank discovery under the real Slurm, on the namespace cluster (slurm_cluster.sh): one
# slurmd per node, node i with SLOTS[i] CPUs, and jobs of as many tasks as there are
# CPUs on all the nodes, so Slurm can only place SLOTS[i] tasks on node i. Each node
# shows as many GPUs as the fullest node has tasks (GPU-<node>-0, ..., through
# DTRAIN_PROBE_GPUS). rank_probe runs the two ways a Slurm user starts MPI ranks:
#  1. srun --mpi=pmix: every task a rank. Slurm's variables (SLURM_PROCID, _NTASKS,
#     _LOCALID, _NODEID, _NNODES), MPI's view and dtrain's must all be the layout:
#     global rank r of N, node-local rank l of the node's s, node i of K.
#  2. sbatch, and in the batch script mpirun inside the allocation: the allocation is
#     the layout (SLURM_JOB_NUM_NODES, SLURM_TASKS_PER_NODE); mpirun takes its nodes
#     and slots from it (no hostfile); MPI's view, dtrain's and Open MPI's variables
#     must be the layout.
# In both, every rank takes device cuda:l, GPU GPU-<node>-l, and dtrain's launcher check
# agrees. The check must reject two wrong layouts (one node more; the same ranks split
# otherwise), and the cluster must leave nothing behind.
# Usage: slurm_rank_discovery.sh RANK_PROBE MPIEXEC WORK_DIR SLOTS...
set -u
probe=$1 mpiexec=$2 work=$3
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/mpi-env.sh
source "$here/../../scripts/mpi-env.sh"
# shellcheck source=slurm_cluster.sh
source "$here/slurm_cluster.sh"
# shellcheck source=expected_ranks.sh
source "$here/expected_ranks.sh"

# SLURM_TASKS_PER_NODE for SLOTS...: counts in node order, a run of k equal counts c
# written c(xk), as Slurm writes it.
tasks_per_node() {
  local out="" c="" k=0 s
  for s in "$@" ""; do  # the empty count ends the last run
    if [ "$s" = "$c" ]; then k=$((k + 1)); continue; fi
    [ -n "$c" ] && out+="${out:+,}$c$([ "$k" -gt 1 ] && echo "(x$k)")"
    c=$s k=1
  done
  echo "$out"
}

rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
ranks=0 most=0
for s in "$@"; do
  ranks=$((ranks + s))
  [ "$s" -gt "$most" ] && most=$s
done
slurm_cluster_up "$work/slurm" "$@"
DTRAIN_PROBE_GPUS=$(seq 0 $((most - 1)) | sed 's/^/GPU-{node}-/' | paste -sd,)
# The ranks' messages over TCP on the cluster's subnet only (Note [Nodes as namespaces]);
# srun and sbatch pass the environment on to the tasks and the batch script.
export DTRAIN_PROBE_GPUS OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=$cluster_subnet \
       OMPI_MCA_oob_tcp_if_include=$cluster_subnet

# 1. srun: every task a rank, through PMIx. --time: Slurm ends a job that hangs.
slurm_exec node0 srun --mpi=pmix --nodes=$# --ntasks=$ranks --time=2 --kill-on-bad-exit=1 "$probe" \
  >"$work/srun.log" 2>&1
code=$?
cat "$work/srun.log"
[ "$code" = 0 ] || fail "srun of the probe exited $code"
grep '^rank=' "$work/srun.log" >"$work/srun.lines"
diff <(expected_lines srun "$@") "$work/srun.lines" ||
  fail "under srun, the ranks' view (>) is not the layout launched (<): slots $*"

# 2. sbatch, and mpirun in the batch script. mpirun starts Open MPI's daemons on the
# other nodes through srun, and its ranks inherit the Slurm variables of the step that
# started their node's daemon (the batch script's, or a one-task step); those describe
# the daemons, not the ranks, and dtrain's launcher check leaves them aside when Open
# MPI's are set (launch/launcher_env.cpp), so the comparison does too.
cat >"$work/probe.sbatch" <<SCRIPT
#!/usr/bin/env bash
echo "allocation: SLURM_JOB_NUM_NODES=\$SLURM_JOB_NUM_NODES SLURM_TASKS_PER_NODE=\$SLURM_TASKS_PER_NODE"
exec "$mpiexec" -np "\$SLURM_NTASKS" --map-by slot -x DTRAIN_PROBE_GPUS "$probe"
SCRIPT
slurm_batch --nodes=$# --ntasks=$ranks --time=2 --output="$work/sbatch.log" \
  "$work/probe.sbatch"
code=$?
cat "$work/sbatch.log"
[ "$code" = 0 ] || fail "the batch job did not complete"
allocation="allocation: SLURM_JOB_NUM_NODES=$# SLURM_TASKS_PER_NODE=$(tasks_per_node "$@")"
grep -qxF "$allocation" "$work/sbatch.log" || fail "the batch job's allocation is not: $allocation"
grep '^rank=' "$work/sbatch.log" | sed 's/ SLURM_[A-Z]*=[^ ]*//g' >"$work/sbatch.lines"
diff <(expected_lines mpirun "$@") "$work/sbatch.lines" ||
  fail "under mpirun in the allocation, the ranks' view (>) is not the layout launched (<): slots $*"

# The check can fail: a layout with one node more, and the same ranks split otherwise
# (one rank moved from the fullest node to another).
slots=("$@")
fullest=0
for i in "${!slots[@]}"; do [ "${slots[$i]}" -gt "${slots[$fullest]}" ] && fullest=$i; done
moved=("${slots[@]}")
moved[fullest]=$((moved[fullest] - 1))
other=$(( fullest == 0 ? 1 : 0 ))
moved[other]=$((moved[other] + 1))
for launcher in srun sbatch; do
  for wrong in "$* 1" "${moved[*]}"; do
    # shellcheck disable=SC2086
    if expected_lines "${launcher/sbatch/mpirun}" $wrong | diff -q - "$work/$launcher.lines" >/dev/null; then
      fail "the check of the $launcher job accepts the wrong layout (slots $wrong)"
    fi
  done
done
slurm_cluster_down || failures=$((failures + 1))
echo "Slurm rank discovery on slots $*: $failures failure(s)"
[ "$failures" = 0 ]
