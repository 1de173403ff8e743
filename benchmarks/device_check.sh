#!/usr/bin/env bash
# One call on an offline GPU machine (H100/H200, torch 2.11, Triton 3.6, nvcc, pybind11, ninja, pytest,
# pytest-benchmark): build the package, run the shared suite on CUDA for every built backend, the GPU-only tests
# (CUDA-graph capture, rows beyond 2^31 elements, split rows), a benchmark, and print a short table last.
# Fits in 8 minutes: every stage has its own time limit and a failing stage does not stop the next.
#
#   OUT=/some/dir benchmarks/device_check.sh        # under $OUT (default /tmp/gtl-device-check): summary.txt,
#                                                   # bench.json, bench-compile.json, e2e.json, auto_table.json, logs.tar.gz
#   DRY_RUN=1 benchmarks/device_check.sh            # no GPU: print the commands, run only the non-GPU parts
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gtl-device-check}
PY=${PYTHON:-python3}
DRY=${DRY_RUN:-0}
LOGS="$OUT/logs"
mkdir -p "$LOGS"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
START=$(date +%s)
export PYTHONUNBUFFERED=1

note() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo $(($(date +%s) - START)); }

# stage NAME LIMIT_S LOG COMMAND...: run with a time limit, record status and duration
stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  local t0=$(date +%s) rc
  if [ "$DRY" = 1 ]; then
    echo "[dry-run] $name (limit ${limit}s): $*" | tee "$log"
    rc=0
  else
    echo "=== $name (limit ${limit}s) ==="
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    rc=$?
  fi
  local dt=$(($(date +%s) - t0))
  local tail_line
  tail_line=$(grep -E "passed|failed|error|Error" "$log" | tail -1 | cut -c1-110)
  printf '%-22s rc=%-3s %4ss  %s\n' "$name" "$rc" "$dt" "${tail_line:-}" | tee -a "$SUMMARY"
  return $rc
}

# --- environment --------------------------------------------------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None, '| triton', triton.__version__)"
} 2>&1 | tee "$LOGS/env.txt" | tee -a "$SUMMARY"

# --- build ---------------------------------------------------------------------------------------------------------
# The nvcc on PATH can be a wrapper script (seen on the CPU machines); prefer a real toolkit root that holds nvcc.
NVCC=$(command -v nvcc || true)
CUDA_ROOT=${CUDA_HOME:-}
for cand in "$CUDA_ROOT" /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "${NVCC:-/nonexistent}")")")"; do
  if [ -n "$cand" ] && [ -x "$cand/bin/nvcc" ] && [ -d "$cand/include" ]; then CUDA_ROOT=$cand; break; fi
done
note "nvcc on PATH: ${NVCC:-none}; CUDA_HOME=${CUDA_ROOT:-none}"
BUILD_ENV=(env TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16)
[ -n "$CUDA_ROOT" ] && BUILD_ENV+=(CUDA_HOME="$CUDA_ROOT")
stage build 240 "$LOGS/build.log" "${BUILD_ENV[@]}" $PY -m pip install --no-build-isolation --no-deps -e .

BACKENDS=$($PY - <<'EOF' 2>>"$LOGS/build.log"
import gtl_kernels, torch
ok = [n for n, i in gtl_kernels.available_backends().items()
      if i.available and (not i.device_types or "cuda" in i.device_types)]
print(",".join(n for n in ("triton", "cuda", "torch") if n in ok))
for n, i in gtl_kernels.available_backends().items():
    print(f"  backend {n}: {'yes' if i.available else 'no'} ({i.reason})", file=__import__("sys").stderr)
EOF
)
grep "  backend" "$LOGS/build.log" | tee -a "$SUMMARY"
note "CUDA backends under test: ${BACKENDS:-none}"

# --- tests ---------------------------------------------------------------------------------------------------------
# The shared suite per backend (Triton first: it is this check's subject). The torch reference on CUDA skips the
# slow statistical tests: they measure the same float64 code that CI runs on the CPU.
PYTEST=($PY -m pytest -q -p no:cacheprovider -o addopts= --durations=5)
for b in ${BACKENDS//,/ }; do
  case $b in
    triton) limit=150; extra=() ;;
    cuda) limit=90; extra=() ;;
    *) limit=60; extra=(-m "not slow") ;;
  esac
  GTL_TEST_BACKENDS=$b stage "suite-$b" $limit "$LOGS/suite-$b.log" "${PYTEST[@]}" tests "${extra[@]}" \
    --ignore=tests/test_gpu.py --ignore=tests/test_install.py --ignore=tests/test_bench.py || true
done
stage gpu-tests 60 "$LOGS/gpu-tests.log" "${PYTEST[@]}" tests/test_gpu.py tests/test_triton_backend.py -rs || true

# --- benchmark -----------------------------------------------------------------------------------------------------
# The issue's shapes, bf16, with and without a dense bias; the harness times the backends and the baselines (argmax
# floor, copy, the PyTorch step in fp32 / fp64 noise) in the same run and checks correctness first. Then a sweep of
# the chunked race's launch settings (for tuning its defaults), and torch.compile of the PyTorch step (tens of seconds
# per shape: one shape), each only if time is left.
FAST=$(echo "$BACKENDS" | tr ',' '\n' | grep -v '^torch$' | paste -sd, -)
LEFT=$((380 - $(elapsed)))
[ $LEFT -lt 60 ] && LEFT=60
HARNESS=0
if $PY -c "import gtl_kernels.bench.cli" 2>/dev/null; then
  HARNESS=1
  BENCH=($PY -m gtl_kernels.bench --device cuda --dtypes bf16 --backends "${FAST:-triton}" --no-e2e --no-progress
    --no-png --min-time 0.1)
  stage bench $LEFT "$LOGS/bench.log" "${BENCH[@]}" --ops sample,masked_transition --bias both \
    --shapes 8192x30522,8192x50257,8192x128256,65536x30522,65536x50257,1x128256,8x128256 \
    --baselines argmax,amax,copy,pytorch,pytorch-fp64 --json "$OUT/bench.json" || true
else
  note "bench: gtl_kernels.bench does not import (see build.log)"
fi
# auto's measured choices (cuda vs triton per op and row class), for gtl_kernels/auto_table.json
if [ -f "$OUT/bench.json" ]; then
  cp gtl_kernels/auto_table.json "$OUT/auto_table.json"
  stage auto-table 30 "$LOGS/auto-table.log" $PY -m gtl_kernels.bench.auto_table "$OUT/bench.json" \
    --write "$OUT/auto_table.json" || true
fi
if [ "$HARNESS" = 1 ] && [ $((470 - $(elapsed))) -ge 40 ]; then
  stage sweep 40 "$LOGS/sweep.log" $PY -m gtl_kernels.bench --preset triton-sweep || true
fi
# one GTL ancestral and one scheduled step with the paper's model sizes (60M denoiser, 4M ratio net, V = 30522,
# L = 512): the share of the step outside model forward passes (goal: under 5%)
if [ "$HARNESS" = 1 ] && [ $((470 - $(elapsed))) -ge 90 ]; then
  stage e2e 60 "$LOGS/e2e.log" $PY -m gtl_kernels.bench --device cuda --backends "${FAST:-triton}" --no-progress \
    --no-png --min-time 0.05 --ops sample --shapes 1x128256 --dtypes bf16 --bias none --baselines argmax,pytorch \
    --e2e-size paper --json "$OUT/e2e.json" || true
fi
LEFT=$((470 - $(elapsed)))
if [ "$HARNESS" = 1 ] && [ $LEFT -ge 60 ]; then
  stage bench-compile $LEFT "$LOGS/bench-compile.log" "${BENCH[@]}" --ops sample --bias none --shapes 8192x50257 \
    --baselines argmax,pytorch,compile --compile-ops sample --json "$OUT/bench-compile.json" || true
fi

# --- short table last -----------------------------------------------------------------------------------------------
echo
echo "==================== device check: $(elapsed)s ===================="
cat "$SUMMARY"
for f in "$LOGS"/suite-*.log "$LOGS"/gpu-tests.log; do
  [ -f "$f" ] || continue
  grep -E "^(FAILED|ERROR)" "$f" | head -8 | sed "s|^|$(basename "$f" .log): |" | cut -c1-160
done
grep "^sweep" "$LOGS/sweep.log" 2>/dev/null | cut -c1-140
grep -- "->" "$LOGS/auto-table.log" 2>/dev/null | cut -c1-160
# Only a few files come back from a device call: one archive of every log.
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
echo "--- bench ---"
for f in bench bench-compile e2e; do
  [ -f "$OUT/$f.json" ] || continue
  $PY -m gtl_kernels.bench --from-json "$OUT/$f.json" --no-png 2>/dev/null | grep -v "^JSON" | cut -c1-170 \
    || echo "$f.json: cannot render"
done
