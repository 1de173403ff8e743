#!/usr/bin/env bash
# One call on an offline GPU machine (H100/H200, torch 2.11, Triton 3.6, nvcc, pybind11, ninja, pytest,
# pytest-benchmark): build the package, run the shared suite on CUDA for every built backend, the GPU-only tests
# (CUDA-graph capture, rows beyond 2^31 elements, split rows), a benchmark, and print a short table last.
# Fits in about 9 minutes (BUDGET): every stage has its own time limit and a failing stage does not stop the next.
# A launchers.cu object made here ahead (scripts/cuda_object.sh .device/launchers_sm90a.o; carry .device) saves the
# build's long pole.
#
#   OUT=/some/dir benchmarks/device_check.sh        # under $OUT (default /tmp/gtl-device-check): summary.txt,
#                                                   # bench.json, bench-compile.json, e2e.json, auto_table.json,
#                                                   # compat.json, compat.md, logs.tar.gz
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
# A launchers.cu object made ahead by scripts/cuda_object.sh (carried in .device/) saves its ~2 min compile when this
# nvcc and these sources are the ones that made it (its stamp); if linking it fails, the build runs again from source.
OBJ=.device/launchers_sm90a.o
HAVE=$(CUDA_HOME=${CUDA_ROOT:-/nonexistent} bash scripts/cuda_object.sh --stamp 2>/dev/null)
if [ -f "$OBJ" ] && [ -n "$HAVE" ] && [ "$HAVE" = "$(cat "$OBJ.nvcc" 2>/dev/null)" ]; then
  note "linking the carried $OBJ ($HAVE)"
  stage build 240 "$LOGS/build.log" "${BUILD_ENV[@]}" GTL_KERNELS_CUDA_OBJECT=$OBJ \
    $PY -m pip install --no-build-isolation --no-deps -e .
  if [ "$DRY" != 1 ] && ! $PY -c "import torch, gtl_kernels._C_cuda" >>"$LOGS/build.log" 2>&1; then
    note "the carried object gave no loadable gtl_kernels._C_cuda: building from source"
    stage build-source 240 "$LOGS/build-source.log" "${BUILD_ENV[@]}" $PY -m pip install --no-build-isolation --no-deps -e .
  fi
else
  note "no usable $OBJ (here: ${HAVE:-no nvcc}; object: $(cat "$OBJ.nvcc" 2>/dev/null)): launchers.cu compiles here"
  stage build 240 "$LOGS/build.log" "${BUILD_ENV[@]}" $PY -m pip install --no-build-isolation --no-deps -e .
fi

# The backends load and each extension's error path (a shape check whose message formats sizes) returns an error:
# one process. Only if it fails, each statement in a process of its own, so that a crash names its module, with the
# Python stack (faulthandler), the native one (cuda-gdb, where the machine has it) and how the extension links the C++
# runtime. Seen on an H200 machine (2026-12-04, g++ 13.3, torch 2.11+cu130): the cpu extension crashed formatting an
# integer into a stream (import, fixed; the error path of its shape checks, open).
BAD_BIAS="for d in ('cpu', 'cuda'):
  try: torch.ops.gtl.guided_log_softmax(torch.randn(2, 5, device=d), torch.randn(3, 5, device=d), torch.ones(2, device=d), torch.ones(2, device=d))
  except RuntimeError as e: print(d, 'error path ok:', str(e).splitlines()[0][:90])"
probe() { $PY -X faulthandler -c "import torch; $1" >"$LOGS/probe.log" 2>&1; }
PROBE_OK=1
if [ "$DRY" != 1 ] && ! probe "import gtl_kernels; gtl_kernels.available_backends()
import gtl_kernels._native, gtl_kernels._native_cuda
$BAD_BIAS"; then
  PROBE_OK=0
  for m in "import gtl_kernels._C" "import gtl_kernels._C_cuda" "import gtl_kernels._native" \
      "import gtl_kernels._native_cuda" "import gtl_kernels.triton" "import gtl_kernels._native
$BAD_BIAS" "import gtl_kernels._native_cuda
$BAD_BIAS"; do
    probe "$m"
    rc=$?
    grep "error path ok" "$LOGS/probe.log" | tee -a "$SUMMARY"
    [ $rc = 0 ] && continue
    note "$(echo "$m" | head -1): FAILED (rc $rc)"
    tail -12 "$LOGS/probe.log" | tee -a "$SUMMARY"
    if command -v cuda-gdb >/dev/null; then
      timeout 60 cuda-gdb -q -batch -ex run -ex bt --args $PY -c "import torch; $m" 2>&1 | grep -E "^#[0-9] |signal" |
        head -12 | cut -c1-200 | tee -a "$SUMMARY"
    fi
  done
  for so in gtl_kernels/_C.*.so gtl_kernels/_C_cuda.*.so; do
    [ -f "$so" ] || continue
    note "$so: $(ldd "$so" | grep -oE "lib(stdc\+\+|gomp)[^ ]* => [^ ]*" | paste -sd' ') ; defined std:: symbols: \
$(nm -DC --defined-only "$so" | grep -c " std::") (_M_insert: $(nm -DC "$so" | grep -c "_M_insert"))"
  done
  note "$(g++ --version | head -1); $(ldconfig -p | grep -m1 "libstdc++.so.6 ")"
  # a library function compiled inside a `#pragma GCC target` region (cpu_multiversion.h) would use ymm/zmm registers
  for so in gtl_kernels/_C.*.so; do
    note "std/c10 functions of $so with ymm/zmm code: $(objdump -d -C --no-show-raw-insn "$so" 2>/dev/null |
      awk '/^[0-9a-f]+ <.*>:$/ {fn=$0} /[yz]mm/ {if (fn ~ /std::|c10::|at::/ && !(fn in seen)) {seen[fn]=1; n++}}
      END {print n+0}')"
  done
  grep -m1 -o "avx512[a-z]*" /proc/cpuinfo | head -1 | sed 's/^/cpu: /' | tee -a "$SUMMARY"
fi
[ "$DRY" = 1 ] || note "backends load, error paths: $([ $PROBE_OK = 1 ] && echo ok || echo 'see above')"
[ "${STOP_AFTER:-}" = probe ] && { lscpu | grep -E "Model name|^Flags" | cut -c1-400 | tee -a "$SUMMARY"; exit 0; }

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
# The shared suite's backend cases per backend (Triton first: it is this check's subject); the rest of the suite runs
# the same on any machine and CI runs it. The torch reference on CUDA runs only when SUITE_BACKENDS names it, without
# the slow statistical tests: they measure the same float64 code that CI runs on the CPU. Workers in parallel (pytest-xdist, in the image) share the GPU and
# overlap Triton's compiles, the CPU-bound part of a first run.
PYTEST=($PY -m pytest -q -p no:cacheprovider -o addopts= --durations=5)
XDIST=()
$PY -c "import xdist" 2>/dev/null && XDIST=(-n 12)
for b in $(echo "${SUITE_BACKENDS:-${BACKENDS/,torch/}}" | tr ',' ' '); do  # SUITE_BACKENDS=triton,cuda,torch: all
  case $b in
    triton) limit=240; extra=() ;;  # 150 s was not enough with 6 workers (2026-12-04): compiles dominate
    cuda) limit=100; extra=() ;;
    *) limit=60; extra=(-m "not slow") ;;
  esac
  GTL_TEST_BACKENDS=$b stage "suite-$b" $limit "$LOGS/suite-$b.log" "${PYTEST[@]}" "${XDIST[@]}" tests -k "$b-cuda" \
    "${extra[@]}" --ignore=tests/test_gpu.py --ignore=tests/test_install.py --ignore=tests/test_bench.py || true
done
stage gpu-tests 100 "$LOGS/gpu-tests.log" "${PYTEST[@]}" "${XDIST[@]}" tests/test_gpu.py tests/test_triton_backend.py \
  tests/test_fuzz_regressions.py tests/test_bench_compat.py -rs || true

# --- benchmark -----------------------------------------------------------------------------------------------------
# The issue's shapes, bf16, with and without a dense bias; the harness times the backends and the baselines (argmax
# floor, copy, the PyTorch step in fp32 / fp64 noise) in the same run and checks correctness first. Then a sweep of
# the chunked race's launch settings (for tuning its defaults), and torch.compile of the PyTorch step (tens of seconds
# per shape: one shape), each only if time is left.
FAST=$(echo "$BACKENDS" | tr ',' '\n' | grep -v '^torch$' | paste -sd, -)
# Everything after the tests shares what is left of BUDGET seconds (default 540: with a machine's start, one call of
# the 15-minute lease; run it with timeout_s 600).
BUDGET=${BUDGET:-540}
left() { echo $((BUDGET - $(elapsed))); }
LEFT=$(($(left) - 120))
[ $LEFT -lt 60 ] && LEFT=60
[ $LEFT -gt 240 ] && LEFT=240
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
# the drop-ins against the original formulas on the GPU (issue shapes; the CPU numbers are in docs/PERF.md)
if [ "$HARNESS" = 1 ] && [ "$(left)" -ge 90 ]; then
  stage compat 120 "$LOGS/compat.log" $PY -m gtl_kernels.bench.compat --device cuda --runs 5 --max-seconds 8 \
    --json "$OUT/compat.json" --markdown "$OUT/compat.md" || true
fi
# one GTL ancestral and one scheduled step with the paper's model sizes (60M denoiser, 4M ratio net, V = 30522,
# L = 512): the share of the step outside model forward passes (goal: under 5%)
if [ "$HARNESS" = 1 ] && [ "$(left)" -ge 60 ]; then
  stage e2e 60 "$LOGS/e2e.log" $PY -m gtl_kernels.bench --device cuda --backends "${FAST:-triton}" --no-progress \
    --no-png --min-time 0.05 --ops sample --shapes 1x128256 --dtypes bf16 --bias none --baselines argmax,pytorch \
    --e2e-size paper --json "$OUT/e2e.json" || true
fi
if [ "$HARNESS" = 1 ] && [ "$(left)" -ge 60 ]; then  # sample's settings (22 s on an H200), then the other ops at 8 / 4 warps
  stage sweep 90 "$LOGS/sweep.log" $PY -m gtl_kernels.bench --preset triton-sweep || true
fi
LEFT=$(left)
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
grep "^sweep" "$LOGS/sweep.log" 2>/dev/null | cut -c1-150
grep -E "^(mdlm|llada|fast_dllm|dream|gtl) " "$LOGS/compat.log" 2>/dev/null | cut -c1-170
grep -- "->" "$LOGS/auto-table.log" 2>/dev/null | cut -c1-160
# Only a few files come back from a device call: one archive of every log.
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
echo "--- bench ---"
for f in bench bench-compile e2e; do
  [ -f "$OUT/$f.json" ] || continue
  $PY -m gtl_kernels.bench --from-json "$OUT/$f.json" --no-png 2>/dev/null | grep -v "^JSON" | cut -c1-170 \
    || echo "$f.json: cannot render"
done
