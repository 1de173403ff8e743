#!/usr/bin/env bash
# Compile-checks every CUDA source (csrc/cuda/*.cu, torch-free) for sm_80 and sm_90 with nvcc -c, and prints the
# resource usage (registers, spills, shared memory) ptxas reports. Needs no GPU and no CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
NVCC="${NVCC:-$CUDA_HOME/bin/nvcc}"
[ -x "$NVCC" ] || NVCC="$(command -v nvcc)" || { echo "nvcc_check: no nvcc found" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
for cu in csrc/cuda/*.cu; do
  for arch in 80 90; do
    if "$NVCC" -c "$cu" -o "$out/$(basename "$cu").sm$arch.o" -std=c++17 -O3 --use_fast_math -Icsrc/include \
        -gencode "arch=compute_$arch,code=sm_$arch" -Xptxas -v >"$out/log" 2>&1; then
      grep -E "Compiling entry|Used [0-9]+ registers|spill" "$out/log" | sed "s|^|  [$(basename "$cu") sm_$arch] |" || true
      if grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$out/log" >/dev/null; then
        echo "nvcc_check: $cu spills registers on sm_$arch" >&2
        status=1
      fi
    else
      cat "$out/log" >&2
      echo "nvcc_check: FAILED $cu for sm_$arch" >&2
      status=1
    fi
  done
done
[ $status -eq 0 ] && echo "nvcc_check: all CUDA sources compile for sm_80 and sm_90"
exit $status
