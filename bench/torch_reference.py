#!/usr/bin/python3
"""PyTorch reference for the dtrain CPU benchmark (bench/run_cpu_bench.sh).

Trains the same MLP or CNN as dtrain's configs/fashion_mnist_{mlp,cnn}.yaml on
Fashion-MNIST with the same optimiser (SGD, momentum 0.9, Nesterov, lr 0.05,
cross-entropy, global batch 64) and measures steady-state training throughput:
samples/s between the end of step --warmup and the end of step --steps, the same
window bench/run_cpu_bench.sh reads from dtrain's metrics.jsonl.

  --ranks 1: one process, torch.set_num_threads(--threads, default 2), batch 64.
  --ranks 2: torch.distributed (gloo on localhost) + DistributedDataParallel, two
             processes with --threads (default 1) thread each and micro-batch 32.

Prints one machine-readable line:
  RESULT {"impl": "pytorch", "model": ..., "ranks": ..., "threads_per_rank": ...,
          "steps": ..., "warmup": ..., "samples_per_s": ..., ...}

Run it with Debian's interpreter (/usr/bin/python3, python3-torch); it is a
benchmark, not a test.
"""
import argparse
import gzip
import json
import os
import socket
import sys
import time

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
GLOBAL_BATCH = 64


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mlp", "cnn"], required=True)
    p.add_argument("--ranks", type=int, choices=[1, 2], default=1)
    p.add_argument("--threads", type=int, default=0, help="threads per rank (default: 2 for 1 rank, 1 for 2 ranks)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps in all")
    p.add_argument("--warmup", type=int, default=20, help="steps excluded from the measurement")
    p.add_argument("--data", default=DATA_DIR)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.threads == 0:
        a.threads = 2 if a.ranks == 1 else 1
    if not 0 < a.warmup < a.steps:
        p.error("need 0 < --warmup < --steps")
    return a


def pin_thread_env(threads):
    # Must happen before torch (and with it OpenBLAS and libgomp) is loaded: OpenBLAS
    # reads its thread count once, and torch.set_num_threads does not reach the
    # OpenBLAS that Debian's torch calls through libblas.so.3. Without this, two
    # 1-thread ranks would each still run 2 OpenBLAS threads on a 2-core machine.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def read_idx(path):
    import numpy as np
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_train(data_dir):
    import numpy as np
    import torch

    def find(stem):
        for name in (stem + ".gz", stem):
            path = os.path.join(data_dir, name)
            if os.path.exists(path):
                return path
        raise FileNotFoundError(f"{stem}(.gz) not in {data_dir} (apt-get install dataset-fashion-mnist)")

    images = read_idx(find("train-images-idx3-ubyte")).astype(np.float32)
    labels = read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
    x = (images / 255.0 - MEAN) / STD
    return torch.from_numpy(x.reshape(-1, 1, 28, 28).copy()), torch.from_numpy(labels.copy())


def build_model(name):
    import torch.nn as nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def run(rank, world, args, port, out):
    pin_thread_env(args.threads)
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    if world > 1:
        import torch.distributed as dist
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)

    x_all, y_all = load_train(args.data)
    torch.manual_seed(args.seed)
    model = build_model(args.model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(model)  # broadcasts rank 0's parameters
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    micro = GLOBAL_BATCH // world

    # The sample order is one permutation per epoch from the seed, the same on every
    # rank; rank r takes its slice of each global batch (as dtrain's sampler does).
    gen = torch.Generator().manual_seed(args.seed)
    n = x_all.shape[0]
    steps_per_epoch = n // GLOBAL_BATCH
    order = None
    times = []
    model.train()
    for step in range(args.steps):
        if step % steps_per_epoch == 0:
            order = torch.randperm(n, generator=gen)
        b = step % steps_per_epoch
        idx = order[b * GLOBAL_BATCH + rank * micro: b * GLOBAL_BATCH + (rank + 1) * micro]
        x, y = x_all[idx], y_all[idx]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the gradient all-reduce finishes inside backward
        opt.step()
        times.append(time.perf_counter())
    final_loss = float(loss.detach())

    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        elapsed = times[-1] - times[args.warmup - 1]
        out.put({
            "impl": "pytorch",
            "torch": torch.__version__,
            "model": args.model,
            "ranks": world,
            "threads_per_rank": args.threads,
            "micro_batch": micro,
            "global_batch": GLOBAL_BATCH,
            "steps": args.steps,
            "warmup": args.warmup,
            "seconds": round(elapsed, 6),
            "samples_per_s": round((args.steps - args.warmup) * GLOBAL_BATCH / elapsed, 1),
            "final_loss": round(final_loss, 4),
        })


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    args = parse_args()
    # The parent pins the thread environment too, so that spawned ranks (which import
    # torch while unpickling) load OpenBLAS with the right count.
    pin_thread_env(args.threads)
    try:
        import torch  # noqa: F401
        import torch.multiprocessing as mp
    except ImportError as e:
        print(f"torch_reference.py: PyTorch is not importable by {sys.executable} ({e}); "
              "install it with: apt-get install python3-torch", file=sys.stderr)
        return 3
    if args.ranks == 1:
        import queue
        q = queue.Queue()
        run(0, 1, args, 0, q)
        result = q.get()
    else:
        ctx = mp.get_context("spawn")
        q = ctx.SimpleQueue()
        port = free_port()
        procs = [ctx.Process(target=run, args=(r, args.ranks, args, port, q)) for r in range(args.ranks)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            print(f"torch_reference.py: a rank failed (exit codes {[p.exitcode for p in procs]})", file=sys.stderr)
            return 1
        result = q.get()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
