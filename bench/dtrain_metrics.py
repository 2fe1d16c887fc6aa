#!/usr/bin/env python3
"""Throughput and memory of a finished dtrain run, from its RUN_DIR/metrics.jsonl, for
the benchmark scripts (run_gpu_bench.sh, run_gpt_bench.sh, run_gpt_gpu_bench.sh).

The timed window runs from the end of step WARMUP to the end of the last step:
samples and time_s of those two train lines (time_s counts from the start of training,
and dtrain reads each step's loss back before the next starts, so a step's end is
real). Standard library only.

  dtrain_metrics.py RUN_DIR --warmup W [--config BENCH_CONFIG] [--format FMT]

prints FMT (a str.format template; default: the JSON of every field) over the fields
  samples_per_s, tokens_per_s (samples/s x model.seq_len, from RUN_DIR/config.yaml or
  else BENCH_CONFIG; absent for a model without one), steps (timed), seconds,
  step_ms_median, wall_s (time_s of the last step), last_step, eval_loss (of the last
  eval line, if any), mem_peak_mib, mem_peak_reserved_mib (the allocator's peaks, in
  use and reserved, as the last train line gives them).
"""
import argparse
import json
import re
import statistics
import sys


class MetricsError(Exception):
    pass


def seq_len_of(paths):
    """model.seq_len from the first of these configs that names one (None if none)."""
    for path in paths:
        try:
            with open(path) as f:
                m = re.search(r"^\s*seq_len:\s*(\d+)", f.read(), re.M)
        except OSError:
            continue
        if m:
            return int(m.group(1))
    return None


def train_window(run_dir, warmup, bench_config=None):
    """The fields described above, as a dict; MetricsError if the run has no train line
    at step `warmup` or none after it."""
    train, evals = {}, []
    try:
        with open(run_dir + "/metrics.jsonl") as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("kind") == "train":
                    train[int(rec["step"])] = rec
                elif rec.get("kind") == "eval":
                    evals.append(rec)
    except (OSError, ValueError) as e:
        raise MetricsError(f"{run_dir}/metrics.jsonl: {e}")
    last = max(train) if train else 0
    if warmup not in train or last <= warmup:
        raise MetricsError(f"{run_dir}/metrics.jsonl: no train line at step {warmup}, or none after it "
                           f"(the last is step {last})")
    w, l = train[warmup], train[last]
    seconds = l["time_s"] - w["time_s"]
    step_s = [train[s]["time_s"] - train[s - 1]["time_s"] for s in range(warmup + 1, last + 1)
              if s in train and s - 1 in train]
    out = {
        "steps": last - warmup,
        "seconds": seconds,
        "samples_per_s": (l["samples"] - w["samples"]) / seconds,
        "step_ms_median": 1e3 * statistics.median(step_s) if step_s else float("nan"),
        "wall_s": l["time_s"],
        "last_step": last,
        "mem_peak_mib": l.get("mem_peak_mib", float("nan")),
        "mem_peak_reserved_mib": l.get("mem_peak_reserved_mib", float("nan")),
    }
    seq_len = seq_len_of([run_dir + "/config.yaml"] + ([bench_config] if bench_config else []))
    if seq_len:
        out["seq_len"] = seq_len
        out["tokens_per_s"] = out["samples_per_s"] * seq_len
    if evals:
        out["eval_loss"] = evals[-1]["eval_loss"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--warmup", type=int, required=True, help="the step the timed window starts after")
    p.add_argument("--config", help="the benchmark's config, for seq_len if the run directory lacks config.yaml")
    p.add_argument("--format", help="a str.format template over the fields (default: JSON)")
    a = p.parse_args()
    try:
        fields = train_window(a.run_dir, a.warmup, a.config)
        print(a.format.format(**fields) if a.format else json.dumps(fields))
    except MetricsError as e:
        sys.exit(f"dtrain_metrics.py: {e}")
    except KeyError as e:
        sys.exit(f"dtrain_metrics.py: {a.run_dir}: no field {e} for --format (eval_loss needs an eval line)")


if __name__ == "__main__":
    main()
