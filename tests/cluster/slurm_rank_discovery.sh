#!/usr/bin/env bash
# Rank discovery under the real Slurm, on the namespace cluster (slurm_cluster.sh): one
# slurmd per node, node i with SLOTS[i] CPUs, and jobs of as many tasks as there are
# CPUs on all the nodes, so Slurm can only place SLOTS[i] tasks on node i. Each node
# shows as many GPUs as the fullest node has tasks (GPU-<node>-0, ..., through
# DTRAIN_PROBE_GPUS).
#  1. srun: Slurm's own view of every task (its node; SLURM_PROCID, _NTASKS, _LOCALID,
#     _NODEID, _NNODES) is the layout: global rank r of N, node-local rank l, node i
#     of K.
#  2. sbatch, and in the batch script mpirun inside the allocation, as a user runs MPI
#     ranks under Slurm: the allocation is the layout (SLURM_JOB_NUM_NODES,
#     SLURM_TASKS_PER_NODE); mpirun takes its nodes and slots from it (no hostfile);
#     rank_probe's ranks, through the code dtrain runs at start-up, see what Slurm
#     placed there: rank r on node i with node-local rank l, device cuda:l and GPU
#     GPU-<node>-l, Open MPI's variables saying the same, dtrain's launcher check
#     agreeing.
# The MPI ranks are not started by srun --mpi=pmix itself: Debian's Open MPI 4.1.4,
# started so over TCP between nodes, now and then dies in MPI_Init (Note [srun and
# Open MPI over TCP]). The check must reject two wrong layouts (one node more; the
# same ranks split otherwise), and the cluster must leave nothing behind.
#
# Note [srun and Open MPI over TCP]
# Under srun --mpi=pmix, with the TCP transport between the nodes, 7 of 130 jobs of
# rank_probe on 1, 2 and 1 ranks lost a rank in MPI_Init to a segmentation fault (and
# 3 of 80 with mpi_add_procs_cutoff raised above the job size; none of 70 on 2 x 2):
# its TCP transport received a peer's first message (ob1's match header, tag 0x41)
# before any callback for that tag was registered, and called a null function (core
# dump: ompi_mpi_init, opal_progress, the TCP transport's receive handler, address
# 0). No such failure in 40 jobs of salloc + mpirun, nor in any sbatch + mpirun job
# of these tests, where Open MPI's own daemons start the ranks. That is Open MPI
# 4.1.4's start-up under direct launch, not dtrain's and not the cluster's: the MPI
# jobs here use mpirun inside the allocation, as launch/slurm/dtrain.sbatch does with
# DTRAIN_LAUNCHER=mpirun.
set -u
probe=$1 mpiexec=$2 work=$3
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/mpi-env.sh
source "$here/../../scripts/mpi-env.sh"
# shellcheck source=slurm_cluster.sh
source "$here/slurm_cluster.sh"

# The lines for ranks placed on nodes with SLOTS... ranks each: srun's task probe
# (Slurm's variables), or rank_probe under mpirun (dtrain's view and Open MPI's).
expected_lines() {
  local launcher=$1 size=0 s i=0 l r=0
  shift
  for s in "$@"; do size=$((size + s)); done
  for s in "$@"; do
    for l in $(seq 0 $((s - 1))); do
      if [ "$launcher" = srun ]; then
        echo "rank=$r node=node$i SLURM_NTASKS=$size SLURM_LOCALID=$l SLURM_NODEID=$i SLURM_NNODES=$#"
      else
        echo "rank=$r size=$size node=node$i nodes=$# local_rank=$l local_size=$s launcher=agrees" \
             "device=cuda:$l gpu=GPU-node$i-$l OMPI_COMM_WORLD_RANK=$r OMPI_COMM_WORLD_SIZE=$size" \
             "OMPI_COMM_WORLD_LOCAL_RANK=$l OMPI_COMM_WORLD_LOCAL_SIZE=$s OMPI_COMM_WORLD_NODE_RANK=$l" \
             "OMPI_MCA_orte_num_nodes=$#"
      fi
      r=$((r + 1))
    done
    i=$((i + 1))
  done
}

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
# sbatch passes the environment on to the batch script, and mpirun's daemons to the ranks.
export DTRAIN_PROBE_GPUS OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=$cluster_subnet \
       OMPI_MCA_oob_tcp_if_include=$cluster_subnet

# 1. srun of a task that reports Slurm's view of it, sorted by its global rank (the
# variables are the task's, expanded by its shell).
# shellcheck disable=SC2016
slurm_exec node0 srun --nodes=$# --ntasks=$ranks --time=2 --kill-on-bad-exit=1 \
  sh -c 'echo "rank=$SLURM_PROCID node=$(hostname) SLURM_NTASKS=$SLURM_NTASKS SLURM_LOCALID=$SLURM_LOCALID" \
              "SLURM_NODEID=$SLURM_NODEID SLURM_NNODES=$SLURM_NNODES"' >"$work/srun.log" 2>&1
code=$?
cat "$work/srun.log"
[ "$code" = 0 ] || fail "srun of the task probe exited $code"
grep '^rank=' "$work/srun.log" | sort -t= -k2 -n >"$work/srun.lines"
diff <(expected_lines srun "$@") "$work/srun.lines" ||
  fail "under srun, Slurm's view of the tasks (>) is not the layout launched (<): slots $*"

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
