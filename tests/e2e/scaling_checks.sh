#!/usr/bin/env bash
# `dtrain plan --predict-ranks` end to end (Note [Scaling model]): the small MLP at a
# global batch of 64 and micro-batches of 16, on a made-up cluster table whose figures
# make every term easy to work by hand: 2 ranks a node sharing 1 device, links of
# 10 us a step and 1 GB/s, no overlap, and a device of 1 GFLOP/s (so nothing is timed
# and the prediction is exact). The checks recompute each point from the plan's own
# parameter count (its memory model's parameter bytes, not the scaling code):
#   k = 64 / (16 N) micro-steps of 16 samples, each taking 16 * per_sample * sharing
#     (sharing = min(N, 2) / 1);
#   one bucket of P fp32 gradients (P * 4 bytes is under comm.bucket_mb), all-reduced
#     after backward, plus the step's 64 bytes of sums, both times the sharing too
#     (without overlap the collectives are the host's work); on N ranks across
#     nodes = ceil(N / 2), ring: 2 (N - 1) steps, 2 (nodes - 1) of them crossing,
#     2 (N - 1) / N * S / 1 GB/s; tree: 2 ((ranks a node - 1) + ceil(log2 nodes))
#     steps, 2 S / 1 GB/s; the cheaper of the two;
#   efficiency = (64 / step_N) / (N * 64 / step_1).
# Then the text form names every rank count, and the built-in H100 table times the
# compute on this rank (t(b) from two micro-batches, and the optimizer step, positive).
# The plan run under mpirun on 2 and 4 ranks (every rank times, the slowest counts)
# must predict the same points: with a given FLOP/s nothing depends on the ranks.
# Usage: scaling_checks.sh DTRAIN SOURCE_DIR WORK_DIR MPIEXEC
set -u
dtrain=$1 src=$2 work=$3 mpiexec=$4
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
cat >"$work/cluster.yaml" <<'YAML'
name: hand-worked test cluster
ranks_per_node: 2
devices_per_node: 1
overlap: false
intra_node: {latency_us: 10, bandwidth_GBps: 1, source: made up for the test}
inter_node: {latency_us: 10, bandwidth_GBps: 1, source: made up for the test}
device: {flops: 1e9, source: made up for the test}
YAML
args=(plan "$src/configs/synthetic_mlp.yaml" --set train.global_batch=64 --set train.micro_batch=16)
"$dtrain" "${args[@]}" --predict-ranks 1,2,3,4,8 --cluster "$work/cluster.yaml" --json >"$work/plan.json" 2>"$work/err" ||
  { cat "$work/err"; fail "plan --predict-ranks --json exited $?"; }
python3 - "$work/plan.json" <<'PY' || failures=$((failures + 1))
import json, math, sys
d = json.load(open(sys.argv[1]))
P = d["ranks"][0]["predicted"]["params"] / 4
s = d["scaling"]
per_sample = s["compute"]["per_sample_s"]
alpha, beta = 10e-6, 1e9
def all_reduce(S, n, nodes):
    if n == 1: return 0.0
    ppn = math.ceil(n / nodes)
    ring = (2 * (n - nodes) * alpha + 2 * (nodes - 1) * alpha) + 2 * (n - 1) / n * S / beta
    tree = 2 * ((ppn - 1) + math.ceil(math.log2(nodes))) * alpha + 2 * S / beta
    return min(ring, tree)
def step(n):
    nodes = math.ceil(n / 2)
    k = 64 // (16 * n)
    compute = k * 16 * per_sample * min(n, 2)
    return compute, compute + min(n, 2) * (all_reduce(4 * P, n, nodes) + all_reduce(64, n, nodes))
ok = per_sample > 0 and s["buckets"] == 1
points = {p["ranks"]: p for p in s["points"]}
for n in (1, 2, 4):
    p = points[n]
    compute, expect = step(n)
    eff = (64 / expect) / (n * 64 / step(1)[1])
    good = (abs(p["compute_s"] - compute) <= 1e-9 * compute and abs(p["step_s"] - expect) <= 1e-9 * expect
            and abs(p["efficiency"] - eff) <= 1e-9 and p["accumulation"] == 64 // (16 * n))
    print(f"{n} ranks: step {p['step_s']:.6g} s, by hand {expect:.6g} s; efficiency {p['efficiency']:.4f}, by hand {eff:.4f}",
          "" if good else "  <- FAILED")
    ok = ok and good
# 3 ranks do not divide 64 into micro-batches of at most 16 evenly: the planner's
# plan (k = 2, 11 + 11 + 10) is taken; 8 ranks: 8 samples each, k = 1.
ok = ok and points[3]["plannable"] and points[8]["micro_batch"] == 8 and points[8]["accumulation"] == 1
sys.exit(0 if ok else 1)
PY
points() { python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["scaling"]["points"]))' "$1"; }
for np in 2 4; do
  "$mpiexec" -n "$np" "$dtrain" "${args[@]}" --predict-ranks 1,2,3,4,8 --cluster "$work/cluster.yaml" --json \
    >"$work/plan_np$np.json" 2>"$work/err_np$np" || { cat "$work/err_np$np"; fail "plan --predict-ranks on $np ranks exited $?"; }
  mine=$(points "$work/plan_np$np.json") && [ -n "$mine" ] && [ "$mine" = "$(points "$work/plan.json")" ] ||
    fail "the prediction planned on $np ranks differs from one process's ($work/plan_np$np.json)"
done
"$dtrain" "${args[@]}" --predict-ranks 2,16 >"$work/plan.txt" 2>&1 || fail "plan --predict-ranks (text) exited $?"
grep -q "Predicted scaling" "$work/plan.txt" || fail "no prediction in $work/plan.txt"
grep -Eq "^ +16 +2 " "$work/plan.txt" || fail "no row for 16 ranks on 2 nodes in $work/plan.txt"
grep -Eq "compute: t\(b\) = [0-9.e+-]+ ms \+ [0-9.]*[1-9][0-9.e+-]* ms x b a micro-step, and [0-9.]*[1-9][0-9.e+-]* ms an optimizer step \(timed on rank 0" "$work/plan.txt" ||
  fail "the compute was not timed on this rank: $(grep 'compute:' "$work/plan.txt")"
[ "$failures" = 0 ] && echo "scaling checks passed" || { echo "$failures scaling check(s) failed"; exit 1; }
