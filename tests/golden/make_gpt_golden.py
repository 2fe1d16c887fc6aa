#!/usr/bin/python3
"""Writes tests/golden/gpt.golden, the fixture dtrain's GPT is checked against.

PyTorch is the independent implementation: a tiny GPT-2 written here in plain
PyTorch, equivalent to nanoGPT's (pre-LN blocks, causal multi-head attention with
c_attn/c_proj, an MLP of c_fc, tanh GELU and c_proj, LayerNorm eps 1e-5 with bias,
learned position embeddings, the head tied to wte without bias, no dropout). Its
named_parameters() order is nanoGPT's and dtrain's flat parameter layout.

Run with Debian's PyTorch (CPU):  /usr/bin/python3 tests/golden/make_gpt_golden.py

Format: as tests/golden/make_golden.py writes it (line-oriented text; '#' lines are
comments; 'KEY V...' lines; 'tensor NAME COUNT' followed by COUNT values, each the
shortest decimal that reads back as the same float32). Parameters are drawn, then
rounded to 4 significant digits before use, so both sides start from exactly the
numbers in the file.

Keys (KEY lines):
  model gpt; n_layer, n_head, n_embd, seq_len, vocab, batch, dropout (0)
  adamw_steps 5; adamw_lr, adamw_beta1, adamw_beta2, adamw_eps, adamw_weight_decay;
  clip_grad_norm (max norm, 2-norm over all parameters)
Tensors, in file order:
  param:NAME        the parameters, in named_parameters() order (NAME as nanoGPT's
                    state_dict, e.g. transformer.h.0.attn.c_attn.weight)
  input, targets    (batch, seq_len) int tokens of the checked batch; targets are the
                    inputs shifted by one (windows of seq_len + 1 random tokens)
  logits            (batch * seq_len, vocab) for that batch
  loss              the mean over the batch of each sample's mean token loss
  grad:NAME         the gradient of that loss for every parameter
  step:K:input, step:K:targets   the batch of AdamW step K (K = 1..5)
  step:K:loss       that batch's loss before step K's update
  step:K:grad_norm  the gradients' global 2-norm before clipping
  final:NAME        every parameter after the 5th step
The 5 steps start from the param: values with zero gradients and a fresh optimizer:
each step computes the loss of its batch, backward, clip_grad_norm_(all parameters,
clip_grad_norm), then torch.optim.AdamW(lr, (beta1, beta2), eps) with two groups:
weight_decay adamw_weight_decay for parameters with dim >= 2 (the linear weights
and both embeddings, wte shared with the head) and 0 for the rest (biases,
LayerNorm weights), as nanoGPT's configure_optimizers does.
"""
import math
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SEED = 20240611
CONFIG = {"n_layer": 2, "n_head": 2, "n_embd": 32, "seq_len": 16, "vocab": 64}
BATCH = 4
STEPS = 5
ADAMW = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
CLIP = 1.0
HERE = os.path.dirname(os.path.abspath(__file__))


def fmt(values):
    # numpy prints a float32 as its shortest round-trip decimal.
    return [str(np.float32(v)) for v in values]


def round_to_significant(t, digits):
    """float32 nearest to t rounded to `digits` significant decimal digits."""
    rounded = [float(np.format_float_scientific(np.float32(v), precision=digits - 1, unique=False))
               for v in t.detach().reshape(-1).tolist()]
    return torch.tensor(rounded, dtype=torch.float32).reshape(t.shape)


class CausalSelfAttention(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)

    def forward(self, x):
        b, t, c = x.shape
        hs = c // self.n_head
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.n_head, hs).transpose(1, 2)
        k = k.view(b, t, self.n_head, hs).transpose(1, 2)
        v = v.view(b, t, self.n_head, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.c_proj(y)


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.attn = CausalSelfAttention(c, n_head)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.mlp = Mlp(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, seq_len, vocab):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, n_embd),
            wpe=nn.Embedding(seq_len, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd, eps=1e-5),
        ))
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied; named_parameters() lists wte once

    def forward(self, idx):
        t = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def loss_of(logits, targets):
    # Each sample's loss is the mean over its tokens; the batch's the mean over samples
    # (with equal token counts, the mean over all tokens).
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return per_token.view(targets.shape).mean(dim=1).mean()


def random_batch(vocab, seq_len):
    window = torch.randint(0, vocab, (BATCH, seq_len + 1))
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def seeded_model():
    """The fixture's model, its parameters drawn from SEED (the RNG then draws batches)."""
    # One thread: the same summation order on every run, so the fixture regenerates
    # byte for byte.
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    model = Gpt(**CONFIG)
    # Values of an order that makes every part matter (GPT-2's 0.02 would leave the
    # network nearly linear): weights normal(0, 0.2), biases normal(0, 0.05),
    # LayerNorm weights 1 + normal(0, 0.1); then rounded.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape) * 0.05)
            elif ".ln_" in name:
                p.copy_(1 + torch.randn(p.shape) * 0.1)
            else:
                p.copy_(torch.randn(p.shape) * 0.2)
            p.copy_(round_to_significant(p, 4))
    return model


def main():
    model = seeded_model()
    names = [name for name, _ in model.named_parameters()]

    lines = ["# dtrain golden fixture; do not edit. Regenerate with:",
             "#   /usr/bin/python3 tests/golden/make_gpt_golden.py",
             "# torch %s (CPU), torch.manual_seed(%d)" % (torch.__version__, SEED),
             "# loss = mean over the batch of each sample's mean token cross-entropy",
             "model gpt"]
    for key, value in CONFIG.items():
        lines.append("%s %d" % (key, value))
    lines.append("batch %d" % BATCH)
    lines.append("dropout 0")
    lines.append("adamw_steps %d" % STEPS)
    for key, value in ADAMW.items():
        lines.append("adamw_%s %r" % (key, value))
    lines.append("clip_grad_norm %r" % CLIP)

    def tensor(name, values, formatter=fmt):
        values = list(values)
        lines.append("tensor %s %d" % (name, len(values)))
        text = formatter(values)
        for i in range(0, len(text), 10):
            lines.append(" ".join(text[i:i + 10]))

    def ints(name, t):
        tensor(name, t.reshape(-1).tolist(), lambda v: [str(int(a)) for a in v])

    for name, p in model.named_parameters():
        tensor("param:" + name, p.detach().reshape(-1).tolist())

    x, y = random_batch(CONFIG["vocab"], CONFIG["seq_len"])
    logits = model(x)
    loss = loss_of(logits, y)
    loss.backward()
    ints("input", x)
    ints("targets", y)
    tensor("logits", logits.detach().reshape(-1).tolist())
    tensor("loss", [loss.item()])
    for name, p in model.named_parameters():
        tensor("grad:" + name, p.grad.reshape(-1).tolist())

    model.zero_grad(set_to_none=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": ADAMW["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"])
    for step in range(1, STEPS + 1):
        x, y = random_batch(CONFIG["vocab"], CONFIG["seq_len"])
        loss = loss_of(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        ints("step:%d:input" % step, x)
        ints("step:%d:targets" % step, y)
        tensor("step:%d:loss" % step, [loss.item()])
        tensor("step:%d:grad_norm" % step, [norm.item()])
    for name, p in model.named_parameters():
        tensor("final:" + name, p.detach().reshape(-1).tolist())
    assert names == [name for name, _ in model.named_parameters()]

    path = os.path.join(HERE, "gpt.golden")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))


if __name__ == "__main__":
    main()
