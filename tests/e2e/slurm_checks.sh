#!/usr/bin/env bash
# A real single-node Slurm on localhost (Debian's slurm-wlm and munge), configured and
# started here and stopped at the end (by the pid files of what it started):
#  1. sbatch --wait of launch/slurm/dtrain.sbatch with 2 tasks (srun through PMIx) on a
#     CPU config: the job succeeds, its output shows 2 ranks and the end of training,
#     and the run directory has the metrics of every step.
#  2. Preemption: a longer job gets SIGUSR1 mid-run (scancel --signal=USR1, as
#     --signal=USR1@90 would before a time limit); the ranks checkpoint and exit 4,
#     the script requeues the job, and the second run resumes from the checkpoint and
#     finishes.
#     A job cancelled by scancel (SIGTERM to every task) checkpoints before it ends;
#     a new job on the same run directory resumes from it.
#  3. The same job under mpirun inside the allocation (DTRAIN_LAUNCHER=mpirun).
# Exit 77 (a skip, with the reason) where Slurm or munge is not installed or cannot start.
# Usage: slurm_checks.sh DTRAIN SOURCE_DIR WORK_DIR METRICS_CHECK
set -u
dtrain=$1 src=$2 work=$3 check=$4
for tool in slurmctld slurmd sbatch srun scontrol munged; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/install-deps.sh --test installs slurm-wlm and munge)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: starting slurmd and munged here needs root"; exit 77; }
rm -rf "$work" && mkdir -p "$work/state" "$work/spool" "$work/munge" "$work/jobs"
chown munge:munge "$work/munge" && chmod 700 "$work/munge"
host=$(hostname -s)

stop_daemons() {
  for pidfile in "$work/slurmd.pid" "$work/slurmctld.pid" "$work/munge/munged.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  sleep 1
  for pidfile in "$work/slurmd.pid" "$work/slurmctld.pid" "$work/munge/munged.pid"; do
    [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null
  done
}
trap stop_daemons EXIT

# munge on a socket of its own, so a munged already running is left alone.
socket=$work/munge/munge.socket
su -s /bin/sh munge -c "/usr/sbin/munged --socket=$socket --pid-file=$work/munge/munged.pid \
  --log-file=$work/munge/munged.log --seed-file=$work/munge/munged.seed --force" ||
  { echo "SKIP: munged did not start: $(tail -2 "$work/munge/munged.log" 2>/dev/null)"; exit 77; }
export SLURM_CONF=$work/slurm.conf
cat >"$SLURM_CONF" <<CONF
ClusterName=dtraintest
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
SchedulerType=sched/builtin
SelectType=select/cons_tres
MpiDefault=none
ReturnToService=2
KillWait=10
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
CONF
slurmctld -f "$SLURM_CONF" || { echo "SKIP: slurmctld did not start: $(tail -3 "$work/slurmctld.log")"; exit 77; }
slurmd -f "$SLURM_CONF" || { echo "SKIP: slurmd did not start: $(tail -3 "$work/slurmd.log")"; exit 77; }
for _ in $(seq 1 60); do
  sinfo -h -o %T 2>/dev/null | grep -qE "^idle" && break
  sleep 0.5
done
sinfo -h -o %T | grep -qE "^idle" || { echo "SKIP: the Slurm node did not become idle: $(sinfo 2>&1)"; exit 77; }
echo "slurm is up: $(sinfo -h -o '%P %T %c CPUs')"

failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
export DTRAIN=$dtrain OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
cfg=$src/configs/fashion_mnist_cnn.yaml
submit() {  # submit NAME RUN_DIR [sbatch options] -- [train options]
  local name=$1 run=$2; shift 2
  local sb=()
  while [ "$1" != "--" ]; do sb+=("$1"); shift; done
  shift
  sbatch --parsable --ntasks=2 --ntasks-per-node=2 --gpus-per-task=0 --output="$work/jobs/$name-%j.out" "${sb[@]}" \
    "$src/launch/slurm/dtrain.sbatch" "$cfg" "$run" --set eval.every_steps=0 --set log.every_steps=50 "$@"
}

# 1. A 2-task job through srun.
job=$(submit basic "$work/basic" --wait -- --set train.max_steps=60)
code=$?
out=$(cat "$work"/jobs/basic-*.out 2>/dev/null)
[ "$code" = 0 ] || fail "sbatch --wait of the basic job: exit $code"
grep -q "dtrain: 2 rank(s) over mpi" <<<"$out" || fail "the basic job did not run 2 ranks: $(tail -5 <<<"$out")"
grep -q "dtrain: done: 60 steps" <<<"$out" || fail "the basic job did not finish training"
[ "$(grep -c '"kind":"train"' "$work/basic/metrics.jsonl" 2>/dev/null)" = 60 ] || fail "the basic job's metrics do not have 60 steps"

# 2. Preemption: SIGUSR1 mid-run, requeue, resume.
job=$(submit preempt "$work/preempt" -- --set train.max_steps=800)
for _ in $(seq 1 240); do  # until it has trained a little (at most 2 minutes)
  [ "$(grep -c '"kind":"train"' "$work/preempt/metrics.jsonl" 2>/dev/null || echo 0)" -ge 20 ] && break
  sleep 0.5
done
scancel --signal=USR1 "$job"
released=0
for _ in $(seq 1 480); do  # until the job has finished its second run (at most 4 minutes)
  info=$(scontrol show job "$job" 2>/dev/null)
  state=$(sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' <<<"$info")
  [ "$state" = COMPLETED ] || [ "$state" = FAILED ] || [ "$state" = CANCELLED ] && break
  # Slurm holds a requeued job back for a couple of minutes (its BeginTime); the test
  # releases it after 10 s, once the first run's step has been cleaned up.
  if [ "$state" = PENDING ] && grep -q "Restarts=[1-9]" <<<"$info"; then
    released=$((released + 1))
    [ "$released" = 20 ] && scontrol update JobId="$job" StartTime=now
  fi
  sleep 0.5
done
out=$(cat "$work"/jobs/preempt-*.out 2>/dev/null)
echo "preempted job $job ended $state"
[ "$state" = COMPLETED ] || fail "the preempted job ended $state: $(tail -15 <<<"$out")"
grep -q "stop requested (a signal) after step" <<<"$out" || fail "the preempted job did not stop on SIGUSR1"
grep -q "requeueing job $job" <<<"$out" || fail "the preempted job was not requeued"
grep -q "resuming from $work/preempt/checkpoints/ckpt-" <<<"$out" || fail "the requeued job did not resume"
grep -q "dtrain: done: 800 steps" <<<"$out" || fail "the requeued job did not finish"

# 2b. scancel: Slurm sends SIGTERM to every task; the ranks checkpoint before they
# go, the job ends cancelled, and a new job on the same run directory resumes.
job=$(submit cancel "$work/cancel" -- --set train.max_steps=600)
for _ in $(seq 1 240); do
  [ "$(grep -c '"kind":"train"' "$work/cancel/metrics.jsonl" 2>/dev/null || echo 0)" -ge 20 ] && break
  sleep 0.5
done
scancel "$job"
for _ in $(seq 1 120); do
  state=$(scontrol show job "$job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  [ "$state" = CANCELLED ] && break
  sleep 0.5
done
sleep 1
out=$(cat "$work"/jobs/cancel-*.out 2>/dev/null)
[ "$state" = CANCELLED ] || fail "scancel: the job ended $state"
grep -q "stop requested (a signal) after step" <<<"$out" || fail "scancel: the ranks did not stop with a checkpoint: $(tail -8 <<<"$out")"
ls "$work/cancel/checkpoints/"ckpt-*.dtrain >/dev/null 2>&1 || fail "scancel: no checkpoint"
submit cancel_again "$work/cancel" --wait -- --set train.max_steps=600 >/dev/null
out=$(cat "$work"/jobs/cancel_again-*.out 2>/dev/null)
grep -q "resuming from $work/cancel/checkpoints/ckpt-" <<<"$out" && grep -q "dtrain: done: 600 steps" <<<"$out" ||
  fail "the job after scancel did not resume and finish: $(tail -5 <<<"$out")"

# 3. mpirun inside the allocation.
DTRAIN_LAUNCHER=mpirun submit mpirun "$work/mpirun" --wait -- --set train.max_steps=30 >/dev/null
code=$?
out=$(cat "$work"/jobs/mpirun-*.out 2>/dev/null)
[ "$code" = 0 ] && grep -q "dtrain: done: 30 steps" <<<"$out" || fail "the mpirun job: exit $code: $(tail -5 <<<"$out")"

echo "slurm checks: $failures failure(s); logs in $work"
[ "$failures" = 0 ]
