#!/usr/bin/env bash
# Compiles csrc/cuda/launchers.cu (torch-free, the CUDA build's long pole) into one object for one architecture with
# the flags setup.py's CUDA extension compiles it with, so that a build host can link it instead
# (GTL_KERNELS_CUDA_OBJECT=OUT.o): OUT.o.nvcc records the nvcc version and a hash of the sources, of setup.py (its
# nvcc flags, repeated below) and of this script, which the host's nvcc and checkout must match
# (benchmarks/device_check.sh compiles from source otherwise).
#   scripts/cuda_object.sh OUT.o [ARCH]      # ARCH: 90a (default), 90, 80, ...
#   scripts/cuda_object.sh --stamp           # the line OUT.o.nvcc must hold for this checkout (nvcc found here)
set -euo pipefail
cd "$(dirname "$0")/.."
stamp() {
  local nvcc_version
  nvcc_version=$("$NVCC" --version | grep -o "release [0-9.]*")
  echo "$nvcc_version sources $(cat csrc/cuda/launchers.cu csrc/include/gtl/* setup.py scripts/cuda_object.sh |
    sha256sum | cut -c1-16)"
}
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
NVCC="${NVCC:-$CUDA_HOME/bin/nvcc}"
[ -x "$NVCC" ] || NVCC="$(command -v nvcc)" || { echo "cuda_object: no nvcc found" >&2; exit 1; }
[ "${1:-}" = --stamp ] && { stamp; exit 0; }
out=${1:?usage: scripts/cuda_object.sh OUT.o [ARCH]}
arch=${2:-90a}
mkdir -p "$(dirname "$out")"
# torch's COMMON_NVCC_FLAGS, -fPIC for the shared library, then setup.py's own nvcc flags
"$NVCC" -c csrc/cuda/launchers.cu -o "$out" -std=c++17 -Icsrc/include -Xcompiler -fPIC \
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
  -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr \
  -O3 --use_fast_math -lineinfo "-gencode=arch=compute_$arch,code=sm_$arch"
stamp >"$out.nvcc"
echo "cuda_object: $out (sm_$arch, $(cat "$out.nvcc"))"
