#!/usr/bin/env bash
# Compile-checks every CUDA source (csrc/cuda/*.cu, torch-free) for sm_80 and sm_90 with nvcc -c, and prints the
# resource usage (registers, spills, shared memory) ptxas reports. Needs no GPU and no CUDA build of torch.
# Fails on a compile error or on any register spill. Prints one summary line per source (NVCC_CHECK_VERBOSE=1: every
# entry point's ptxas report). Sources compile in parallel (NVCC_JOBS, default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
NVCC="${NVCC:-$CUDA_HOME/bin/nvcc}"
[ -x "$NVCC" ] || NVCC="$(command -v nvcc)" || { echo "nvcc_check: no nvcc found" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

check_one() {  # one source, both architectures in one nvcc call (the front end runs once)
  local cu="$1" name log
  name="$(basename "$cu")"
  log="$out/$name.log"
  if ! "$NVCC" -c "$cu" -o "$out/$name.o" -std=c++17 -O3 --use_fast_math -Icsrc/include \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -Xptxas -v >"$log" 2>&1; then
    cat "$log" >&2
    echo "nvcc_check: FAILED $cu" >&2
    return 1
  fi
  if [ -n "${NVCC_CHECK_VERBOSE:-}" ]; then
    grep -E "Compiling entry|Used [0-9]+ registers|spill" "$log" | sed "s|^|  [$name] |" || true
  else  # one line per source: entry points, most registers and shared memory any of them uses
    awk -v name="$name" '/Compiling entry/ {n++} /Used [0-9]+ registers/ {
        for (i = 1; i <= NF; i++) { if ($(i+1) == "registers,") r = ($i > r ? $i : r);
                                    if ($(i+1) == "bytes" && $(i+2) ~ /^smem/) s = ($i > s ? $i : s) } }
      END { printf "  %-26s %3d entry points (sm_80 + sm_90), at most %d registers, %d bytes smem\n", name, n, r, s }' \
      "$log"
  fi
  if grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$log" >/dev/null; then
    echo "nvcc_check: $cu spills registers" >&2
    return 1
  fi
}
export -f check_one
export NVCC out
if ls csrc/cuda/*.cu | xargs -P "${NVCC_JOBS:-$(nproc)}" -I{} bash -c 'check_one "$@"' _ {}; then
  echo "nvcc_check: all CUDA sources compile for sm_80 and sm_90 without spills"
else
  exit 1
fi
