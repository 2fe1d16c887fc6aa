#!/usr/bin/env python3
"""PyTorch reference for the dtrain GPU benchmark (bench/run_gpu_bench.sh).

The same MLP or CNN as dtrain's configs/fashion_mnist_{mlp,cnn}.yaml (the models of
bench/torch_reference.py), SGD with momentum 0.9 and Nesterov, lr 0.05, cross-entropy,
fp32 with TF32 off (as dtrain's default), on one GPU, eager or torch.compile. The
training set is put on the GPU once and each step indexes a shuffled batch there, so
PyTorch pays no host data path (dtrain gathers on the host and uploads each batch).
Throughput is samples/s between the end of step --warmup and the end of step --steps,
timed with a device synchronisation at both ends.

Prints: RESULT {"impl": "pytorch-eager"|"pytorch-compile", "model", "batch", "samples_per_s", ...}
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import build_model, load_train  # noqa: E402  (shared model definitions)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mlp", "cnn"], required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--data", default=os.environ.get("DTRAIN_DATA", "/usr/share/datasets/fashion-mnist"))
    a = p.parse_args()

    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    torch.manual_seed(1)
    x_all, y_all = load_train(a.data)
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    model = build_model(a.model).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if a.compile:
        step = torch.compile(step)
    n = x_all.shape[0]
    perm = torch.randperm(n, device=dev)
    per_epoch = n // a.batch
    t0 = None
    for s in range(a.steps):
        if s == a.warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        b = s % per_epoch
        if b == 0 and s > 0:
            perm = torch.randperm(n, device=dev)
        idx = perm[b * a.batch:(b + 1) * a.batch]
        step(x_all[idx], y_all[idx])
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print("RESULT " + json.dumps({
        "impl": "pytorch-compile" if a.compile else "pytorch-eager", "model": a.model, "batch": a.batch,
        "steps": a.steps, "warmup": a.warmup, "samples_per_s": (a.steps - a.warmup) * a.batch / dt,
        "torch": torch.__version__, "device": torch.cuda.get_device_name(0)}))


if __name__ == "__main__":
    main()
