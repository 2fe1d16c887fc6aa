#!/usr/bin/env python3
"""Writes an llm.c token shard of uniformly random tokens (for the GPU benchmark).

llm.c's format (dev/data/data_common.py, write_datafile; read by dtrain's
runtime/token_shards.cpp): a header of 256 little-endian int32 -- [0] the magic
20240520, [1] the version 1, [2] the token count, the rest 0 -- then exactly that
many little-endian uint16 tokens.

The tokens are drawn uniformly from [0, --vocab) by Python's random.Random(--seed), so
the same arguments write the same bytes. Random tokens carry nothing to learn; they
are for timing and memory, where only the shapes matter.

Standard library only (no numpy): it runs on a bare GPU image's python3.

  gen_token_shard.py OUT.bin --tokens 2097152 [--vocab 50257] [--seed 1]
"""
import argparse
import array
import os
import random
import sys

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256


def shard_bytes(tokens, vocab, seed):
    """The shard's bytes: the header, then `tokens` random uint16 tokens below `vocab`."""
    header = array.array("i", [0] * HEADER_INTS)
    header[0], header[1], header[2] = MAGIC, VERSION, tokens
    rng = random.Random(seed)
    body = array.array("H", [rng.randrange(vocab) for _ in range(tokens)])
    if sys.byteorder != "little":
        header.byteswap()
        body.byteswap()
    return header.tobytes() + body.tobytes()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the shard to write (its folder must exist)")
    p.add_argument("--tokens", type=int, required=True, help="how many tokens")
    p.add_argument("--vocab", type=int, default=50257, help="tokens are drawn from [0, VOCAB) (GPT-2's 50257)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if not 0 < a.tokens < 2 ** 31:
        p.error(f"--tokens must be in [1, 2^31) (the header holds an int32), not {a.tokens}")
    if not 0 < a.vocab <= 65536:
        p.error(f"--vocab must be in [1, 65536] (tokens are uint16), not {a.vocab}")
    data = shard_bytes(a.tokens, a.vocab, a.seed)
    tmp = a.out + ".partial"
    with open(tmp, "wb") as f:  # written aside, then renamed: no half shard under the real name
        f.write(data)
    os.replace(tmp, a.out)
    print(f"{a.out}: {a.tokens} random tokens in [0, {a.vocab}), seed {a.seed} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
