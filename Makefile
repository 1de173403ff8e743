# make test   set up .venv (if needed), build the package, run the test suite
# make demo   set up, build, run the main job (a kernel demo, then the GTL Markov-chain experiment, 3 seeds)
# make bench  set up, build, run the benchmarks (pytest-benchmark) and the gtl-bench table
# Idempotent: the venv, the dependencies and the build are redone only when their inputs change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export MAX_JOBS ?= 2
export CUDA_HOME ?= /usr/local/cuda
# Pinned: torch only when none is importable (a CUDA build already present is kept); Triton as on the GPU machines,
# and numpy below 2.4, which the Triton interpreter needs.
TORCH_PIN := torch==2.13.0
# The runtime dependencies, the test and bench extras (scipy, pytest, pytest-benchmark, hypothesis), the build
# tools, and `build` for scripts/sdist_check.sh.
DEPS := triton==3.6.0 "numpy<2.4" scipy tqdm matplotlib pytest pytest-benchmark hypothesis pybind11 ninja \
	"setuptools>=64" wheel build
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cpp csrc/cuda/*.h csrc/include/gtl/*)

.PHONY: setup test test-fast test-slow fuzz demo bench bench-smoke perf-doc nvcc-check triton-aot-check triton-aot-doc \
	clean

$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(VENV)/.deps: Makefile | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q $(DEPS)
	touch $@

$(VENV)/.build: $(VENV)/.deps $(SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

setup: $(VENV)/.build

test: setup
	$(PY) -m pytest tests -q --durations=15

test-fast: setup
	$(PY) -m pytest tests -q -m "not slow"

# only the slow tests (deep tail, N * V >= 2**31 elements: about 5 GB of memory)
test-slow: setup
	$(PY) -m pytest tests -q -m slow

# the deeper, randomized property-based run: FUZZ_EXAMPLES examples per op and backend (the CI run uses a fixed set
# of 400); the counts go to results/fuzz.json, findings to docs/RELIABILITY.md
FUZZ_EXAMPLES ?= 5000
fuzz: setup
	mkdir -p results
	GTL_FUZZ_RANDOM=1 GTL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) GTL_FUZZ_INTERPRETED_EXAMPLES=40 \
		GTL_FUZZ_REPORT=results/fuzz.json $(PY) -m pytest tests/test_fuzz.py tests/test_fuzz_regressions.py -q

# the kernels on a small guided distribution, then the GTL Markov-chain experiment (the default run: 3 seeds,
# about 5-7 minutes on 2 cores; `.venv/bin/gtl-markov --quick` is a 30-second smoke run)
demo: setup
	$(PY) -m gtl_kernels.demo
	$(VENV)/bin/gtl-markov --out results/markov

bench: setup
	mkdir -p results
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-json=results/pytest-benchmark.json
	$(VENV)/bin/gtl-bench --json results/bench.json --png results/bench.png
	$(VENV)/bin/gtl-bench --compat --json results/compat.json --markdown results/compat.md

# every benchmark once, on tiny shapes, as a test (CI), so the benchmarks cannot rot
bench-smoke: setup
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-disable

# measure on this machine and regenerate its section of docs/PERF.md
perf-doc: setup
	mkdir -p results
	$(VENV)/bin/gtl-bench --json results/bench-cpu.json --png results/bench-cpu.png --markdown docs/PERF.md

nvcc-check:
	scripts/nvcc_check.sh

# a random-weight masked-diffusion LM generating with LLaDA's original sampler and with the drop-in (under a minute)
.PHONY: example
example: setup
	$(PY) examples/diffusion_lm.py

# every Triton kernel configuration the launchers choose, compiled for sm_80 and sm_90 without a GPU (fails on a
# compile error, a spill or too much shared memory); the -doc target also writes the tables into the docs
triton-aot-check: setup
	$(PY) -m gtl_kernels.triton.aot_check

triton-aot-doc: setup
	$(PY) -m gtl_kernels.triton.aot_check --markdown docs/TRITON_BACKEND.md
	$(PY) -m gtl_kernels.triton.sass --cuda --markdown docs/PERF.md

clean:
	rm -rf $(VENV) build *.egg-info gtl_kernels/*.so
