#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages dtrain needs to build, test and train, when
# they are missing. Safe to run again: it installs nothing that is already there.
set -euo pipefail

# libdnnl-dev: oneDNN 2.x, the CPU convolutions. gnuplot-nox: dtrain plot. fortunes:
# the text configs/gpt_fortunes.yaml trains a GPT on (/usr/share/games/fortunes). With
# --test, also what only the test suite needs: clang and libclang-rt-dev (the libFuzzer
# targets, tests/fuzz), slurm-wlm and munge (the real single-node Slurm of
# tests/e2e/slurm_checks.sh), and iproute2 (ip and bridge: the nodes of the namespace
# cluster, tests/cluster/netns_cluster.sh; its unshare, nsenter and setpriv come with
# util-linux, which every Debian has) and nftables (the packet loss of the cluster's
# fault tests where the kernel lacks tc's netem, tests/cluster/cluster_fault.sh), so
# that a machine that only trains gets no compiler or batch system it did not ask for.
packages=(cmake g++ ninja-build libopenmpi-dev openmpi-bin libyaml-cpp-dev libopenblas-dev
          libdnnl-dev zlib1g-dev libgtest-dev dataset-fashion-mnist fortunes gnuplot-nox)
if [ "${1:-}" = --test ]; then
  packages+=(clang libclang-rt-dev slurm-wlm munge iproute2 nftables)
fi

# With a CUDA toolkit: the cuDNN frontend's headers (fused attention), from PyPI into
# .deps/. Without them the CUDA backend still builds, with unfused attention.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  python3 "$root/scripts/fetch_cudnn_frontend.py" "$root/.deps" || true
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "dtrain: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "dtrain: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
