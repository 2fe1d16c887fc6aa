#!/usr/bin/env bash
# The timeline: NP ranks (1, 2 or 4), 4 steps of a global batch of 64 in micro-batches of
# 16, so 4/NP micro-steps a step on each rank, with log.trace; each rank's file and
# the merged one are valid JSON a trace viewer loads (a list of events with name, ph,
# ts, pid), every step has its data, forward, backward, all-reduce and optimizer
# events on every rank, and the merge holds every rank; on the CPU, no device row. The
# same on cpu-async, whose queue lags the host as a GPU's does, with the device row
# (Note [Device timeline]): per step a "micro-step" span per micro-step and an
# "update", in order without overlap, each ending after the host finished queuing its
# work, with the host's lead at its end (>= 0). JSON is checked with Python's json
# module where python3 exists (exit 77, a skip, where it does not). Last,
# bench/device_timeline_report.py summarises the cpu-async run's device row.
# Usage: trace_checks.sh DTRAIN MPIEXEC SOURCE_DIR WORK_DIR NP
set -u
dtrain=$1 mpiexec=$2 src=$3 work=$4 np=$5
case $np in 1|2|4) ;; *) echo "trace_checks.sh: NP must be 1, 2 or 4 (got '$np')"; exit 2 ;; esac
rm -rf "$work" && mkdir -p "$work"
"$mpiexec" -np "$np" --oversubscribe "$dtrain" train "$src/configs/synthetic_mlp.yaml" --set train.max_steps=4 \
  --set train.global_batch=64 --set train.micro_batch=16 --set log.trace=true --set eval.every_steps=2 \
  --run-dir "$work/run" >"$work/run.log" 2>&1 || { echo "FAILED: the traced run"; tail "$work/run.log"; exit 1; }
"$mpiexec" -np "$np" --oversubscribe "$dtrain" train "$src/configs/synthetic_mlp.yaml" --set train.max_steps=4 \
  --set train.global_batch=64 --set train.micro_batch=16 --set log.trace=true --set eval.every_steps=2 \
  --set device.kind=cpu-async --run-dir "$work/async" >"$work/async.log" 2>&1 ||
  { echo "FAILED: the traced run on cpu-async"; tail "$work/async.log"; exit 1; }
"$dtrain" trace merge "$work/run" || { echo "FAILED: dtrain trace merge"; exit 1; }
if ! command -v python3 >/dev/null; then
  echo "SKIP: no python3 to check the JSON with"
  exit 77
fi
python3 - "$work/run" "$work/async" "$np" <<'PY'
import json, sys
run, async_run, ranks = sys.argv[1], sys.argv[2], int(sys.argv[3])
micro_steps = 4 // ranks  # a global batch of 64 in micro-batches of 16
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
for rank in range(ranks):
    events = load(f"{run}/trace/rank-{rank}.json")
    for step in range(1, 5):
        names = [e["name"] for e in events if e.get("args", {}).get("step") == step]
        for want, count in (("forward", micro_steps), ("backward", micro_steps), ("all-reduce bucket 0", 1),
                            ("all-reduce wait", 1), ("optimizer step", 1), ("data wait", micro_steps)):
            if names.count(want) != count:
                print(f"FAILED: rank {rank} step {step}: {names.count(want)} '{want}' events, expected {count}")
                failures += 1
    if not any(e["name"] == "evaluation" for e in events):
        print(f"FAILED: rank {rank}: no evaluation event"); failures += 1
    if any(e.get("cat") == "device" for e in events):
        print(f"FAILED: rank {rank}: a device row on the CPU, whose ops run when called"); failures += 1
for rank in range(ranks):
    events = load(f"{async_run}/trace/rank-{rank}.json")
    device = [e for e in events if e.get("cat") == "device"]
    if not all(e["tid"] == 1 and isinstance(e["args"].get("host_lead_ms"), (int, float)) for e in device):
        print(f"FAILED: rank {rank}: a device span off row 1 or without host_lead_ms"); failures += 1
    for step in range(1, 5):
        spans = [e for e in device if e["args"]["step"] == step]
        if [e["name"] for e in spans] != ["micro-step"] * micro_steps + ["update"]:
            print(f"FAILED: rank {rank} step {step}: device spans {[e['name'] for e in spans]}"); failures += 1
            continue
        backward_ends = [e["ts"] + e["dur"] for e in events
                         if e["name"] == "backward" and e.get("cat") != "device" and e["args"]["step"] == step]
        for micro, (span, queued_end) in enumerate(zip(spans, backward_ends)):
            if span["ts"] + span["dur"] < queued_end:
                print(f"FAILED: rank {rank} step {step} micro-step {micro}: ran to {span['ts'] + span['dur']}, "
                      f"before its backward was queued ({queued_end})"); failures += 1
        for span in spans:
            if span["args"]["host_lead_ms"] < 0:
                print(f"FAILED: rank {rank} step {step}: the device reached a mark before it was queued"); failures += 1
    ordered = sorted(device, key=lambda e: (e["args"]["step"], e["ts"]))
    for a, b in zip(ordered, ordered[1:]):
        if b["ts"] < a["ts"] + a["dur"]:
            print(f"FAILED: rank {rank}: device spans overlap: {a} and {b}"); failures += 1
merged = load(f"{run}/trace.json")
pids = sorted({e["pid"] for e in merged})
if pids != list(range(ranks)):
    print(f"FAILED: the merged trace holds ranks {pids}"); failures += 1
print(f"trace checks: {failures} failure(s); {len(merged)} events merged")
sys.exit(1 if failures else 0)
PY
status=$?
# The GPU benchmark's summary of the device row (bench/device_timeline_report.py), on
# the cpu-async run: a line per step and the medians; none for the CPU run.
report=$(python3 "$src/bench/device_timeline_report.py" "$work/async") ||
  { echo "FAILED: device_timeline_report.py on the cpu-async run"; status=1; }
echo "$report"
[ "$(grep -c '^step [1-4]: micro-steps' <<<"$report")" = 4 ] && grep -q '^after step 1: median' <<<"$report" ||
  { echo "FAILED: the report lacks a line per step or its medians"; status=1; }
# The device's idle between steps: from the second step on, and among the medians.
[ "$(grep -c '^step [2-4]: .*; idle before the step [0-9.]* ms$' <<<"$report")" = 3 ] &&
  grep -q '^after step 1: .* between steps [0-9.]* ms' <<<"$report" ||
  { echo "FAILED: the report lacks the idle between steps"; status=1; }
python3 "$src/bench/device_timeline_report.py" "$work/run" >/dev/null &&
  { echo "FAILED: the report found a device row in the CPU run"; status=1; }
exit "$status"
