#!/usr/bin/env bash
# The timeline: 2 ranks, 4 steps of 2 micro-steps with log.trace; each rank's file and
# the merged one are valid JSON a trace viewer loads (a list of events with name, ph,
# ts, pid), every step has its data, forward, backward, all-reduce and optimizer
# events on every rank, and the merge holds both ranks. JSON is checked with Python's
# json module where python3 exists (exit 77, a skip, where it does not).
# Usage: trace_checks.sh DTRAIN MPIEXEC SOURCE_DIR WORK_DIR
set -u
dtrain=$1 mpiexec=$2 src=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
"$mpiexec" -np 2 --oversubscribe "$dtrain" train "$src/configs/synthetic_mlp.yaml" --set train.max_steps=4 \
  --set train.global_batch=64 --set train.micro_batch=16 --set log.trace=true --set eval.every_steps=2 \
  --run-dir "$work/run" >"$work/run.log" 2>&1 || { echo "FAILED: the traced run"; tail "$work/run.log"; exit 1; }
"$dtrain" trace merge "$work/run" || { echo "FAILED: dtrain trace merge"; exit 1; }
if ! command -v python3 >/dev/null; then
  echo "SKIP: no python3 to check the JSON with"
  exit 77
fi
python3 - "$work/run" <<'PY'
import json, sys
run = sys.argv[1]
failures = 0
def load(path):
    with open(path) as f:
        events = json.load(f)
    assert isinstance(events, list), path + " is not a JSON list"
    for e in events:
        for key in ("name", "ph", "pid"):
            assert key in e, f"{path}: an event without '{key}': {e}"
        if e["ph"] == "X":
            assert e["dur"] >= 0 and "ts" in e, f"{path}: bad complete event {e}"
    return events
for rank in (0, 1):
    events = load(f"{run}/trace/rank-{rank}.json")
    for step in range(1, 5):
        names = [e["name"] for e in events if e.get("args", {}).get("step") == step]
        for want, count in (("forward", 2), ("backward", 2), ("all-reduce bucket 0", 1),
                            ("all-reduce wait", 1), ("optimizer step", 1), ("data wait", 2)):
            if names.count(want) != count:
                print(f"FAILED: rank {rank} step {step}: {names.count(want)} '{want}' events, expected {count}")
                failures += 1
    if not any(e["name"] == "evaluation" for e in events):
        print(f"FAILED: rank {rank}: no evaluation event"); failures += 1
merged = load(f"{run}/trace.json")
pids = sorted({e["pid"] for e in merged})
if pids != [0, 1]:
    print(f"FAILED: the merged trace holds ranks {pids}"); failures += 1
print(f"trace checks: {failures} failure(s); {len(merged)} events merged")
sys.exit(1 if failures else 0)
PY
