#!/usr/bin/env bash
# Faults across nodes (DESIGN contract 8: no hang), on the namespace cluster
# (netns_cluster.sh): the MLP trains on 2 nodes x 2 ranks with comm.timeout_s = 3 and
# a checkpoint every 5 steps in the run directory, which every node sees; once step 15
# is done, node1 fails in one of three ways (KIND):
#   cut    its link goes down: the switch's port to node1, as a pulled cable would
#   loss   its link drops 30% of the packets node1 sends (tc netem; where the kernel
#          has no netem, the same random drop by nftables on node1's eth0); the run
#          has 15 steps left to do, slowly
#   kill   SIGKILL to every rank on node1 at once
# Each trial must:
#   - end every rank on every node within comm.timeout_s + 5 s (the bound) of the fault;
#     for loss, which may slow training down and may let it complete, of the last step
#     (no stretch longer than the bound passes without a step or the end of every rank);
#   - end with a message that names node1 and a rank on it: the watchdog's "rank 2 on
#     node1 has not been heard from" (cut; loss where it does not complete), mpirun's
#     "process rank 2 ... on node node1 exited on signal 9" (kill);
#   - leave nothing running in the nodes' namespaces (mpirun, Open MPI's daemons) within
#     the launcher's bound, 7 s more (Note [A node that stops answering]);
#   - leave the newest checkpoint whole: one process resumes from it and trains a step.
# Prints a line per trial and a summary; the trials' figures also go to
# WORK_DIR/trials.tsv (bench/cluster_fault_trials.sh makes the RESULTS table of them).
# Exits 77 (a skip, with the reason) where the kernel refuses namespaces, or, for loss,
# refuses both netem and nftables.
# Usage: cluster_fault.sh DTRAIN MPIEXEC SOURCE_DIR WORK_DIR cut|loss|kill [TRIALS]
#
# Note [A node that stops answering]
# When node1's link goes down, nothing tells the other nodes: no reset, no error, only
# silence. The ranks learn of it from their watchdogs (Note [Naming the silent rank])
# and abort: mpirun ends node0's ranks, and node1's Open MPI daemon ends node1's (an
# abort needs no word from mpirun to end the ranks of its own node). mpirun then waits
# for node1's daemon to confirm that node1's ranks have ended, and the daemon waits to
# tell it; each keeps waiting until TCP gives up on its unanswered message, which by
# Linux's default (net.ipv4.tcp_retries2 = 15) takes about 15 minutes. Open MPI's own
# keepalive (oob_tcp_keepalive_*) cannot cut that short: the kernel sends no keepalive
# while data waits to be acknowledged, and keepalives short enough to matter declare a
# node dead under mere packet loss (a trial of 30% loss with 1 s keepalives lost its
# daemon that way). So the cluster's nodes give up on a silent peer sooner
# (tcp_retries2 = 3: retransmissions at 0.2, 0.6, 1.4 and 3.0 s, given up at 6.2 s):
# after the watchdog fires, which
# must come first (with tcp_retries2 = 2, TCP gave up first: Open MPI's TCP transport
# then failed node1's ranks from inside MPI before their watchdogs fired, and they
# lived on until their daemon gave up, 6 to 7 s after the cut), and soon enough for
# mpirun to report the lost daemon and end about 6 s after the watchdog fired. Hence
# two bounds: the ranks' (the timeout plus 5 s, dtrain's contract) and the launcher's
# (7 s more). A real cluster needs the same (the sysctl on its nodes, or a resource
# manager that ends the job of a failed node, as Slurm does); bench/RESULTS.md ("Faults
# across nodes") has the times.
set -u
dtrain=$1 cluster_mpiexec=$2 src=$3 work=$4 kind=$5 trials=${6:-1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../scripts/mpi-env.sh
source "$here/../../scripts/mpi-env.sh"
# shellcheck source=netns_cluster.sh
source "$here/netns_cluster.sh"

case $kind in cut|loss|kill) ;; *) echo "FAILED: no fault kind $kind (cut, loss or kill)"; exit 2 ;; esac
timeout_s=3
bound=$((timeout_s + 5))
launcher_bound=$((bound + 7))   # Note [A node that stops answering]
fault_after=15
[ "$kind" = loss ] && max_steps=$((fault_after + 15)) || max_steps=100000
config=(train "$src/configs/fashion_mnist_mlp.yaml" --set train.max_steps=$max_steps --set train.epochs=100
        --set comm.timeout_s=$timeout_s --set eval.every_steps=0 --set log.every_steps=1
        --set checkpoint.every_steps=5)
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
now() { date +%s.%N; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

# "PID NODE PROGRAM" of every process in the nodes' namespaces but the nodes' holders
# (PROGRAM: the base name of its argv[0]). One find over /proc: quick enough to take
# between two steps.
node_processes() {
  local pid node program
  find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/net' -printf '%h %l\n' 2>/dev/null |
    awk -v nodes="$(while read -r node pid _; do
                      printf '%s=%s=%s,' "$node" "$pid" "$(readlink "/proc/$pid/ns/net")"
                    done <"$cluster_dir/nodes")" '
      BEGIN {
        n = split(nodes, list, ",")
        for (i = 1; i < n; i++) { split(list[i], f, "="); at[f[3]] = f[1]; holder[f[2]] = 1 }
      }
      { split($1, p, "/"); if (($2 in at) && !(p[3] in holder)) print p[3], at[$2] }' |
    while read -r pid node; do
      program=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -1)
      [ -n "$program" ] && echo "$pid $node ${program##*/}"
    done
}

# Applies the fault to node1. Returns 77 where the kernel cannot (loss), with the reason
# in $work/fault.err.
apply_fault() {
  case $kind in
    cut) _cluster_sw ip link set port1 down ;;
    kill)
      # shellcheck disable=SC2046
      kill -9 $(awk '$2 == "node1" && $3 == "dtrain" { print $1 }' "$1") ;;
    loss)
      cluster_exec node1 tc qdisc add dev eth0 root netem loss 30% 2>"$work/fault.err" && return 0
      command -v nft >/dev/null ||
        { echo "and nft is missing (scripts/install-deps.sh --test installs nftables)" >>"$work/fault.err"; return 77; }
      cluster_exec node1 nft -f - 2>>"$work/fault.err" <<'EOF' || return 77
table inet dtrain_fault {
  chain out {
    type filter hook output priority 0;
    oifname "eth0" numgen random mod 100 < 30 drop
  }
}
EOF
      echo "(tc netem refused: $(head -1 "$work/fault.err"); dropping 30% of node1's packets with nftables)" ;;
  esac
}

printf '%s\n' "trial	kind	exit	fault_step	last_step	ranks_end_s	all_end_s	longest_quiet_s	within	named	checkpoint	message" \
  >"$work/trials.tsv"
echo "| trial | fault | exit | steps (fault, last) | s to the last rank's end | s to the last process's end | longest quiet s | named | newest checkpoint resumes |"
echo "| ---: | --- | ---: | --- | ---: | ---: | ---: | --- | --- |"
for trial in $(seq 1 "$trials"); do
  run="$work/run$trial" log="$work/trial$trial.log"
  cluster_up "$work/cluster$trial" 2 2
  # Note [A node that stops answering]: give up on a silent peer after 3 s.
  for node in node0 node1; do cluster_exec "$node" sysctl -qw net.ipv4.tcp_retries2=3 || exit 1; done
  cluster_mpirun -np 4 --map-by slot "$dtrain" "${config[@]}" --run-dir "$run" >"$log" 2>&1 &
  job=$!
  # Every rank runs once the first step is done: the job's processes, then the fault
  # once step $fault_after is done.
  for wanted in 1 $fault_after; do
    until grep -qs "\"kind\":\"train\",\"step\":$wanted," "$run/metrics.jsonl"; do
      kill -0 "$job" 2>/dev/null || break
      sleep 0.02
    done
    [ "$wanted" = 1 ] && node_processes >"$work/processes$trial"
  done
  fault_step=$(grep -c '"kind":"train"' "$run/metrics.jsonl" 2>/dev/null)
  start=$(now)
  apply_fault "$work/processes$trial"
  applied=$?
  if [ "$applied" = 77 ]; then
    cluster_down >/dev/null
    cluster_skip "the kernel refuses packet loss: $(tr '\n' ' ' <"$work/fault.err")"
  fi
  [ "$applied" = 0 ] || fail "trial $trial: the $kind could not be applied"
  # Until every process of the job has ended, or for the bound after the last sign of
  # progress (plus 10 s, to measure a late end): when each rank, and the last process,
  # ended, and the longest time without a step or an end.
  read -r -a ranks <<<"$(awk '$3 == "dtrain" { printf "%s ", $1 }' "$work/processes$trial")"
  read -r -a all <<<"$(awk '{ printf "%s ", $1 }' "$work/processes$trial")"
  ranks_end="" all_end="" progress=$start quiet=0
  while :; do
    t=$(now)
    alive=0
    for pid in "${ranks[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1 && break; done
    if [ -z "$ranks_end" ]; then
      last=$(date -r "$run/metrics.jsonl" +%s.%N)
      above "$last" "$progress" && progress=$last
      above "$(minus "$t" "$progress")" "$quiet" && quiet=$(minus "$t" "$progress")
      [ "$alive" = 0 ] && ranks_end=$t
    fi
    alive=0
    for pid in "${all[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1 && break; done
    [ "$alive" = 0 ] && all_end=$t && break
    above "$(minus "$t" "$progress")" $((launcher_bound + 5)) && break
    sleep 0.05
  done
  left=$(node_processes)
  cluster_down || fail "trial $trial: the cluster was not removed"
  wait "$job"
  code=$?
  last_step=$(grep -c '"kind":"train"' "$run/metrics.jsonl")
  ranks_s=$( [ -n "$ranks_end" ] && minus "$ranks_end" "$start" || echo "-")
  all_s=$( [ -n "$all_end" ] && minus "$all_end" "$start" || echo "-")

  # Within the bounds: every rank ended within the bound of the fault (cut, kill) or of
  # the last step (loss, which may train on), and every process of the job within the
  # launcher's bound of it.
  within=yes
  if [ -z "$ranks_end" ] || [ -z "$all_end" ] || [ -n "$left" ]; then
    within=no
    fail "trial $trial ($kind): still running $((launcher_bound + 5)) s after the last progress" \
         "(left: $(tr '\n' ';' <<<"$left"))"
  elif [ "$kind" != loss ] && above "$ranks_s" "$bound"; then
    within=no
    fail "trial $trial ($kind): the last rank ended $ranks_s s after the fault, more than $bound s"
  elif above "$quiet" "$bound"; then
    within=no
    fail "trial $trial ($kind): $quiet s from the fault or the last step to the end of every rank, more than $bound s"
  elif above "$(minus "$all_end" "$progress")" "$launcher_bound"; then
    within=no
    fail "trial $trial ($kind): the launcher ended $(minus "$all_end" "$progress") s after the fault or the last" \
         "step, more than $launcher_bound s"
  fi

  # The message: who went silent, and where.
  first=$(grep -m1 "dtrain: no progress:" "$log")
  named=no message=""
  case $kind in
    cut)
      message=$(grep -oE "rank [23] on node1 has not been heard from" <<<"$first" | head -1)
      [ "$code" != 0 ] && [ -n "$message" ] && named=yes
      grep -qE "rank [01] on node0 has not been heard from" <<<"$first" && named=no &&
        fail "trial $trial: the first message calls a rank of node0 silent: $first" ;;
    loss)
      if [ "$code" = 0 ] && [ "$last_step" = "$max_steps" ]; then
        named=yes message="completed ($max_steps steps)"
      else
        message=$(grep -oE "rank [23] on node1 (has not been heard from|is still at step)" "$log" | head -1)
        [ "$code" != 0 ] && [ -n "$message" ] && named=yes
      fi ;;
    kill)
      message=$(grep -oE "process rank [23] with PID [0-9]+ on node node1 exited on signal 9" "$log" | head -1)
      [ "$code" != 0 ] && [ -n "$message" ] && named=yes ;;
  esac
  if [ "$named" = no ]; then
    fail "trial $trial ($kind): exit $code, no message naming node1 and its rank; the log says:"
    grep -vE "^(plan|step|eval)|^dtrain: checkpoint" "$log" | head -20
  fi

  # The newest checkpoint resumes in one process (its checksums are checked on load).
  newest=$(ls "$run/checkpoints"/ckpt-*.dtrain 2>/dev/null | tail -1)
  resumes=no
  if [ -n "$newest" ]; then
    at=$((10#$(basename "$newest" | tr -dc 0-9)))
    "$dtrain" train "$src/configs/fashion_mnist_mlp.yaml" --set train.max_steps=$((at + 1)) --set eval.every_steps=0 \
      --set comm.backend=self --resume "$newest" --run-dir "$work/resume$trial" >"$work/resume$trial.log" 2>&1 &&
      grep -qF "resuming from $newest (step $at)" "$work/resume$trial.log" && resumes="yes (step $at)"
  fi
  [ "$resumes" = no ] && fail "trial $trial ($kind): the newest checkpoint (${newest:-none}) does not resume:" &&
    tail -5 "$work/resume$trial.log" 2>/dev/null

  echo "| $trial | $kind | $code | $fault_step, $last_step | $ranks_s | $all_s | $quiet | $named: ${message:-none} | $resumes |"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$trial" "$kind" "$code" "$fault_step" "$last_step" \
    "$ranks_s" "$all_s" "$quiet" "$within" "$named" "$resumes" "${message:-none}" >>"$work/trials.tsv"
done
echo "cluster faults ($kind, $trials trial(s), bounds $bound s for the ranks, $launcher_bound s for the launcher): $failures failure(s); logs in $work"
[ "$failures" = 0 ]
