#!/usr/bin/python3
"""Writes tests/golden/gpt_bf16.golden: the tiny GPT of make_gpt_golden.py (the same
parameters and first batch) under PyTorch's bf16 autocast, the mixed precision that
dtrain's precision.compute: bf16 is checked against.

Run with Debian's PyTorch (CPU):  /usr/bin/python3 tests/golden/make_gpt_bf16_golden.py

Autocast (torch.autocast("cpu", dtype=torch.bfloat16)) runs the linears and the
attention's matmuls on bf16 copies of their inputs and stores their outputs in bf16;
embeddings, LayerNorm and the residual stream stay fp32 here; the loss is taken in fp32
from the bf16 logits. Parameters, their gradients and AdamW's state are fp32.
dtrain's bf16 also stores the residual stream and LayerNorm outputs in bf16 (as
llm.c does), so the two differ by bf16 roundings; the test derives its tolerance
from that (tests/unit/models/test_gpt_bf16_golden.cpp).

Keys: as gpt.golden (model, shape, batch, adamw_*, clip_grad_norm).
Tensors:
  param:NAME          the starting parameters (fp32, those of gpt.golden)
  input, targets      the checked batch (gpt.golden's)
  loss, grad:NAME     bf16 autocast: the batch's loss and every parameter's gradient
  fp32_loss, fp32_grad:NAME   the same in fp32 (how far bf16 moves them)
  step:K:input, step:K:targets, step:K:loss   5 AdamW steps under autocast, each with
                      clip_grad_norm_ before the update, as gpt.golden's
"""
import os

import torch

import make_gpt_golden as gpt
from fixture_writer import Fixture

HERE = os.path.dirname(os.path.abspath(__file__))


def autocast_loss(model, x, y):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    return gpt.loss_of(logits.float(), y)


def main():
    model = gpt.seeded_model()
    f = Fixture(["dtrain golden fixture; do not edit. Regenerate with:",
                 "  /usr/bin/python3 tests/golden/make_gpt_bf16_golden.py",
                 "torch %s (CPU), torch.manual_seed(%d), bf16 autocast" % (torch.__version__, gpt.SEED)])
    f.key("model", "gpt")
    for key, value in gpt.CONFIG.items():
        f.key(key, value)
    f.key("batch", gpt.BATCH)
    f.key("dropout", 0)
    f.key("adamw_steps", gpt.STEPS)
    for key, value in gpt.ADAMW.items():
        f.key("adamw_" + key, repr(value))
    f.key("clip_grad_norm", repr(gpt.CLIP))
    for name, p in model.named_parameters():
        f.floats("param:" + name, p)

    x, y = gpt.random_batch(gpt.CONFIG["vocab"], gpt.CONFIG["seq_len"])
    f.ints("input", x)
    f.ints("targets", y)
    loss = autocast_loss(model, x, y)
    loss.backward()
    f.tensor("loss", [loss.item()])
    for name, p in model.named_parameters():
        f.floats("grad:" + name, p.grad)
    model.zero_grad(set_to_none=True)
    loss = gpt.loss_of(model(x), y)
    loss.backward()
    f.tensor("fp32_loss", [loss.item()])
    for name, p in model.named_parameters():
        f.floats("fp32_grad:" + name, p.grad)

    model.zero_grad(set_to_none=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": gpt.ADAMW["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=gpt.ADAMW["lr"], betas=(gpt.ADAMW["beta1"], gpt.ADAMW["beta2"]), eps=gpt.ADAMW["eps"])
    for step in range(1, gpt.STEPS + 1):
        x, y = gpt.random_batch(gpt.CONFIG["vocab"], gpt.CONFIG["seq_len"])
        loss = autocast_loss(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), gpt.CLIP)
        optimizer.step()
        f.ints("step:%d:input" % step, x)
        f.ints("step:%d:targets" % step, y)
        f.tensor("step:%d:loss" % step, [loss.item()])
    f.write(os.path.join(HERE, "gpt_bf16.golden"))


if __name__ == "__main__":
    main()
