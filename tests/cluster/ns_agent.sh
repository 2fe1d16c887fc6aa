#!/usr/bin/env bash
# Open MPI's remote-shell agent on the namespace cluster (netns_cluster.sh, Note [Nodes
# as namespaces]): mpirun calls it as it would call ssh, `ns_agent.sh NODE COMMAND...`,
# and it runs COMMAND (Open MPI's daemon, its arguments quoted for a shell) in NODE's
# network, UTS and mount namespaces, where ssh would log in to NODE. The nodes' holder
# pids come from $DTRAIN_CLUSTER_DIR/nodes (lines: NAME PID ADDRESS).
set -eu
node=$1
shift
pid=$(awk -v n="$node" '$1 == n { print $2 }' "$DTRAIN_CLUSTER_DIR/nodes")
[ -n "$pid" ] || { echo "ns_agent.sh: no node $node in $DTRAIN_CLUSTER_DIR/nodes" >&2; exit 255; }
exec nsenter -t "$pid" -n -u -m --wd="$PWD" -- /bin/sh -c "$*"
