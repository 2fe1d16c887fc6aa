#!/usr/bin/env bash
# Checks the scaling prediction (Note [Scaling model], `dtrain plan --predict-ranks`)
# against measured step times on this machine:
#   1. fits each link's alpha and beta with bench/link_bench (an all-reduce between two
#      ranks, 8 B up to the job's largest gradient bucket): inside one node (Open MPI's
#      shared memory), and on the namespace cluster of tests/cluster/ (TCP: two ranks
#      on one node, and one on each of two nodes);
#   2. writes two cluster tables from the fits: this machine as one node (2 cores: ranks
#      beyond 2 share them), and the namespace cluster (2 nodes of 2 ranks; the nodes
#      share the machine's 2 cores, 1 each). Host MPI makes progress only inside MPI
#      calls, so neither overlaps the buckets with backward;
#   3. predicts CONFIG's step on 1, 2, 3 and 4 ranks of one node, and on 2 nodes x 1
#      rank (a core each) and 2 nodes x 2 ranks
#      (`dtrain plan --predict-ranks` on as many ranks as cores, one thread each, all
#      timing their compute at once, as they compute in training; the slowest counts);
#   4. measures the same steps with `dtrain train` (one thread a rank, no evaluation;
#      the median of steps 21 to 80 from metrics.jsonl's time_s, so that a moment of
#      other load does not move it) and prints predicted against measured, and whether
#      each is within 15%.
# Every mpirun here sets mpi_yield_when_idle: ranks waiting in MPI give their core
# back. mpirun does that by itself only where it sees more ranks than slots; the
# cluster's hostfile gives each node 2 slots while the nodes share 2 cores, and ranks
# spinning there on 2 cores measured 124 ms a step against 25 ms with yielding.
# Run it on an idle machine: other load shows in every time.
# Usage: bench/run_scaling_validation.sh [BUILD_DIR] [OUT_DIR] [CONFIG] [GLOBAL_BATCH]
#   defaults: build, bench/out/scaling, configs/fashion_mnist_mlp.yaml, 256
set -u
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
out=${2:-$src/bench/out/scaling}
config=${3:-$src/configs/fashion_mnist_mlp.yaml}
global=${4:-256}
dtrain=$build/dtrain link_bench=$build/bench/link_bench
# shellcheck source=../scripts/mpi-env.sh
source "$src/scripts/mpi-env.sh"
# shellcheck source=../tests/cluster/netns_cluster.sh
source "$src/tests/cluster/netns_cluster.sh"
export OMPI_MCA_mpi_yield_when_idle=1
rm -rf "$out" && mkdir -p "$out"
common=(--set train.global_batch="$global" --set train.micro_batch=auto --set device.threads=1
        --set eval.every_steps=0 --set checkpoint.every_steps=0)

# 1. The links, fitted over the sizes the job sends: up to its largest gradient bucket
#    (the gradient buffer, capped at comm.bucket_mb).
"$dtrain" plan "$config" "${common[@]}" --json >"$out/plan.json" 2>"$out/plan.err" || { cat "$out/plan.err"; exit 1; }
largest=$(python3 - "$out/plan.json" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1]))
bucket_mb = 25  # comm.bucket_mb's default, which these runs keep
print(min(plan["ranks"][0]["predicted"]["grads"], bucket_mb << 20))
PY
)
link_of() { grep -E "^$1: " "$2" | sed "s/^$1: //"; }
mpirun -np 2 "$link_bench" intra_node "$largest" >"$out/link_one_node.txt" || { cat "$out/link_one_node.txt"; exit 1; }
cluster_up "$out/cluster" 2 2
cluster_mpirun -np 2 --map-by slot "$link_bench" intra_node "$largest" >"$out/link_cluster_intra.txt" 2>&1
cluster_mpirun -np 2 --map-by node "$link_bench" inter_node "$largest" >"$out/link_cluster_inter.txt" 2>&1
one_node=$(link_of intra_node "$out/link_one_node.txt")
ns_intra=$(link_of intra_node "$out/link_cluster_intra.txt")
ns_inter=$(link_of inter_node "$out/link_cluster_inter.txt")
[ -n "$one_node" ] && [ -n "$ns_intra" ] && [ -n "$ns_inter" ] || {
  tail -5 "$out"/link_*.txt; echo "FAILED: a link fit is missing"; exit 1; }

# 2. The tables.
cat >"$out/one_node.yaml" <<EOF
name: this machine as one node ($(nproc) cores), Open MPI shared memory
ranks_per_node: 4
devices_per_node: $(nproc)
overlap: false
intra_node: $one_node
inter_node: $one_node
EOF
cat >"$out/ns_cluster_1.yaml" <<EOF
name: the namespace cluster, 2 nodes x 1 rank over TCP, a core each
ranks_per_node: 1
devices_per_node: 1
overlap: false
intra_node: $ns_intra
inter_node: $ns_inter
EOF
cat >"$out/ns_cluster.yaml" <<EOF
name: the namespace cluster, 2 nodes x 2 ranks over TCP, sharing this machine's $(nproc) cores
ranks_per_node: 2
devices_per_node: $(( $(nproc) / 2 ))
overlap: false
intra_node: $ns_intra
inter_node: $ns_inter
EOF

# 3. The predictions (one rank times the compute).
predicted() {  # TABLE RANKS -> "ranks step_s" lines
  # On as many ranks as the machine has cores, so that the compute is timed with
  # every core busy, as it is in training.
  mpirun -np "$(nproc)" "$dtrain" plan "$config" "${common[@]}" --predict-ranks "$2" --cluster "$1" --json >"$out/predict_$(basename "$1" .yaml).json" \
    2>"$out/predict.err" || { cat "$out/predict.err"; exit 1; }
  python3 - "$out/predict_$(basename "$1" .yaml).json" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1]))["scaling"]["points"]:
    print(p["ranks"], p["step_s"], p["exposed_s"], p["compute_s"])
PY
}
predicted "$out/one_node.yaml" 1,2,3,4 >"$out/predicted_one_node.txt"
predicted "$out/ns_cluster.yaml" 4 >"$out/predicted_cluster.txt"
predicted "$out/ns_cluster_1.yaml" 2 >"$out/predicted_cluster_1.txt"
mpirun -np "$(nproc)" "$dtrain" plan "$config" "${common[@]}" --predict-ranks 2,3,4 --cluster "$out/one_node.yaml" >"$out/predict_one_node.txt" 2>&1

# 4. The measurements.
steps=80
step_time() {  # RUN_DIR -> the median of the steps 21 to $steps, seconds
  python3 - "$1/metrics.jsonl" "$steps" <<'PY'
import json, statistics, sys
t = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "time_s" in r and "step" in r and "loss" in r: t[int(r["step"])] = r["time_s"]
print(statistics.median(t[s] - t[s - 1] for s in range(21, int(sys.argv[2]) + 1)))
PY
}
train_args=(train "$config" "${common[@]}" --set train.max_steps=$steps --set log.every_steps=1)
# Each layout 3 times, in turn: this machine's own step moves between runs (a 2-rank
# step of 2.4 ms in one run, 3.05 ms in the next), so the table gives the middle run
# and the range.
repeats=3
for r in $(seq 1 $repeats); do
  for n in 1 2 3 4; do
    mpirun --oversubscribe -np "$n" "$dtrain" "${train_args[@]}" --run-dir "$out/run_np$n.$r" >"$out/run_np$n.$r.log" 2>&1 ||
      { tail -5 "$out/run_np$n.$r.log"; echo "FAILED: np $n"; exit 1; }
  done
  cluster_mpirun -np 4 --map-by slot "$dtrain" "${train_args[@]}" --run-dir "$out/run_cluster.$r" \
    >"$out/run_cluster.$r.log" 2>&1 || { tail -5 "$out/run_cluster.$r.log"; echo "FAILED: the cluster run"; exit 1; }
  cluster_mpirun -np 2 --map-by node "$dtrain" "${train_args[@]}" --run-dir "$out/run_cluster_1.$r" \
    >"$out/run_cluster_1.$r.log" 2>&1 || { tail -5 "$out/run_cluster_1.$r.log"; echo "FAILED: the 2 x 1 run"; exit 1; }
done
cluster_down

echo "links: one node $one_node"
echo "       cluster, inside a node $ns_intra"
echo "       cluster, between nodes $ns_inter"
echo "config $(basename "$config"), global batch $global, one thread a rank, $(nproc) cores"
echo "| ranks | layout | predicted step ms (compute + exposed comm) | measured step ms, middle of $repeats runs (range) | predicted / measured | within 15% |"
echo "|---|---|---|---|---|---|"
row() {  # RANKS LAYOUT PREDICTED_LINE RUN_DIR_PREFIX
  local n=$1 layout=$2 line=$3 run=$4 times
  times=$(for r in $(seq 1 $repeats); do step_time "$run.$r"; done | sort -g | tr '\n' ' ')
  awk -v n="$n" -v l="$layout" -v line="$line" -v t="$times" 'BEGIN {
    k = split(t, m, " "); mid = m[int((k + 1) / 2)];
    split(line, f, " "); p = f[2]; r = p / mid; ok = (r >= 0.85 && r <= 1.15) ? "yes" : "no";
    printf "| %d | %s | %.2f (%.2f + %.2f) | %.2f (%.2f-%.2f) | %.2f | %s |\n", n, l, p * 1e3, f[4] * 1e3, f[3] * 1e3,
           mid * 1e3, m[1] * 1e3, m[k] * 1e3, r, ok }'
}
for n in 1 2 3 4; do
  row "$n" "1 node x $n" "$(grep "^$n " "$out/predicted_one_node.txt")" "$out/run_np$n"
done
row 2 "2 nodes x 1 (TCP)" "$(grep "^2 " "$out/predicted_cluster_1.txt")" "$out/run_cluster_1"
row 4 "2 nodes x 2 (TCP)" "$(grep "^4 " "$out/predicted_cluster.txt")" "$out/run_cluster"
