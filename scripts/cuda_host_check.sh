#!/usr/bin/env bash
# Host checks of the CUDA backend on a machine without a GPU (docs/CUDA_BACKEND.md "Checks without a GPU").
#
#   1. tests/cuda/host_check.cpp: the device math helpers against long double, Philox known answers, and the
#      block radix select + bitonic sort run through the fiber emulation (tests/cuda/cuda_emu.h).
#   2. tests/cuda/emu_check.py: the five ops' kernels, emulated, against the float64 reference; bit-identical
#      results between the row and split launch paths and between aligned and misaligned rows. Needs torch
#      (skipped with a notice when `$PYTHON -c "import torch"` fails).
#   Steps 1 and 2 run twice, the second time with the block's threads scheduled in reverse order, so that a missing
#   barrier shows whichever thread reads first (a heuristic; racecheck on the GPU is the real check).
#   3. GTL_CUDA_EMU_SUITE=1: also the shared test suite's backend-parametrized tests on the emulated kernels, as
#      backend `emu`, once with the launch plan of an H100 (mostly split path) and once with every row on its own
#      block (about 5 minutes each on 2 cores). GTL_CUDA_EMU_SUITE=ops (CI): the five ops' test files and the
#      high-power statistical tests, with the H100 plan only (about 2 minutes).
#   4. GTL_CUDA_GLUE_CHECK=1: also a syntax check of the torch glue (every csrc/cuda/*.cpp) against the installed
#      torch's headers, with stand-ins for the cuBLAS/cuSPARSE/cuSOLVER headers a CPU machine lacks.
#
# Environment: CXX (g++), PYTHON (.venv/bin/python if present, else python3), GTL_CUDA_EMU_DIR (build directory; a
# temporary one by default).
set -euo pipefail
cd "$(dirname "$0")/.."
CXX="${CXX:-g++}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
out="${GTL_CUDA_EMU_DIR:-}"
if [ -z "$out" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
# No _FORTIFY_SOURCE: the emulation switches fibers with _longjmp between stacks. -O2: the emulated suite runs about
# 20% faster than at -O1 (a function that calls _setjmp is never inlined, so a fiber's locals stay in its own frame).
flags=(-std=c++17 -O2 -g -Wall -Wextra -Werror -Wno-unknown-pragmas -U_FORTIFY_SOURCE -Icsrc/include)

echo "== host_check (device helpers, select/sort)"
"$CXX" "${flags[@]}" -o "$out/host_check" tests/cuda/host_check.cpp
"$out/host_check"
GTL_CUDA_EMU_REVERSE=1 "$out/host_check" >/dev/null  # threads in reverse order: the other side of a missing barrier

echo "== emulated kernels"
"$CXX" "${flags[@]}" -fPIC -shared -o "$out/libgtl_cuda_emu.so" tests/cuda/emu_ops.cpp
export GTL_CUDA_EMU_LIB="$out/libgtl_cuda_emu.so"
export PYTHONPATH="$PWD/tests/cuda:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if "$PYTHON" -c "import torch" 2>/dev/null; then
  "$PYTHON" tests/cuda/emu_check.py
  echo "== emulated kernels, threads in reverse order"
  GTL_CUDA_EMU_REVERSE=1 "$PYTHON" tests/cuda/emu_check.py | tail -1
  if [ "${GTL_CUDA_EMU_SUITE:-0}" = 1 ]; then
    for sms in 132 1; do
      echo "== shared suite on backend emu (GTL_CUDA_EMU_SMS=$sms)"
      GTL_CUDA_EMU_SMS=$sms GTL_TEST_BACKENDS=emu "$PYTHON" -m pytest tests -p emu_backend -q -k emu
    done
  elif [ "${GTL_CUDA_EMU_SUITE:-0}" = ops ]; then
    echo "== the ops' shared tests on backend emu (H100 launch plan)"
    GTL_CUDA_EMU_SMS=132 GTL_TEST_BACKENDS=emu "$PYTHON" -m pytest -p emu_backend -q -k emu tests/test_sample.py \
      tests/test_masked_transition.py tests/test_topk_log_softmax.py tests/test_confidence.py \
      tests/test_guided_log_softmax.py tests/test_power.py
  fi
else
  echo "cuda_host_check: $PYTHON cannot import torch: emulated-kernel checks skipped"
fi

if [ "${GTL_CUDA_GLUE_CHECK:-0}" = 1 ]; then
  echo "== torch glue syntax check"
  stubs="$out/stubs"
  mkdir -p "$stubs/c10/cuda/impl"
  printf '#pragma once\n' >"$stubs/c10/cuda/impl/cuda_cmake_macros.h"
  cat >"$stubs/cublas_v2.h" <<'EOF'
#pragma once
typedef struct cublasContext* cublasHandle_t;
typedef int cublasStatus_t;
#define CUBLAS_STATUS_SUCCESS 0
EOF
  printf '#pragma once\ntypedef struct cublasLtContext* cublasLtHandle_t;\n' >"$stubs/cublasLt.h"
  cat >"$stubs/cusparse.h" <<'EOF'
#pragma once
typedef struct cusparseContext* cusparseHandle_t;
typedef int cusparseStatus_t;
#define CUSPARSE_STATUS_SUCCESS 0
inline const char* cusparseGetErrorString(cusparseStatus_t) { return ""; }
EOF
  printf '#pragma once\ntypedef struct cusolverDnContext* cusolverDnHandle_t;\n' >"$stubs/cusolverDn.h"
  cat >"$stubs/cusolver_common.h" <<'EOF'
#pragma once
typedef int cusolverStatus_t;
#define CUSOLVER_STATUS_SUCCESS 0
#define CUSOLVER_STATUS_INVALID_VALUE 3
#define CUSOLVER_VERSION 11700
EOF
  cuda_home="${CUDA_HOME:-/usr/local/cuda}"
  torch_inc=$("$PYTHON" -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
  py_inc=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  for src in csrc/cuda/*.cpp; do  # each alone, as the build compiles it: every file must include what it uses
    # shellcheck disable=SC2086
    "$CXX" -std=c++20 -fsyntax-only -DTORCH_EXTENSION_NAME=_C_cuda -DTORCH_API_INCLUDE_EXTENSION_H $torch_inc \
      -I"$py_inc" -I"$stubs" -I"$cuda_home/include" -Icsrc/include "$src"
    echo "glue: $src parses"
  done
  echo "glue: csrc/cuda/*.cpp parse against torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
fi
echo "cuda_host_check: all checks passed"
