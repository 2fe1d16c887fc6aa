#!/usr/bin/env python3
"""PyTorch reference for the GPT GPU benchmark (bench/run_gpt_gpu_bench.sh).

Trains the GPT of a dtrain config (--config, default bench/gpt2_124m.yaml: GPT-2 124M,
seq_len 1024, vocab 50304) as nanoGPT does on a GPU, so that it matches dtrain's run:
  model      bench/torch_gpt_reference.py's nanoGPT GPT (pre-LN, biases, tanh GELU,
             LM head tied to wte), attention by F.scaled_dot_product_attention with
             is_causal=True (flash attention on a GPU), GPT-2's init (torch's RNG)
  precision  fp32 parameters (the master weights), forward and loss under
             torch.autocast(bfloat16) (precision.compute bf16; fp32: no autocast);
             TF32 allowed as precision.tf32 says
  optimizer  torch.optim.AdamW(fused=True) with the config's lr, betas, eps and weight
             decay (on tensors of 2 or more dimensions: dtrain's decay_filter
             matrices), gradients clipped to the config's clip_grad_norm
  batch      train.micro_batch windows of seq_len + 1 tokens per step (no
             accumulation), at random offsets of --train-file (an llm.c token shard;
             without one, random tokens in [0, --token-vocab)), every step's batch
             gathered on the device before the clock starts: PyTorch pays no data path
  --compile  torch.compile of the forward and the loss (as nanoGPT compiles its model;
             the fused optimizer step stays eager)
Throughput: tokens/s = micro_batch * seq_len * (steps after --warmup) / the time from
the end of step --warmup to the end of the last, synchronised at both ends; the step
time is the median of the timed steps (CUDA events recorded after each step, so no
step waits for the host). Peak memory: torch.cuda.max_memory_allocated / _reserved
over the warm-up and timed steps.

--capacity-search-s S (eager, CUDA only): afterwards, the largest micro-batch that
trains a step within --memory-budget bytes (default: 0.9 of the device's free memory
plus what this process holds, the rule of dtrain's planner), found in at most S
seconds: doubling from the benchmark's micro-batch until out of memory, then
bisection. The budget is enforced by torch.cuda.set_per_process_memory_fraction.

--device cpu runs the same on the CPU (bf16 autocast on the CPU, no events, no
search): a smoke test of the script on a machine without a GPU, not a benchmark.

Prints one machine-readable line: RESULT {"impl": "pytorch-eager"|"pytorch-compile",
"torch": ..., "device": ..., "tokens_per_s": ..., "step_ms_median": ..., ...}
"""
import argparse
import array
import gc
import json
import os
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt_reference import build_model, init_weights  # noqa: E402  (the shared nanoGPT model)

HERE = os.path.dirname(os.path.abspath(__file__))
SHARD_MAGIC, SHARD_VERSION, SHARD_HEADER_INTS = 20240520, 1, 256


def read_dtrain_config(path):
    """The `section: / key: value` pairs of a dtrain config, as strings. Enough YAML for
    the benchmark's own flat configs (no lists, no nesting beyond one level)."""
    config, section = {}, None
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
            if not line.strip():
                continue
            key, sep, value = line.strip().partition(":")
            if not sep:
                raise SystemExit(f"{path}:{number}: expected 'key: value', got {raw.strip()!r}")
            if not line[0].isspace():
                section = config.setdefault(key, {})
            elif section is None:
                raise SystemExit(f"{path}:{number}: an indented key before any section")
            else:
                section[key] = value.strip().strip("'\"")
    return config


def config_value(config, path, section, key, kind):
    try:
        return kind(config[section][key])
    except KeyError:
        raise SystemExit(f"{path}: {section}.{key} is missing; the reference needs it")
    except ValueError:
        raise SystemExit(f"{path}: {section}.{key} = {config[section][key]!r} is not a {kind.__name__}")


def read_token_shard(path):
    """The uint16 tokens of an llm.c shard (runtime/token_shards.h's format)."""
    with open(path, "rb") as f:
        header = array.array("i")
        header.frombytes(f.read(4 * SHARD_HEADER_INTS))
        body = array.array("H")
        body.frombytes(f.read())
    if sys.byteorder != "little":
        header.byteswap()
        body.byteswap()
    if header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION or header[2] != len(body):
        raise SystemExit(f"{path}: not an llm.c token shard of version 1 with the tokens its header counts")
    return body


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(HERE, "gpt2_124m.yaml"), help="the dtrain config to match")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward and the loss")
    p.add_argument("--steps", type=int, default=35, help="optimizer steps in all")
    p.add_argument("--warmup", type=int, default=5, help="steps before the clock starts (compilation included)")
    p.add_argument("--train-file", help="an llm.c token shard to draw windows from (default: random tokens)")
    p.add_argument("--token-vocab", type=int, default=50257, help="random tokens' range without --train-file")
    p.add_argument("--capacity-search-s", type=float, default=0.0,
                   help="after timing, search the largest micro-batch for at most this long (eager, cuda; 0: no)")
    p.add_argument("--memory-budget", type=int, default=0,
                   help="bytes the capacity search may reserve (default: dtrain's rule, 0.9 of free + held)")
    # Overrides of the config, for a smoke run at a tiny shape.
    for key in ("n-layer", "n-head", "n-embd", "seq-len", "vocab", "batch"):
        p.add_argument(f"--{key}", type=int, help="instead of the config's value")
    p.add_argument("--precision", choices=["bf16", "fp32"], help="instead of the config's precision.compute")
    a = p.parse_args()
    if not 0 < a.warmup < a.steps:
        p.error(f"need 0 < --warmup ({a.warmup}) < --steps ({a.steps})")
    return a


def main():
    a = parse_args()
    config = read_dtrain_config(a.config)

    def from_config(override, section, key, kind=int):
        return override if override is not None else config_value(config, a.config, section, key, kind)

    shape = types.SimpleNamespace(
        n_layer=from_config(a.n_layer, "model", "n_layer"), n_head=from_config(a.n_head, "model", "n_head"),
        n_embd=from_config(a.n_embd, "model", "n_embd"), seq_len=from_config(a.seq_len, "model", "seq_len"),
        dropout=float(config.get("model", {}).get("dropout", 0.0)), init="torch",
        seed=int(config.get("train", {}).get("seed", 1)))
    vocab = from_config(a.vocab, "model", "vocab")
    batch = from_config(a.batch, "train", "micro_batch")
    precision = a.precision or config.get("precision", {}).get("compute", "fp32")
    tf32 = config.get("precision", {}).get("tf32", "false") == "true"
    opt_cfg = {key: config_value(config, a.config, "optimizer", key, float)
               for key in ("lr", "beta1", "beta2", "eps", "weight_decay")}
    clip = float(config.get("optimizer", {}).get("clip_grad_norm", 0.0))
    if shape.n_embd % shape.n_head:
        raise SystemExit("n_embd must be a multiple of n_head")

    import torch
    from torch.nn import functional as F

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("torch_gpt_gpu_reference.py: torch.cuda.is_available() is False; --device cpu for a smoke run")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(shape.seed)

    if a.train_file:
        tokens = torch.tensor(read_token_shard(a.train_file), dtype=torch.int64)
    else:
        tokens = torch.randint(a.token_vocab, (1 << 20,), dtype=torch.int64)
    if int(tokens.max()) >= vocab:
        raise SystemExit(f"a token of {a.train_file or 'the random stream'} is at or past the vocabulary {vocab}")
    if tokens.numel() < shape.seq_len + 2:
        raise SystemExit(f"{tokens.numel()} tokens hold no window of seq_len {shape.seq_len} + 1")
    tokens = tokens.to(dev)
    window = torch.arange(shape.seq_len + 1, device=dev)
    gen = torch.Generator(device=dev).manual_seed(shape.seed)

    def batch_of(b):
        starts = torch.randint(tokens.numel() - shape.seq_len - 1, (b, 1), device=dev, generator=gen)
        w = tokens[starts + window]  # (b, T + 1)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    with torch.device(dev):
        model = build_model(shape, vocab, attention="sdpa")
    init_weights(model, shape)
    model.train()
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": opt_cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=opt_cfg["lr"], betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"],
                            fused=True)

    def loss_of(x, y):
        logits = model(x)  # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

    forward = torch.compile(loss_of) if a.compile else loss_of
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if precision == "bf16" else \
        (lambda: torch.autocast(dev.type, enabled=False))

    def train_step(x, y):
        with autocast():
            loss = forward(x, y)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    n_params = sum(p.numel() for p in params)
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    print(f"torch {torch.__version__} on {name}; {n_params} parameters; {shape.n_layer} layers, {shape.n_head} heads, "
          f"n_embd {shape.n_embd}, seq_len {shape.seq_len}, vocab {vocab}; micro-batch {batch}; {precision}"
          f"{' (autocast)' if precision == 'bf16' else ''}; fused AdamW; {'torch.compile' if a.compile else 'eager'}",
          flush=True)

    batches = [batch_of(batch) for _ in range(a.steps)]
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    t_start = time.perf_counter()
    ends, t0, loss = [], None, None
    for step in range(a.steps):
        loss = train_step(*batches[step])
        if step + 1 == a.warmup:
            sync()
            t0 = time.perf_counter()
            warmup_s = t0 - t_start
        if step + 1 >= a.warmup:  # the end of the warm-up, then of each timed step
            if cuda:
                ends.append(torch.cuda.Event(enable_timing=True))
                ends[-1].record()
            else:
                ends.append(time.perf_counter())
    sync()
    timed_s = time.perf_counter() - t0
    if cuda:
        step_ms = [ends[i - 1].elapsed_time(ends[i]) for i in range(1, len(ends))]
    else:
        step_ms = [1e3 * (ends[i] - ends[i - 1]) for i in range(1, len(ends))]
    timed_steps = a.steps - a.warmup
    result = {
        "impl": "pytorch-compile" if a.compile else "pytorch-eager", "torch": torch.__version__, "device": name,
        "n_layer": shape.n_layer, "n_head": shape.n_head, "n_embd": shape.n_embd, "seq_len": shape.seq_len,
        "vocab": vocab, "params": n_params, "micro_batch": batch, "precision": precision, "tf32": tf32,
        "steps": a.steps, "warmup": a.warmup, "warmup_s": round(warmup_s, 3),
        "tokens_per_s": round(timed_steps * batch * shape.seq_len / timed_s, 1),
        "step_ms_median": round(statistics.median(step_ms), 3), "step_ms_mean": round(1e3 * timed_s / timed_steps, 3),
        "final_loss": round(float(loss.detach()), 4),
        "peak_allocated": torch.cuda.max_memory_allocated(dev) if cuda else None,
        "peak_reserved": torch.cuda.max_memory_reserved(dev) if cuda else None,
    }
    batches = loss = None
    print(f"{timed_steps} steps after {a.warmup} ({result['warmup_s']:.1f} s): {result['tokens_per_s']:.0f} tokens/s, "
          f"median step {result['step_ms_median']:.2f} ms; peak {result['peak_allocated']} bytes allocated",
          flush=True)

    if a.capacity_search_s > 0:
        if not cuda or a.compile:
            print("capacity search: eager on CUDA only (out-of-memory is a Python error there); not run", flush=True)
        else:
            result["capacity"] = capacity_search(torch, dev, train_step, batch_of, opt, batch, a)
    print("RESULT " + json.dumps(result), flush=True)


def capacity_search(torch, dev, train_step, batch_of, opt, start, a):
    """The largest micro-batch whose training step fits the budget: doubling from `start`
    to the first out-of-memory, then bisection, for at most a.capacity_search_s."""
    total = torch.cuda.get_device_properties(dev).total_memory
    budget, rule = a.memory_budget, "dtrain's plan budget, --memory-budget"
    if budget <= 0:
        free, _ = torch.cuda.mem_get_info(dev)
        budget, rule = int(0.9 * (free + torch.cuda.memory_reserved(dev))), "0.9 of free + held (dtrain's rule)"
    # This call wants a device index; torch.device("cuda") has none (the current one).
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), index)
    deadline = time.monotonic() + a.capacity_search_s
    tried = []

    def fits(b):
        try:
            train_step(*batch_of(b))
            torch.cuda.synchronize(dev)
            ok = True
        except torch.cuda.OutOfMemoryError:
            ok = False
        opt.zero_grad(set_to_none=True)
        gc.collect()
        torch.cuda.empty_cache()
        tried.append((b, ok))
        print(f"capacity search: micro-batch {b}: {'fits' if ok else 'out of memory'}", flush=True)
        return ok

    lo, hi, b = 0, None, start  # lo fits (0: none known), hi does not (None: none known)
    while (hi is None or hi - lo > 1) and time.monotonic() < deadline and b <= 1 << 16:
        if fits(b):
            lo = b
        else:
            hi = b
        if hi is None:
            b = 2 * lo
        elif lo == 0:
            b = hi // 2
            if b == 0:
                break
        else:
            b = (lo + hi) // 2
    torch.cuda.set_per_process_memory_fraction(1.0, index)
    return {"fits": lo, "out_of_memory_at": hi, "exact": hi is not None and hi - lo == 1, "budget": budget,
            "budget_rule": rule, "total_memory": total, "tried": tried,
            "seconds": round(a.capacity_search_s - max(0.0, deadline - time.monotonic()), 1)}


if __name__ == "__main__":
    main()
