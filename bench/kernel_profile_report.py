#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (--csv --page raw --metrics gpu__time_duration.sum
--print-units base) by kernel name and prints the kernels that take the most time.

  kernel_profile_report.py NCU.csv [--steps N] [--top 30]

The CSV has a header row, a units row, then one row per kernel launch with the
launch's "Kernel Name" and its "gpu__time_duration.sum" in nanoseconds; ncu's own
"==PROF==" lines may come before it. --steps divides the totals into a per-step
figure (the run's one-time and evaluation kernels fall into it too: small beside the
steps). Standard library only: it runs on a bare GPU image's python3.
"""
import argparse
import collections
import csv
import sys

TIME = "gpu__time_duration.sum"


def launches(path):
    """(kernel name, nanoseconds) for each profiled launch in the CSV at path."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    for row in csv.DictReader(lines):
        value = row.get(TIME, "").replace(",", "")
        try:
            yield row["Kernel Name"], float(value)
        except ValueError:
            continue  # the units row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    total = collections.Counter()
    count = collections.Counter()
    for name, ns in launches(args.csv):
        total[name] += ns
        count[name] += 1
    if not total:
        print(f"kernel_profile_report.py: no kernel times in {args.csv}", file=sys.stderr)
        return 1
    all_ns = sum(total.values())
    print(f"{sum(count.values())} launches, {len(total)} kernels, {all_ns / 1e6:.1f} ms of kernel time "
          f"({all_ns / 1e6 / args.steps:.1f} ms a step over {args.steps} steps)")
    print(f"{'share':>6} {'ms/step':>8} {'launches':>8} {'us each':>8}  kernel")
    for name, ns in total.most_common(args.top):
        print(f"{100 * ns / all_ns:5.1f}% {ns / 1e6 / args.steps:8.2f} {count[name]:8d} "
              f"{ns / 1e3 / count[name]:8.1f}  {name[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
