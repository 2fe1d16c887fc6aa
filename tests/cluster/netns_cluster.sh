# shellcheck shell=bash
# A cluster of 2 or 3 nodes on this machine, for the tests of jobs that span nodes.
# Sourced by a test script, which then calls
#   cluster_up DIR SLOTS...       one node per SLOTS (node0, node1, ...), with SLOTS
#                                 MPI slots each; exits 77 (a skip, with the reason)
#                                 where the kernel refuses namespaces
#   cluster_mpirun ARGS...        Open MPI's mpirun on node0, ranks on every node
#   cluster_exec NODE CMD...      a command in NODE's namespaces
#   cluster_down                  ends and removes everything cluster_up made; fails
#                                 when something is left (cluster_up also sets it as
#                                 the EXIT trap, so a failing script cleans up too)
# Needs root, iproute2 (ip, bridge) and util-linux (unshare, nsenter, setpriv).
#
# Note [Nodes as namespaces]
# A node is a holder process (sleep) in network, UTS and mount namespaces of its own:
#  - network: lo and eth0, 198.18.0.<i+1>/24 (198.18.0.0/15 is reserved for network
#    benchmarks, RFC 2544), one end of a veth link whose other end is a port of a
#    bridge in a namespace of its own, the switch. Nothing is made in the namespace the
#    tests run in, so neither the machine's network nor other tests see the cluster,
#    and two clusters can run at once.
#  - UTS: the hostname node<i>, which MPI and dtrain report.
#  - mount: the cluster's /etc/hosts (every node's name and address) bound over the
#    machine's, so node names resolve on every node as they do on a real cluster; the
#    rest of the file system is the machine's, as a shared file system would be.
# mpirun runs on node0, as it would on a cluster's first node, and starts Open MPI's
# daemon on the other nodes through tests/cluster/ns_agent.sh, which enters the node's
# namespaces where ssh would log in (cluster_mpirun has every flag this needs).
# Holders start under PR_SET_PDEATHSIG (setpriv --pdeathsig KILL): they die with the
# shell that sourced this file even when it is killed with SIGKILL, and a namespace
# ends with its last process, its links with it. cluster_down kills what still runs in
# the cluster's namespaces (found by the namespaces' ids, so nothing else is touched).

cluster_tools=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cluster_subnet=198.18.0.0/15
cluster_mpiexec=${cluster_mpiexec:-mpirun}
cluster_holders=()   # pids: the switch, then node0, node1, ...
cluster_net_ids=()   # their network namespaces, net:[inode]

cluster_skip() { echo "SKIP: $*"; exit 77; }

# Whether process $1 is in network, UTS and mount namespaces other than this shell's:
# checked before anything is changed in it, so a holder that failed to leave this
# shell's namespaces can never rename the machine or touch its network.
_cluster_apart() {
  local kind mine theirs
  for kind in net uts mnt; do
    mine=$(readlink "/proc/$$/ns/$kind") theirs=$(readlink "/proc/$1/ns/$kind" 2>/dev/null) || return 1
    [ -n "$theirs" ] && [ "$theirs" != "$mine" ] || return 1
  done
}

# Starts a holder (its pid in cluster_last) in new network, UTS and mount namespaces,
# and waits until unshare has moved it there.
_cluster_holder() {
  setpriv --pdeathsig KILL -- unshare --net --uts --mount --propagation private -- sleep infinity \
    2>"$cluster_dir/holder.err" &
  cluster_last=$!
  cluster_holders+=("$cluster_last")
  local _
  for _ in $(seq 1 200); do
    _cluster_apart "$cluster_last" && return 0
    kill -0 "$cluster_last" 2>/dev/null || break
    sleep 0.025
  done
  cluster_skip "the kernel refuses new namespaces: unshare --net --uts --mount: $(cat "$cluster_dir/holder.err")"
}

cluster_pid() { awk -v n="$1" '$1 == n { print $2 }' "$cluster_dir/nodes"; }

cluster_exec() {
  local node=$1; shift
  nsenter -t "$(cluster_pid "$node")" -n -u -m --wd="$PWD" -- "$@"
}

_cluster_sw() { nsenter -t "${cluster_holders[0]}" -n -- "$@"; }

cluster_up() {
  cluster_dir=$1; shift
  local tool
  for tool in ip bridge unshare nsenter setpriv "$cluster_mpiexec"; do
    command -v "$tool" >/dev/null || { echo "FAILED: $tool is missing (scripts/install-deps.sh --test installs it)"; exit 1; }
  done
  [ "$(id -u)" = 0 ] || cluster_skip "network namespaces need root"
  rm -rf "$cluster_dir" && mkdir -p "$cluster_dir" || exit 1
  : >"$cluster_dir/nodes"
  : >"$cluster_dir/hostfile"
  printf '127.0.0.1 localhost\n' >"$cluster_dir/hosts"
  local i
  for i in $(seq 0 $(($# - 1))); do printf '198.18.0.%d node%d\n' $((i + 1)) "$i" >>"$cluster_dir/hosts"; done
  cluster_links_before=$(ip -o link show | awk -F': ' '{ print $2 }')
  trap cluster_down EXIT
  trap 'exit 130' INT TERM

  _cluster_holder
  cluster_net_ids+=("$(readlink "/proc/$cluster_last/ns/net")")
  _cluster_sw ip link add br0 type bridge || cluster_skip "the kernel refuses a bridge in a network namespace"
  _cluster_sw ip link set br0 up || exit 1
  i=0
  local slots pid
  for slots in "$@"; do
    _cluster_holder
    pid=$cluster_last
    cluster_net_ids+=("$(readlink "/proc/$pid/ns/net")")
    _cluster_sw ip link add "port$i" type veth peer name eth0 netns "$pid" ||
      cluster_skip "the kernel refuses veth links between network namespaces"
    _cluster_sw ip link set "port$i" master br0 up || exit 1
    nsenter -t "$pid" -n -u -m -- sh -ec "hostname node$i; mount --bind '$cluster_dir/hosts' /etc/hosts
      ip link set lo up; ip addr add 198.18.0.$((i + 1))/24 dev eth0; ip link set eth0 up" || exit 1
    echo "node$i $pid 198.18.0.$((i + 1))" >>"$cluster_dir/nodes"
    echo "node$i slots=$slots" >>"$cluster_dir/hostfile"
    i=$((i + 1))
  done
  # Ready when every port of the switch forwards (at once without STP; checked, not assumed).
  local _
  for _ in $(seq 1 200); do
    [ "$(_cluster_sw bridge link show | grep -c 'state forwarding')" = "$#" ] && break
    sleep 0.025
  done
  [ "$(_cluster_sw bridge link show | grep -c 'state forwarding')" = "$#" ] ||
    { echo "FAILED: the switch's ports do not forward: $(_cluster_sw bridge link show)"; exit 1; }
  # Every node resolves every node's name. Open MPI 4.1 needs it not (the agent takes
  # node names, and its daemons pass addresses), but programs on a real cluster's
  # nodes, Slurm's daemons among them, look their peers up by name.
  local node names want got
  names=$(awk '{ print $1 }' "$cluster_dir/nodes")
  want=$(awk '{ print $3, $1 }' "$cluster_dir/nodes")
  for node in $names; do
    # shellcheck disable=SC2086
    got=$(cluster_exec "$node" getent hosts $names | awk '{ print $1, $2 }')
    [ "$got" = "$want" ] || { echo "FAILED: on $node the node names resolve to: $got"; exit 1; }
  done
  echo "cluster: $(awk '{ printf "%s%s (%s)", (NR > 1 ? ", " : ""), $1, $3 }' "$cluster_dir/nodes")," \
       "slots $*"
}

# The launch on the cluster (README "Running on several nodes" has a real cluster's):
#  - the nodes and their slots from a hostfile of node names;
#  - ns_agent.sh in place of ssh (Open MPI calls it as it would ssh: NODE COMMAND),
#    from mpirun only (no tree spawn: with 2 or 3 nodes it buys nothing);
#  - TCP only, and only over the cluster's subnet, for the ranks' messages (btl) and
#    for Open MPI's own out-of-band messages (oob); tcp,self leaves out shared memory,
#    so that ranks of one node talk over the network too and nothing bypasses it;
#  - no binding to cores: the nodes share this machine's cores.
# mpirun runs in the background and is waited for, so that a signal to the test
# script (its INT and TERM traps) tears the cluster down at once, not after the job;
# and it dies with the script (PR_SET_PDEATHSIG), its daemons and ranks with it.
cluster_mpirun() {
  DTRAIN_CLUSTER_DIR=$cluster_dir setpriv --pdeathsig KILL -- nsenter -t "$(cluster_pid node0)" -n -u -m --wd="$PWD" -- \
    "$cluster_mpiexec" --hostfile "$cluster_dir/hostfile" \
    --mca plm_rsh_agent "$cluster_tools/ns_agent.sh" --mca plm_rsh_no_tree_spawn 1 \
    --mca btl tcp,self --mca btl_tcp_if_include "$cluster_subnet" --mca oob_tcp_if_include "$cluster_subnet" \
    --bind-to none "$@" &
  wait $!
}

# The processes in the cluster's network namespaces (holders, mpirun, daemons, ranks).
_cluster_processes() {
  local proc id ns
  for proc in /proc/[0-9]*; do
    ns=$(readlink "$proc/ns/net" 2>/dev/null) || continue
    for id in "${cluster_net_ids[@]}"; do
      [ "$ns" = "$id" ] && echo "${proc#/proc/}"
    done
  done
}

cluster_down() {
  [ ${#cluster_holders[@]} -gt 0 ] || return 0
  local pid left="" _
  kill -9 "${cluster_holders[@]}" 2>/dev/null
  for pid in "${cluster_holders[@]}"; do wait "$pid" 2>/dev/null; done
  cluster_holders=()
  # Again until none is left: a daemon may start a process while its siblings die.
  for _ in $(seq 1 200); do
    left=$(_cluster_processes)
    [ -z "$left" ] && break
    # shellcheck disable=SC2086
    kill -9 $left 2>/dev/null
    sleep 0.025
  done
  local links_after
  links_after=$(ip -o link show | awk -F': ' '{ print $2 }')
  cluster_net_ids=()
  if [ -n "$left" ] || [ "$links_after" != "$cluster_links_before" ]; then
    echo "FAILED: the cluster left processes (${left:-none}) or links behind" \
         "(before: $(tr "\n" " " <<<"$cluster_links_before"); after: $(tr "\n" " " <<<"$links_after"))"
    return 1
  fi
  echo "cluster: removed (no process in its namespaces, no link left)"
}
