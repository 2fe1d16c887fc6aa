#!/usr/bin/python3
"""PyTorch reference for the GPT benchmark (bench/run_gpt_bench.sh).

Trains nanoGPT's CPU recipe for character-level Shakespeare in plain PyTorch eager,
the same run as dtrain's bench/gpt_shakespeare.yaml:

  model     GPT-2 as nanoGPT writes it: n_layer 4, n_head 4, n_embd 128, seq_len 64,
            vocab 256 (bytes), pre-LN blocks, LayerNorm eps 1e-5 with bias, biases on
            every Linear, tanh GELU, causal attention with an explicit softmax (no
            flash kernel), the LM head tied to wte without bias, dropout 0.
  data      the bytes of --data as tokens; the last 10% (rounded to the nearest byte,
            as dtrain's std::llround) is validation. A sample is a window of 65 bytes:
            inputs 64, targets the same shifted by one.
  optimizer AdamW, lr 1e-3, betas (0.9, 0.99), eps 1e-8, weight decay 0.1 on tensors
            of 2 or more dimensions only (the linear weights and both embeddings; not
            biases or LayerNorm), gradients clipped to global 2-norm 1.0.
  schedule  dtrain's runtime/lr_schedule.cpp: lr * (step + 1) / 100 for the first 100
            steps, then cosine from lr to 1e-4, reaching 1e-4 at the last step.
            (nanoGPT's get_lr differs in the last digits: (it + 1) / (warmup + 1) in
            the warmup, and its cosine ends one step later.)
  batch     12 windows per step, --iters steps (default 2000).
  eval      after the last step: the mean loss over every non-overlapping validation
            window (window i starts at byte 64 i of the split; each window's loss is
            the mean of its 64 token losses), as dtrain's evaluator computes it.

Same data order and the same initial weights as dtrain (the default, --order dtrain
and --init dtrain): dtrain's choices are pure functions of train.seed (SplitMix64,
kernels/rng.h), reproduced here:
  - the training windows of epoch e start at offset(e) + 64 i, offset(e) drawn in
    [0, 64) (runtime/text_dataset.h, Note [Text windows]); each epoch's window order
    is a Fisher-Yates permutation (runtime/global_sampler.cpp), and step s takes
    windows [12 b, 12 b + 12) of it, b = s mod (windows // 12). The layout (ranks,
    micro-batches) does not change which windows a step takes.
  - each weight tensor i (in named_parameters() order) draws normal(0, 0.02), the
    c_proj weights normal(0, 0.02 / sqrt(2 n_layer)), with Box-Muller from
    Rng(mix(seed, i)) (models/gpt.cpp, Gpt::init); biases 0, LayerNorm weights 1.
The runs are still not bit-identical (different kernels sum in different orders), so
the losses agree to the noise of float32 training, not exactly. --order random
(torch.randint windows at any byte) and --init torch (torch.manual_seed and
nn.init.normal_, as nanoGPT) are nanoGPT's own choices instead.

Throughput: tokens/s = 12 * 64 * (steps after --warmup) / the time they took, timed
at the end of each step, the same window run_gpt_bench.sh reads from dtrain's
metrics.jsonl; iter_wall_s is all --iters steps (evaluation excluded).

Prints the loss every --log-every steps, then one machine-readable line:
  RESULT {"impl": "pytorch", "torch": ..., "threads": ..., "tokens_per_s": ...,
          "iter_wall_s": ..., "final_val_loss": ..., ...}

Runs with Debian's python3-torch 1.13 (/usr/bin/python3) and with PyPI's torch 2.x
(/opt/torch2-venv/bin/python; it needs numpy there too). A benchmark, not a test.
"""
import argparse
import json
import math
import os
import sys
import time

DEFAULT_DATA = "/work/shared/data/tinyshakespeare.txt"

# SplitMix64 as kernels/rng.h writes it; every value is kept in [0, 2^64).
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SAMPLER_PURPOSE = 0x5A3B1E5          # runtime/global_sampler.cpp
WINDOW_OFFSET_PURPOSE = 0x7E470FF5E7  # runtime/text_dataset.cpp, kWindowOffsetPurpose


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (and OMP/BLAS threads)")
    p.add_argument("--iters", type=int, default=2000, help="optimizer steps (the cosine ends at the last)")
    p.add_argument("--warmup", type=int, default=20, help="steps excluded from tokens/s")
    p.add_argument("--data", default=DEFAULT_DATA, help="the text file (bytes are tokens)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1, help="dtrain's train.seed")
    p.add_argument("--order", choices=["dtrain", "random"], default="dtrain")
    p.add_argument("--init", choices=["dtrain", "torch"], default="dtrain")
    p.add_argument("--log-every", type=int, default=100, help="print the training loss every N steps (0: never)")
    p.add_argument("--eval-batch", type=int, default=500, help="validation windows per forward (no effect on the value)")
    # The recipe; bench/gpt_shakespeare.yaml must say the same.
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100, help="the learning rate's linear warmup")
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="global gradient 2-norm bound (0: off)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: forward (and evaluation) under torch.autocast('cpu', torch.bfloat16), "
                        "fp32 master weights and AdamW state, as dtrain's precision.compute: bf16")
    a = p.parse_args()
    if not 0 < a.warmup < a.iters:
        p.error(f"need 0 < --warmup ({a.warmup}) < --iters ({a.iters})")
    if a.n_embd % a.n_head:
        p.error("--n-embd must be a multiple of --n-head")
    if not 0.0 <= a.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")
    return a


def pin_thread_env(threads):
    # Before torch is imported: OpenBLAS (Debian's torch calls libblas.so.3) and the
    # OpenMP runtime read their thread counts once, at load.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


# ---------------------------------------------------------------- dtrain's Rng
def finalize(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix(a, b):
    return finalize(a ^ ((b + GOLDEN + ((a << 6) & MASK64) + (a >> 2)) & MASK64))


class Rng:
    """kernels/rng.h's Rng: SplitMix64, Lemire's unbiased below(), Box-Muller normal()."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + GOLDEN) & MASK64
        return finalize(self.state)

    def below(self, bound):
        m = self.next_u64() * bound
        if (m & MASK64) < bound:
            threshold = ((1 << 64) - bound) % bound
            while (m & MASK64) < threshold:
                m = self.next_u64() * bound
        return m >> 64

    def uniform(self):
        return (self.next_u64() >> 11) * 2.0 ** -53

    def normal(self):
        u1 = self.uniform()
        while u1 <= 0.0:
            u1 = self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)


def dtrain_normals(seed, count):
    """`count` draws of Rng(seed).normal(), vectorised: the k-th next_u64() of
    Rng(seed) is finalize(seed + k * GOLDEN), and each normal takes two."""
    import numpy as np
    k = np.arange(1, 2 * count + 1, dtype=np.uint64)
    z = np.uint64(seed) + k * np.uint64(GOLDEN)  # uint64 arrays wrap modulo 2^64
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    u1, u2 = u[0::2], u[1::2]
    if (u1 <= 0.0).any():  # normal() redraws u1 == 0 (odds 2^-53 a draw): shifts the stream
        rng = Rng(seed)
        return np.array([rng.normal() for _ in range(count)])
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(6.283185307179586 * u2)


# ---------------------------------------------------------------- data
class TextData:
    """The bytes of a file split as dtrain's load_text_data splits them."""

    def __init__(self, path, val_fraction, seq_len, seed):
        import numpy as np
        self.tokens = np.fromfile(path, dtype=np.uint8)
        total = len(self.tokens)
        val = int(math.floor(total * val_fraction + 0.5))  # std::llround for positive values
        self.train_len = total - val
        self.val_len = val
        self.seq_len = seq_len
        self.seed = seed
        # Note [Text windows]: training windows per epoch, validation windows.
        self.train_windows = self.train_len // seq_len - 1
        self.val_windows = (val - 1) // seq_len
        if self.train_windows < 1 or self.val_windows < 1:
            raise SystemExit(f"{path}: {total} bytes are too few for windows of {seq_len + 1}")
        self._order_epoch, self._order = -1, None

    def window_offset(self, epoch):
        return Rng(mix(mix(self.seed, WINDOW_OFFSET_PURPOSE), epoch)).below(self.seq_len)

    def epoch_order(self, epoch):
        if epoch != self._order_epoch:
            order = list(range(self.train_windows))
            rng = Rng(mix(mix(self.seed, SAMPLER_PURPOSE), epoch))
            for i in range(self.train_windows - 1, 0, -1):  # Fisher-Yates
                j = rng.below(i + 1)
                order[i], order[j] = order[j], order[i]
            self._order_epoch, self._order = epoch, order
        return self._order

    def windows(self, starts):
        """(B, T) inputs and targets (int64 tensors) of the windows at `starts`."""
        import numpy as np
        import torch
        idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(self.seq_len + 1, dtype=np.int64)
        w = torch.from_numpy(self.tokens[idx].astype(np.int64))
        return w[:, :-1], w[:, 1:]

    def dtrain_batch_starts(self, step, batch):
        """Where step `step`'s windows start in the training split, as dtrain picks them."""
        per_epoch = self.train_windows // batch  # Note [Epoch remainder]
        epoch, b = divmod(step, per_epoch)
        offset = self.window_offset(epoch)
        return [offset + i * self.seq_len for i in self.epoch_order(epoch)[b * batch:(b + 1) * batch]]

    def random_batch_starts(self, gen, batch):
        import torch
        return torch.randint(self.train_len - self.seq_len, (batch,), generator=gen).tolist()


# ---------------------------------------------------------------- model
def build_model(args, vocab, attention="explicit"):
    """nanoGPT's GPT of args' shape. attention "explicit": the softmax written out (as
    this benchmark's CPU runs have it); "sdpa": F.scaled_dot_product_attention with
    is_causal=True (flash attention on a GPU; bench/torch_gpt_gpu_reference.py)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(args.n_embd, 3 * args.n_embd)
            self.c_proj = nn.Linear(args.n_embd, args.n_embd)
            self.resid_dropout = nn.Dropout(args.dropout)
            if attention == "explicit":
                self.register_buffer("mask", torch.tril(torch.ones(args.seq_len, args.seq_len, dtype=torch.bool))
                                     .view(1, 1, args.seq_len, args.seq_len), persistent=False)

        def forward(self, x):
            b, t, c = x.shape  # (B, T, C)
            h = args.n_head
            q, k, v = self.c_attn(x).split(c, dim=2)
            q = q.view(b, t, h, c // h).transpose(1, 2)  # (B, H, T, hs)
            k = k.view(b, t, h, c // h).transpose(1, 2)
            v = v.view(b, t, h, c // h).transpose(1, 2)
            # No dropout on the probabilities: dtrain has none there (models/gpt.h).
            if attention == "sdpa":
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hs)
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // h))  # (B, H, T, T)
                att = att.masked_fill(~self.mask[:, :, :t, :t], float("-inf"))
                att = F.softmax(att, dim=-1)
                y = att @ v
            y = y.transpose(1, 2).contiguous().view(b, t, c)
            return self.resid_dropout(self.c_proj(y))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(args.n_embd, 4 * args.n_embd)
            self.gelu = nn.GELU(approximate="tanh")
            self.c_proj = nn.Linear(4 * args.n_embd, args.n_embd)
            self.dropout = nn.Dropout(args.dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(args.n_embd, eps=1e-5)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(args.n_embd, eps=1e-5)
            self.mlp = Mlp()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab, args.n_embd),
                wpe=nn.Embedding(args.seq_len, args.n_embd),
                drop=nn.Dropout(args.dropout),
                h=nn.ModuleList([Block() for _ in range(args.n_layer)]),
                ln_f=nn.LayerNorm(args.n_embd, eps=1e-5),
            ))
            self.lm_head = nn.Linear(args.n_embd, vocab, bias=False)
            self.lm_head.weight = self.transformer.wte.weight  # tied; named_parameters() lists it once
            self.register_buffer("pos", torch.arange(args.seq_len), persistent=False)

        def forward(self, idx):
            t = idx.shape[1]
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(self.pos[:t]))
            for block in self.transformer.h:
                x = block(x)
            return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)

    return Gpt()


def init_weights(model, args):
    """GPT-2's init: weights normal(0, 0.02), c_proj weights normal(0, 0.02/sqrt(2L)),
    biases 0, LayerNorm weights 1; drawn as dtrain draws them, or by torch (which
    needs no numpy, and draws on the parameters' device)."""
    import torch
    proj_std = 0.02 / math.sqrt(2 * args.n_layer)
    if args.init == "torch":
        torch.manual_seed(args.seed)
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            if name.endswith(".bias"):
                p.zero_()
            elif ".ln_" in name:
                p.fill_(1.0)
            else:
                std = proj_std if name.endswith("c_proj.weight") else 0.02
                if args.init == "torch":
                    torch.nn.init.normal_(p, mean=0.0, std=std)
                else:
                    import numpy as np
                    values = (std * dtrain_normals(mix(args.seed, i), p.numel())).astype(np.float32)
                    p.copy_(torch.from_numpy(values).view(p.shape))


def autocast(args):
    """bf16 autocast for --precision bf16, else nothing."""
    import contextlib
    import torch
    if args.precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_at(args, step):
    """runtime/lr_schedule.cpp's lr_at with decay cosine, total steps = --iters."""
    w = args.warmup_steps
    if step < w:
        return args.lr * (step + 1) / w
    span = max(1, args.iters - w - 1)
    t = min(1.0, (step - w) / span)
    return args.min_lr + (args.lr - args.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def evaluate(model, data, args):
    """Mean over every validation window of its mean token loss."""
    import torch
    from torch.nn import functional as F
    model.eval()
    total, n = 0.0, data.val_windows
    with torch.no_grad():
        for first in range(0, n, args.eval_batch):
            starts = [data.train_len + i * args.seq_len for i in range(first, min(n, first + args.eval_batch))]
            x, y = data.windows(starts)
            with autocast(args):
                logits = model(x).float()
            per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            total += float(per_token.view(y.shape).double().mean(dim=1).sum())
    model.train()
    return total / n


def main():
    args = parse_args()
    pin_thread_env(args.threads)
    try:
        import numpy  # noqa: F401
        import torch
        from torch.nn import functional as F
    except ImportError as e:
        print(f"torch_gpt_reference.py: {sys.executable} cannot import torch and numpy ({e}); install Debian's "
              "python3-torch (apt-get install python3-torch) or pip install torch numpy in a venv", file=sys.stderr)
        return 3
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)  # dropout's masks, --order random

    vocab = 256
    data = TextData(args.data, args.val_fraction, args.seq_len, args.seed)
    model = build_model(args, vocab)
    init_weights(model, args)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps)
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    print(f"torch {torch.__version__} ({sys.executable}), {args.threads} thread(s), {args.precision}; "
          f"{n_params} parameters; "
          f"{args.data}: {data.train_len} train bytes ({data.train_windows} windows an epoch), "
          f"{data.val_len} validation bytes ({data.val_windows} windows); order {args.order}, init {args.init}",
          flush=True)

    # The epochs' window orders before the clock starts (dtrain computes them lazily;
    # about 20 ms an epoch here either way).
    per_epoch = data.train_windows // args.batch
    if args.order == "dtrain":
        batches = [data.dtrain_batch_starts(step, args.batch) for step in range(args.iters)]
    else:
        gen = torch.Generator().manual_seed(args.seed)
        batches = [data.random_batch_starts(gen, args.batch) for _ in range(args.iters)]

    model.train()
    times = []
    loss = None
    t0 = time.perf_counter()
    for step in range(args.iters):
        lr = lr_at(args, step)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = data.windows(batches[step])
        with autocast(args):
            logits = model(x).float()
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))  # = mean over windows of their means
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        times.append(time.perf_counter())
        if args.log_every and ((step + 1) % args.log_every == 0 or step + 1 == args.iters):
            print(f"step {step + 1:5d} | epoch {step / per_epoch:.3f} | loss {loss.item():.4f} | lr {lr:.3e} | "
                  f"{times[-1] - t0:.1f} s", flush=True)
    final_train_loss = float(loss.detach())
    iter_wall = times[-1] - t0
    window = times[-1] - times[args.warmup - 1]
    tokens_per_step = args.batch * args.seq_len
    tokens_per_s = (args.iters - args.warmup) * tokens_per_step / window

    t_eval = time.perf_counter()
    val_loss = evaluate(model, data, args)
    eval_s = time.perf_counter() - t_eval
    print(f"done: {args.iters} steps in {iter_wall:.1f} s, {tokens_per_s:.0f} tokens/s after step {args.warmup}; "
          f"final validation loss {val_loss:.4f} ({val_loss / math.log(2):.4f} bits per byte; "
          f"{data.val_windows} windows, {eval_s:.1f} s)", flush=True)
    print("RESULT " + json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "python": sys.executable,
        "threads": args.threads,
        "iters": args.iters,
        "warmup": args.warmup,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "order": args.order,
        "init": args.init,
        "iter_wall_s": round(iter_wall, 3),
        "tokens_per_s": round(tokens_per_s, 1),
        "tokens_per_s_all_steps": round(args.iters * tokens_per_step / iter_wall, 1),
        "final_train_loss": round(final_train_loss, 4),
        "final_val_loss": round(val_loss, 4),
        "val_windows": data.val_windows,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
