# shellcheck shell=bash
# The real Slurm on the namespace cluster (netns_cluster.sh): Debian's slurm-wlm and
# munge, one slurmd per node. Sourced by a test script, which then calls
#   slurm_cluster_up DIR CPUS...   the cluster of netns_cluster.sh with one node per
#                                  CPUS (node0, node1, ...), munged and slurmctld on
#                                  node0, a slurmd on every node with CPUS CPUs; back
#                                  when every node is idle in sinfo
#   slurm_exec NODE CMD...         a command on NODE with the cluster's SLURM_CONF
#                                  (srun, sbatch, sinfo, scontrol: run them on node0)
#   slurm_batch SBATCH_ARGS...     sbatch on node0, back when the job has ended: 0
#                                  when it completed
#   slurm_cluster_down             ends what slurm_cluster_up started and removes the
#                                  cluster; fails when something is left (also the
#                                  EXIT trap, so a failing script cleans up too)
# Needs root, what netns_cluster.sh needs, and slurm-wlm and munge (scripts/install-deps.sh
# --test installs them). Exits 77 (a skip, with the reason) where the kernel refuses
# namespaces.
#
# Note [Slurm on namespace nodes]
# Slurm runs one slurmd per host: a slurmd finds its NodeName in slurm.conf from the
# host's name and listens on SlurmdPort at the node's address. Several slurmd on one
# host need a Slurm built with --enable-multiple-slurmd (and then slurmd -N NAME, and
# a port of its own per node); Debian's is not. The namespace nodes make that
# unnecessary: each slurmd runs in its node's UTS namespace, where the host name is
# the node's name, and in its network namespace, where port 6818 at 198.18.0.<i+1> is
# its own. What the slurmds share is the file system, as nodes share a cluster's file
# system: the per-node paths of slurm.conf name the node (%n: SlurmdSpoolDir, the pid
# and log files), as they would on a cluster whose spool is on shared storage.
#  - Authentication: one munged on node0, its socket in the cluster's folder (a Unix
#    socket is reached through the file system, from every network namespace), its
#    key made for this cluster alone; every daemon and client is told the socket
#    (AuthInfo), so a munged of the machine, if any, is neither used nor touched.
#  - No cgroups: the nodes share the machine's cgroup tree, which a slurmd would
#    claim for itself; processes are tracked by their parents (proctrack/linuxproc)
#    and tasks are not confined (task/none).
#  - slurmctld runs on node0, as on a small cluster's head node; the clients run on
#    node0 too (it is the node whose address they reach slurmctld at).
#  - Every daemon runs in the cluster's namespaces, so cluster_down's sweep of what
#    runs there ends them, and the jobs' tasks, even after a failure.
#
# Note [PMIx fences in a ring]
# Open MPI 4.1.4's ranks started by srun --mpi=pmix (Slurm's PMIx plugin as the PMIx
# server) over the TCP transport between nodes: with the plugin's default fences, 10
# of 210 jobs of 4 ranks on nodes of 1, 2 and 1 lost a rank in MPI_Init to a
# segmentation fault (none of 70 on 2 x 2). The core dump: ompi_mpi_init,
# opal_progress, the TCP transport's receive handler calling the callback of tag 0x41
# (ob1's first message to a peer), still null: a peer's message had come before the
# rank had registered its receive callbacks, as if the peer had left MPI_Init's
# closing fence before this rank reached it. With PMIxCollFence=ring (mpi.conf) every fence goes round all the
# nodes, and 300 jobs of the same kind ran without a failure; mpirun inside an
# allocation, whose daemons do the fences, had none in 40 either. A cluster whose
# ranks use Open MPI 4.1 over TCP under srun may want the same line in its mpi.conf.
#
# Note [Slurm daemons die with the test]
# A test script killed with SIGKILL (a CTest time-out) runs no cleanup, and a daemon
# that forks itself away, or a job step that slurmd forks away, would outlive it and
# keep the nodes' namespaces alive (with tasks spinning on links to a switch that has
# gone). So the daemons run in the foreground (munged -F, slurmctld -D, slurmd -D) as
# children of the test script, each under `setpriv --pdeathsig KILL` (innermost, after
# any change of user, which clears the setting): the kernel kills them when the script
# dies. Each slurmd is also the first process of a PID namespace of its own (unshare
# --pid --fork --kill-child, with its own /proc, which proctrack/linuxproc reads): its
# job steps, batch scripts and tasks are in that namespace, and the kernel kills them
# all when slurmd dies.

slurm_tools=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=netns_cluster.sh
source "$slurm_tools/netns_cluster.sh"

# In the background, waited for, and ended with the script (PR_SET_PDEATHSIG): a signal
# to the test script tears the cluster down at once, not after a job (as cluster_mpirun).
slurm_exec() {
  local node=$1; shift
  SLURM_CONF=$slurm_dir/slurm.conf setpriv --pdeathsig KILL -- \
    nsenter -t "$(cluster_pid "$node")" -n -u -m --wd="$PWD" -- "$@" &
  wait $!
}

# Submits a batch job on node0 (sbatch ARGS...) and waits for it to end: 0 when it
# completed, else the state it ended in. Ends with the job's time limit (--time), which
# Slurm enforces. sbatch --wait would do, but it polls at growing intervals (up to
# tens of seconds after the job ended); this asks every 0.2 s.
slurm_batch() {
  local job state="" info _
  job=$(slurm_exec node0 sbatch --parsable "$@") || { echo "FAILED: sbatch $*: $job"; return 1; }
  while :; do
    info=$(slurm_exec node0 scontrol show job "$job" 2>&1) ||
      { echo "FAILED: scontrol show job $job: $info"; return 1; }
    state=$(sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' <<<"$info")
    case $state in
      PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | RESIZING) sleep 0.2 ;;
      COMPLETED) return 0 ;;
      *) echo "batch job $job ended $state ($(grep -o 'ExitCode=[^ ]*' <<<"$info"))"; return 1 ;;
    esac
  done
}

# Waits (at most 30 s) until COMMAND succeeds; fails with WHAT and the last output.
_slurm_wait() {
  local what=$1 _ out
  shift
  for _ in $(seq 1 300); do
    out=$("$@" 2>&1) && return 0
    sleep 0.1
  done
  echo "FAILED: $what: $out"
  return 1
}

# Starts CMD... on NODE in the background, a daemon in the foreground (Note [Slurm
# daemons die with the test]). Not a job of this shell (disown): cluster_down's SIGKILL
# to it is no failure to report.
_slurm_daemon() {
  local node=$1; shift
  SLURM_CONF=$slurm_dir/slurm.conf nsenter -t "$(cluster_pid "$node")" -n -u -m --wd="$slurm_dir" -- "$@" \
    >>"$slurm_dir/log/daemons.out" 2>&1 &
  disown $!
}

_slurm_munge_answers() { munge --socket="$1" --no-input | unmunge --socket="$1" >/dev/null; }

_slurm_all_idle() {
  local states
  states=$(slurm_exec node0 sinfo -h -N -o '%N %T') || { echo "$states"; return 1; }
  echo "$states"
  [ "$(grep -c ' idle$' <<<"$states")" = "$slurm_node_count" ]
}

slurm_cluster_up() {
  slurm_dir=$1; shift
  local tool
  for tool in slurmctld slurmd sinfo srun sbatch scontrol munged mungekey munge unmunge; do
    command -v "$tool" >/dev/null || { echo "FAILED: $tool is missing (scripts/install-deps.sh --test installs slurm-wlm and munge)"; exit 1; }
  done
  rm -rf "$slurm_dir" && mkdir -p "$slurm_dir" || exit 1
  slurm_dir=$(realpath "$slurm_dir")
  cluster_up "$slurm_dir/cluster" "$@"
  slurm_node_count=$#
  mkdir -p "$slurm_dir/state" "$slurm_dir/log" || exit 1

  # munge: its own key, in a folder only the munge user reads, and its own socket, in
  # a folder everyone may enter (munged insists on both).
  local munge=$slurm_dir/munge
  mkdir -p "$munge/key" || exit 1
  mungekey --create --keyfile="$munge/key/munge.key" --force || exit 1
  chown -R munge:munge "$munge" && chmod 700 "$munge/key" && chmod 755 "$munge" || exit 1
  _slurm_daemon node0 setpriv --reuid=munge --regid=munge --clear-groups -- \
    setpriv --pdeathsig KILL -- munged --foreground --socket="$munge/munge.socket" --key-file="$munge/key/munge.key" \
    --pid-file="$munge/munged.pid" --log-file="$munge/munged.log" --seed-file="$munge/munged.seed"
  _slurm_wait "munged did not answer on $munge/munge.socket" _slurm_munge_answers "$munge/munge.socket" ||
    { tail -3 "$munge/munged.log"; exit 1; }

  # Each node: its spool, and a TmpFS of its own, as a real node's /tmp is (Slurm's
  # PMIx plugin makes a folder there named by the job step alone, on every node of it;
  # TmpFS expands %n to the node's name). The nodes keep the machine's /tmp, where the
  # build and the tests' files may be, as they see the rest of the file system.
  # Its CPUs are the count given, whatever this machine has (config_overrides): the
  # tasks of a job fill the nodes in that layout.
  local i=0 cpus nodes="" names
  for cpus in "$@"; do
    mkdir -p "$slurm_dir/spool/node$i" "$slurm_dir/tmp/node$i" && chmod 1777 "$slurm_dir/tmp/node$i" || exit 1
    nodes+="NodeName=node$i NodeAddr=198.18.0.$((i + 1)) CPUs=$cpus State=UNKNOWN"$'\n'
    i=$((i + 1))
  done
  names="node[0-$(($# - 1))]"
  cat >"$slurm_dir/slurm.conf" <<CONF
ClusterName=dtraincluster
SlurmctldHost=node0(198.18.0.1)
AuthType=auth/munge
AuthInfo=socket=$munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$slurm_dir/state
SlurmdSpoolDir=$slurm_dir/spool/%n
TmpFS=$slurm_dir/tmp/%n
SlurmctldPidFile=$slurm_dir/slurmctld.pid
SlurmdPidFile=$slurm_dir/slurmd-%n.pid
SlurmctldLogFile=$slurm_dir/log/slurmctld.log
SlurmdLogFile=$slurm_dir/log/slurmd-%n.log
MailProg=/bin/true
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
SelectType=select/cons_tres
MpiDefault=none
ReturnToService=2
${nodes}PartitionName=cluster Nodes=$names Default=YES MaxTime=INFINITE State=UP
CONF
  # Slurm's PMIx plugin reads mpi.conf beside slurm.conf (Note [PMIx fences in a ring]).
  echo "PMIxCollFence=ring" >"$slurm_dir/mpi.conf"
  _slurm_daemon node0 setpriv --pdeathsig KILL -- slurmctld -D
  for i in $(seq 0 $(($# - 1))); do
    _slurm_daemon "node$i" setpriv --pdeathsig KILL -- unshare --pid --fork --kill-child --mount-proc -- slurmd -D
  done
  _slurm_wait "the Slurm nodes did not all become idle" _slurm_all_idle ||
    { tail -n 3 "$slurm_dir"/log/*.log; exit 1; }
  echo "slurm: $(slurm_exec node0 sinfo -h -N -o '%N %T %c' | paste -sd, | sed 's/,/, /g')"
}

slurm_cluster_down() { cluster_down; }
