#!/usr/bin/env python3
"""The report of the GPT GPU benchmark (bench/run_gpt_gpu_bench.sh): dtrain against
PyTorch eager and torch.compile, with MFU, peak memory, the largest micro-batch of
each in the same memory budget, the goal lines, and a markdown table for
bench/RESULTS.md. Standard library only; always exits 0 once its inputs are read
(a benchmark reports, it does not judge), 2 on unusable arguments.

Note [GPT MFU]
Model FLOPs utilisation = achieved model FLOP/s / the card's dense bf16 peak, with the
model FLOPs of one training token counted as PaLM does (Chowdhery et al. 2022,
appendix B; nanoGPT's estimate_mfu and llm.c count the same):
    F = 6 N + 12 L T C      per token, forward and backward
  - N = 12 L C^2 + V C: the weights of the matrix products. Per block c_attn (3 C^2),
    the attention projection (C^2), c_fc (4 C^2) and the MLP projection (4 C^2); and the
    LM head (V C, tied to wte). Each weight takes one multiply-add (2 FLOPs) per token
    forward and two in backward (the input's gradient and the weight's): 6 per token.
    Biases, LayerNorm, GELU, softmax, the embedding lookups (so wpe) and the optimizer
    are not counted. V is the model's vocabulary as trained, padded (50304): both
    implementations multiply those rows.
  - 12 L T C: attention's two products per layer, Q K^T and P V, each 2 T C FLOPs per
    token forward over all T key positions, times 3 for forward and backward. PaLM
    counts the full T x T square although causal attention needs half of it; a
    kernel that skips the masked half (flash attention does) is credited with work it
    did not do. The report also gives the MFU with the causal half (6 L T C).
For GPT-2 124M (L 12, C 768, T 1024, V 50304): N = 123,568,128, F = 854.7 MFLOP per
token; on a 989.5 TFLOP/s card 50% MFU is 578,889 tokens/s.

The peak is the vendor's dense bf16 tensor-core rate (datasheets give it with 2:4
sparsity, twice this), looked up by the name nvidia-smi reports; a card missing from
the table gets no MFU (GPU_BF16_PEAK_TFLOPS=... supplies one).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dtrain_metrics import MetricsError, train_window  # noqa: E402
from torch_gpt_gpu_reference import read_dtrain_config  # noqa: E402

# nvidia-smi's name -> (dense bf16 TFLOP/s, where the figure comes from).
BF16_DENSE_PEAK_TFLOPS = {
    "NVIDIA H200": (989.5, "H200 SXM datasheet: 1,979 with sparsity"),
    "NVIDIA H200 NVL": (835.5, "H200 NVL datasheet: 1,671 with sparsity"),
    "NVIDIA H100 80GB HBM3": (989.5, "H100 SXM datasheet: 1,979 with sparsity"),
    "NVIDIA H100 PCIe": (756.5, "H100 PCIe datasheet: 1,513 with sparsity"),
    "NVIDIA A100-SXM4-80GB": (312.0, "A100 datasheet: 624 with sparsity"),
    "NVIDIA A100-SXM4-40GB": (312.0, "A100 datasheet: 624 with sparsity"),
    "NVIDIA A100 80GB PCIe": (312.0, "A100 datasheet: 624 with sparsity"),
    "NVIDIA A100-PCIE-40GB": (312.0, "A100 datasheet: 624 with sparsity"),
}

GOAL_SPEEDUP = 1.1  # dtrain tokens/s over torch.compile's
GOAL_MFU = 0.50
GIB = float(1 << 30)


def peak_of(card):
    """(TFLOP/s, source) for the card, or (None, why not)."""
    override = os.environ.get("GPU_BF16_PEAK_TFLOPS")
    if override:
        return float(override), "GPU_BF16_PEAK_TFLOPS"
    if card in BF16_DENSE_PEAK_TFLOPS:
        return BF16_DENSE_PEAK_TFLOPS[card]
    return None, f"no dense bf16 peak for '{card}' in bench/gpt_gpu_report.py's table (set GPU_BF16_PEAK_TFLOPS)"


def torch_result(path):
    """The RESULT json of a torch_gpt_gpu_reference.py log, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("RESULT "):
                    return json.loads(line[7:])
    except (OSError, ValueError):
        pass
    return None


def fmt_int(x):
    return f"{x:,.0f}" if x is not None else "-"


def fmt_gib(a, b):
    if a is None or b is None:
        return "-"
    return f"{a / GIB:.1f} / {b / GIB:.1f} GiB"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the benchmark's dtrain config (shape, micro-batch)")
    p.add_argument("--dtrain-run", required=True, help="dtrain's run directory")
    p.add_argument("--dtrain-status", default="ok", help="ok, or what went wrong (shown instead of figures)")
    p.add_argument("--dtrain-fast-run", help="dtrain's run directory with its levers that cost bit-for-bit repeats")
    p.add_argument("--dtrain-fast-status", default="ok")
    p.add_argument("--dtrain-fast-settings", default="", help="those levers, for the row's label")
    p.add_argument("--plan", help="dtrain plan --json with micro_batch auto (the capacity)")
    p.add_argument("--plan-status", default="ok")
    p.add_argument("--eager", help="torch_gpt_gpu_reference.py's log, eager")
    p.add_argument("--eager-status", default="ok")
    p.add_argument("--compile", help="the same, torch.compile")
    p.add_argument("--compile-status", default="ok")
    p.add_argument("--torch-version", default="", help="for the PyTorch rows without a RESULT")
    p.add_argument("--warmup", type=int, required=True, help="steps before dtrain's timed window")
    p.add_argument("--card", default="unknown", help="nvidia-smi's name of the GPU")
    p.add_argument("--date", default="")
    p.add_argument("--commit", default="", help="dtrain's commit")
    p.add_argument("--command", default="scripts/gpu-check.sh (bench/run_gpt_gpu_bench.sh)")
    a = p.parse_args()

    cfg = read_dtrain_config(a.config)
    try:
        L, H, C, T, V = (int(cfg["model"][k]) for k in ("n_layer", "n_head", "n_embd", "seq_len", "vocab"))
        B = int(cfg["train"]["micro_batch"])
        compute = cfg.get("precision", {}).get("compute", "fp32")
    except (KeyError, ValueError) as e:
        sys.exit(f"gpt_gpu_report.py: {a.config}: model.n_layer, n_head, n_embd, seq_len, vocab and "
                 f"train.micro_batch must be numbers ({e})")
    n_matmul = 12 * L * C * C + V * C
    flops_palm = 6 * n_matmul + 12 * L * T * C
    flops_causal = 6 * n_matmul + 6 * L * T * C
    peak, peak_source = peak_of(a.card)

    def dtrain_figures(run, status):
        """(figures or None, status) of a dtrain run directory."""
        if status != "ok":
            return None, status
        try:
            w = train_window(run, a.warmup, a.config)
            return ({"tokens_per_s": w["tokens_per_s"], "step_ms": w["step_ms_median"],
                     "peak_allocated": w["mem_peak_mib"] * (1 << 20),
                     "peak_reserved": w["mem_peak_reserved_mib"] * (1 << 20)}, status)
        except (MetricsError, KeyError) as e:
            return None, f"no figures ({e})"

    rows = []  # (label, figures dict or None, status)
    # dtrain
    d, a.dtrain_status = dtrain_figures(a.dtrain_run, a.dtrain_status)
    plan = None
    if a.plan and a.plan_status == "ok":
        try:
            with open(a.plan) as f:
                plan = json.load(f)["ranks"][0]
        except (OSError, ValueError, KeyError, IndexError) as e:
            a.plan_status = f"unreadable plan ({e})"
    if d is not None:
        if plan:
            d["capacity"] = f"{plan['capacity']} (planner, probe step at it)"
        else:
            d["capacity"] = f"- ({a.plan_status})"
    commit = f" {a.commit}" if a.commit and a.commit != "unknown" else ""
    rows.append((f"dtrain{commit}", d, a.dtrain_status))
    dtrain_rows = [rows[0]]
    # The same run with the levers that cost bit-for-bit repeats, in a row of its own.
    if a.dtrain_fast_run:
        fast, fast_status = dtrain_figures(a.dtrain_fast_run, a.dtrain_fast_status)
        if fast is not None:
            fast["capacity"] = "-"
        rows.append((f"dtrain{commit}, {a.dtrain_fast_settings or 'its faster settings'}", fast, fast_status))
        dtrain_rows.append(rows[-1])

    results = {}
    for impl, path, status in (("eager", a.eager, a.eager_status), ("torch.compile", a.compile, a.compile_status)):
        r = torch_result(path) if path and status == "ok" else None
        if r is None and status == "ok":
            status = "no RESULT line (see its log)"
        version = r["torch"] if r else (a.torch_version or "(version unknown)")
        label = f"PyTorch {version} {impl}"
        fig = None
        if r:
            same = (r["n_layer"], r["n_head"], r["n_embd"], r["seq_len"], r["vocab"], r["micro_batch"]) == (L, H, C, T, V, B)
            if not same:
                status = "a different shape or micro-batch from the config's: not compared"
            else:
                fig = {"tokens_per_s": r["tokens_per_s"], "step_ms": r["step_ms_median"],
                       "peak_allocated": r.get("peak_allocated"), "peak_reserved": r.get("peak_reserved")}
                c = r.get("capacity")
                if c and c["exact"]:
                    fig["capacity"] = f"{c['fits']} ({c['out_of_memory_at']} out of memory)"
                elif c:
                    oom = f", {c['out_of_memory_at']} out of memory" if c["out_of_memory_at"] else ""
                    fig["capacity"] = f"at least {c['fits']} (search cut by its time bound{oom})"
                else:
                    fig["capacity"] = "not searched"
                results[impl] = r
        rows.append((label, fig, status))

    compiled_row = rows[-1]  # torch.compile's, last
    compiled = compiled_row[1]
    print(f"GPT GPU benchmark: {L} layers, {H} heads, n_embd {C}, seq_len {T}, vocab {V}; micro-batch {B} "
          f"({B * T:,} tokens a step, no accumulation); {compute} compute with fp32 master weights, fused AdamW; "
          f"random tokens (bench/gen_token_shard.py); {a.card}, {a.date}")
    print(f"model FLOPs per training token (Note [GPT MFU], bench/gpt_gpu_report.py): 6 N + 12 L T C = "
          f"6 x {n_matmul:,} + 12 x {L} x {T} x {C} = {flops_palm / 1e6:.1f} MFLOP (N = 12 L C^2 + V C)")
    if peak:
        print(f"peak: {peak} TFLOP/s dense bf16 ({peak_source}); 50% MFU = {0.5 * peak * 1e12 / flops_palm:,.0f} tokens/s")
    else:
        print(f"peak: unknown: {peak_source}; no MFU")
    if plan:
        fp32 = plan.get("fp32_capacity", -1)
        print(f"dtrain plan (micro_batch auto): budget {plan['budget'] / GIB:.1f} GiB (memory.fraction of the "
              f"{plan['memory_available'] / GIB:.1f} GiB available and what dtrain held), capacity {plan['capacity']}, "
              f"probe step peak {plan['probe_peak'] / GIB:.1f} GiB in use, {plan['probe_peak_reserved'] / GIB:.1f} GiB "
              f"reserved" + (f"; in fp32 {fp32} would fit (memory model)" if fp32 >= 0 else ""))
    eager = results.get("eager")
    if eager and eager.get("capacity"):
        c = eager["capacity"]
        tried = ", ".join(str(b) + (" fits" if ok else " OOM") for b, ok in c["tried"])
        print(f"PyTorch {eager['torch']} eager capacity search: budget {c['budget'] / GIB:.1f} GiB ({c['budget_rule']}), "
              f"{c['seconds']} s; tried {tried}")
    for label, fig, status in rows:
        if fig is None:
            print(f"{label}: {status}")

    def mfu(fig, flops=flops_palm):
        if fig is None or not peak:
            return None
        return fig["tokens_per_s"] * flops / (peak * 1e12)

    print()
    print(f"| implementation | tokens/s | step ms (median) | MFU | peak memory (allocated / reserved) | "
          f"largest micro-batch, same budget | tokens/s / torch.compile |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, fig, status in rows:
        if fig is None:
            print(f"| {label} | {status} | | | | | |")
            continue
        m = mfu(fig)
        ratio = f"{fig['tokens_per_s'] / compiled['tokens_per_s']:.2f}" if compiled else "n/a"
        mfu_text = "%.1f%%" % (100 * m) if m is not None else "unknown"
        print(f"| {label} | {fmt_int(fig['tokens_per_s'])} | {fig['step_ms']:.1f} | {mfu_text} | "
              f"{fmt_gib(fig['peak_allocated'], fig['peak_reserved'])} | {fig['capacity']} | {ratio} |")
    print()
    causal = mfu(rows[0][1], flops_causal)
    print(f"{a.card}, {a.date}, `{a.command}`; MFU = tokens/s x {flops_palm / 1e6:.1f} MFLOP / "
          f"{peak if peak else '?'} TFLOP/s (PaLM's count; counting causal attention's half only, "
          f"{flops_causal / 1e6:.1f} MFLOP a token, dtrain's is {'%.1f%%' % (100 * causal) if causal else 'unknown'})")
    print()

    # The goal lines, for each dtrain row: the default's first.
    for label, dtrain, status in dtrain_rows:
        if dtrain is None:
            print(f"goal: {label} tokens/s >= {GOAL_SPEEDUP} x torch.compile: MISS (no figure: {status})")
            print(f"goal: {label} MFU >= {100 * GOAL_MFU:.0f}%: MISS (no figure)")
            continue
        if compiled:
            r = dtrain["tokens_per_s"] / compiled["tokens_per_s"]
            print(f"goal: {label} tokens/s >= {GOAL_SPEEDUP} x torch.compile (PyTorch "
                  f"{results['torch.compile']['torch']}): {'PASS' if r >= GOAL_SPEEDUP else 'MISS'} ({r:.2f}x)")
        else:
            print(f"goal: {label} tokens/s >= {GOAL_SPEEDUP} x torch.compile: n/a (no torch.compile figure: "
                  f"{compiled_row[2]})")
        m = mfu(dtrain)
        if m is not None:
            print(f"goal: {label} MFU >= {100 * GOAL_MFU:.0f}%: {'PASS' if m >= GOAL_MFU else 'MISS'} ({100 * m:.1f}%)")
        else:
            print(f"goal: {label} MFU >= {100 * GOAL_MFU:.0f}%: n/a ({peak_source})")


if __name__ == "__main__":
    main()
