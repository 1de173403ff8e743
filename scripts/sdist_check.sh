#!/usr/bin/env bash
# The source distribution as a new user gets it: build the sdist and, from it, the wheel (python -m build
# --no-isolation, against the torch already installed), check that the sdist holds every tracked file under csrc/,
# install the wheel into a fresh venv and use it from outside the source tree (import, version, the cpu backend
# built, one draw equal to the reference's). About 1-2 minutes on 2 cores, most of it the C++ compile.
#
#   scripts/sdist_check.sh            # with PYTHON=.venv/bin/python (default: python3 on PATH)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac  # a relative path must survive the cd below
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"  # never the source tree: its build/ folder would shadow the `build` package

# 1. sdist, then the wheel built from the unpacked sdist (a missing header fails here). CPU extension only: the
#    CUDA sources are checked for presence below, and compiled by scripts/nvcc_check.sh.
GTL_KERNELS_BUILD=cpu MAX_JOBS=${MAX_JOBS:-2} "$PY" -m build --no-isolation --outdir "$WORK/dist" "$ROOT" \
  >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; echo "sdist_check: python -m build failed"; exit 1; }
SDIST=$(ls "$WORK"/dist/*.tar.gz)
WHEEL=$(ls "$WORK"/dist/*.whl)
echo "sdist_check: built $(basename "$SDIST") and $(basename "$WHEEL")"

# 2. every source file the build could read is in the sdist (the CUDA ones too, which this build did not compile)
tar -tzf "$SDIST" | sed 's|^[^/]*/||' >"$WORK/sdist_files"
missing=$(cd "$ROOT" && git ls-files csrc | grep -vxFf "$WORK/sdist_files" || true)
if [ -n "$missing" ]; then echo "sdist_check: missing from the sdist:"; echo "$missing"; exit 1; fi

# 3. a fresh venv that sees the build environment's packages (torch and its dependencies, numpy, tqdm, matplotlib)
#    through .pth path entries: they are appended after the venv's own site-packages, and .pth files in them are not
#    processed, so an editable install of the source tree there is not picked up.
"$PY" -m venv "$WORK/venv"
SITE=$("$WORK/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PY" -c "import sys; print('\n'.join(p for p in sys.path if p.endswith('-packages')))" >"$SITE/build_env.pth"
# --no-deps: the build environment need not satisfy every pin of torch's own metadata; the runtime dependencies
# are imported by the smoke test instead.
"$WORK/venv/bin/python" -m pip install -q --no-index --no-deps --disable-pip-version-check "$WHEEL"

# 4. smoke test from outside the source tree
WANT=$("$PY" -c "import tomllib; print(tomllib.load(open('$ROOT/pyproject.toml', 'rb'))['project']['version'])")
"$WORK/venv/bin/python" - "$WORK/venv" "$WANT" <<'PY'
import sys

import matplotlib  # noqa: F401  (the runtime dependencies of pyproject.toml)
import numpy  # noqa: F401
import torch
import tqdm  # noqa: F401

import gtl_kernels

venv, want = sys.argv[1], sys.argv[2]
assert gtl_kernels.__file__.startswith(venv), f"imported from {gtl_kernels.__file__}, not the installed wheel"
assert gtl_kernels.__version__ == want, (gtl_kernels.__version__, want)
info = gtl_kernels.available_backends()["cpu"]
assert info.available, f"cpu backend not built: {info.reason}"
logits = torch.randn(16, 3000, generator=torch.Generator().manual_seed(1)) * 3
got = gtl_kernels.sample(logits, seeds=torch.arange(16), backend="cpu")
ref = gtl_kernels.sample(logits, seeds=torch.arange(16), backend="torch")
assert torch.equal(got, ref), (got, ref)
print(f"sdist_check: ok, gtl_kernels {gtl_kernels.__version__} from {gtl_kernels.__file__}; cpu backend: {info.reason}")
PY
