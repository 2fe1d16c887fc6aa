#!/usr/bin/env python3
"""The device row of a traced run (log.trace on a GPU or cpu-async; Note [Device
timeline], kernels/device_timeline.h), step by step: how long the device ran each
step's micro-steps and update, how long it sat idle between those spans and between
steps, and the host's lead at their ends (how far ahead of the device the host had
queued). A step whose leads stay positive was queued without the device waiting on the host, apart
from the step's one read-back of the loss, which comes between the last micro-step
and the update.

Usage: device_timeline_report.py RUN_DIR [RANK]   (standard library only)
Exit 1 when the trace has no device row (a CPU run, or log.trace off)."""
import json
import statistics
import sys


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    run_dir, rank = sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 0
    path = f"{run_dir}/trace/rank-{rank}.json"
    try:
        with open(path) as f:
            events = json.load(f)
    except (OSError, ValueError) as e:
        print(f"no device timeline: cannot read {path} ({e}); train with --set log.trace=true")
        return 1
    device = [e for e in events if e.get("cat") == "device"]
    if not device:
        print(f"{path}: no device row (a CPU run, or log.trace off)")
        return 1
    steps = sorted({e["args"]["step"] for e in device})
    leads, idles, gaps = [], [], []
    previous_end = None  # where the step before ended on the device
    for step in steps:
        spans = sorted((e for e in device if e["args"]["step"] == step), key=lambda e: e["ts"])
        micro = [e for e in spans if e["name"] == "micro-step"]
        busy_ms = sum(e["dur"] for e in micro) / 1000
        window_ms = (micro[-1]["ts"] + micro[-1]["dur"] - micro[0]["ts"]) / 1000 if micro else 0.0
        update_ms = sum(e["dur"] for e in spans if e["name"] == "update") / 1000
        lead = min(e["args"]["host_lead_ms"] for e in spans)
        idle = window_ms - busy_ms
        # The device's wait between the step before and this one: the host's work
        # between steps (the batch, the loss read-back, logging) where it shows.
        gap = (spans[0]["ts"] - previous_end) / 1000 if previous_end is not None else None
        previous_end = max(e["ts"] + e["dur"] for e in spans)
        print(f"step {step}: micro-steps {busy_ms:.2f} ms on the device in a {window_ms:.2f} ms window "
              f"(idle between them {idle:.2f} ms), update {update_ms:.2f} ms; host lead at span ends "
              f"min {lead:.2f} ms" + (f"; idle before the step {gap:.2f} ms" if gap is not None else ""))
        if step != steps[0]:  # the first step includes start-up work
            leads.append(lead)
            idles.append(idle)
            gaps.append(gap)
    if leads:
        print(f"after step {steps[0]}: median idle between micro-steps {statistics.median(idles):.2f} ms, "
              f"between steps {statistics.median(gaps):.2f} ms, "
              f"median of the steps' least host lead {statistics.median(leads):.2f} ms "
              f"(positive: the host queued ahead of the device)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
