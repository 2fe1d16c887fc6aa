#!/usr/bin/env python3
"""Fetches the headers of NVIDIA's cuDNN frontend (header-only C++) from PyPI.

  fetch_cudnn_frontend.py DEST

The CUDA backend runs fused attention as a cuDNN SDPA graph, which the frontend's
graph API builds (kernels/cuda/fused_attention.cpp). Debian packages no frontend, and
PyPI is the one place besides GitHub that ships it: the wheel nvidia-cudnn-frontend
carries the C++ headers under include/. This writes them to DEST/cudnn-frontend-VERSION/
include, checked against the SHA-256 that PyPI publishes for the wheel, and does
nothing when they are already there. Standard library only (no pip needed).
"""
import hashlib
import io
import json
import os
import sys
import urllib.request
import zipfile

VERSION = "1.32.0"
PACKAGE = "nvidia-cudnn-frontend"


def wheel_url():
    """(url, sha256) of one wheel of VERSION: any will do, only its headers are used."""
    # The simple index (PEP 691's JSON form): what pip itself reads.
    request = urllib.request.Request(f"https://pypi.org/simple/{PACKAGE}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        files = json.load(r)["files"]
    prefix = f"{PACKAGE.replace('-', '_')}-{VERSION}-"
    wheels = [f for f in files if f["filename"].startswith(prefix) and f["filename"].endswith(".whl")]
    wheels.sort(key=lambda f: "x86_64" not in f["filename"])
    if not wheels:
        raise OSError(f"PyPI lists no wheel of {PACKAGE} {VERSION}")
    return wheels[0]["url"], wheels[0]["hashes"]["sha256"]


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    dest = os.path.join(sys.argv[1], f"cudnn-frontend-{VERSION}")
    if os.path.isfile(os.path.join(dest, "include", "cudnn_frontend.h")):
        return 0
    try:
        url, sha256 = wheel_url()
        with urllib.request.urlopen(url, timeout=300) as r:
            data = r.read()
    except OSError as e:
        print(f"fetch_cudnn_frontend.py: cannot download {PACKAGE} {VERSION} from PyPI ({e}); "
              "the CUDA backend builds without cuDNN fused attention", file=sys.stderr)
        return 1
    if hashlib.sha256(data).hexdigest() != sha256:
        print(f"fetch_cudnn_frontend.py: {url} does not match PyPI's SHA-256; nothing written", file=sys.stderr)
        return 1
    partial = dest + ".partial"
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        members = [m for m in wheel.namelist() if m.startswith("include/")]
        wheel.extractall(partial, members)
    os.replace(partial, dest)  # whole or not at all: a half-written folder is never found
    print(f"fetch_cudnn_frontend.py: {PACKAGE} {VERSION} headers in {dest}/include")
    return 0


if __name__ == "__main__":
    sys.exit(main())
