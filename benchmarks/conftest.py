"""pytest-benchmark harness for ``benchmarks/bench_<op>.py`` (KERNEL_SPEC §8).

Each ``bench_<op>.py`` names its op (``OP``) and has one test taking the ``bench_item`` fixture; this file
parametrizes it over the case set (shape x dtype x bias, x kind for ``confidence``) x implementation (every
available backend of the device and the baselines of ``gtl_kernels.bench.baselines``), puts every implementation of
a case in one ``benchmark.group`` so they line up in one table, checks the output once before timing, and records
bytes, GB/s and the ratios to ``torch.argmax`` (and to the reference, the PyTorch way and its ``torch.compile``,
when measured earlier in the same session) in ``benchmark.extra_info``.

Case set: ``--gtl-set default|quick|smoke`` (or ``GTL_BENCH_SET``); by default ``smoke`` (tiny shapes, seconds)
when ``--benchmark-disable`` is given, as in CI, and the device's ``default`` set (the issues' shapes) otherwise.
Device: ``--gtl-device`` / ``GTL_BENCH_DEVICE`` (default cuda if available). ``--gtl-backends`` and
``--gtl-baselines`` (comma lists) narrow the implementations; ``torch.compile`` is timed only in the ``default`` set
unless named there.

Timing: CPU wall clock by pytest-benchmark (its median goes to ``extra_info``); on CUDA pytest-benchmark times the
call followed by a synchronization, and ``extra_info["time_s"]`` is the ``triton.testing.do_bench`` median. The
smoke set runs torch on one CPU thread (it only proves that the benchmarks run).
"""

from __future__ import annotations

import os

import pytest
import torch

from gtl_kernels.bench import cases as cs
from gtl_kernels.bench import runner
from gtl_kernels.bench.timing import measure, synchronize, time_once

MIN_TIME = {"cpu": 0.5, "cuda": 0.1}  # seconds of timed rounds per implementation
MAX_ROUNDS = 25


def pytest_addoption(parser):
    group = parser.getgroup("gtl-bench", "gtl_kernels benchmarks")
    group.addoption("--gtl-set", choices=("default", "quick", "smoke"), default=None,
                    help="case set (default: smoke with --benchmark-disable, else default)")
    group.addoption("--gtl-device", default=None, help="cpu or cuda (default: cuda if available)")
    group.addoption("--gtl-backends", default=None, help="comma list of backends (default: all available)")
    group.addoption("--gtl-baselines", default=None, help="comma list of baselines (default: all that apply)")


def pytest_configure(config):
    # The smoke set only proves the benchmarks run. One thread keeps its many tiny ops from stalling at OpenMP
    # barriers when other jobs share the CPU (seconds per call instead of milliseconds).
    if _case_set_name(config) == "smoke" and _device(config).type == "cpu":
        torch.set_num_threads(1)


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` as test modules (pytest's own pattern is ``test_*.py``); files named on the command
    line are collected by pytest itself."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _opt(config, name: str, env: str):
    return config.getoption(name) or os.environ.get(env) or None


def _device(config) -> torch.device:
    text = _opt(config, "--gtl-device", "GTL_BENCH_DEVICE")
    return torch.device(text) if text else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _case_set_name(config) -> str:
    name = _opt(config, "--gtl-set", "GTL_BENCH_SET")
    if name:
        return name
    return "smoke" if config.getoption("benchmark_disable", default=False) else "default"


def _run_config(config) -> runner.RunConfig:
    device = _device(config)
    wanted = _opt(config, "--gtl-backends", "GTL_BENCH_BACKENDS")
    backends, _ = runner.select_backends(wanted.split(",") if wanted else None, device)
    names = _opt(config, "--gtl-baselines", "GTL_BENCH_BASELINES")
    if names:
        baselines = names.split(",")
    else:  # torch.compile costs tens of seconds per variant on the CPU: only in the full set
        full = _case_set_name(config) == "default"
        baselines = [b for b in runner.BASELINE_ORDER if full or b != "compile"]
    return runner.RunConfig(device=device, cases=[], backends=backends, baselines=baselines,
                            min_time=MIN_TIME.get(device.type, 0.5), progress=False)


def pytest_generate_tests(metafunc):
    if "bench_item" not in metafunc.fixturenames:
        return
    op = metafunc.module.OP
    config = _run_config(metafunc.config)
    cset = cs.preset(_case_set_name(metafunc.config), config.device.type)
    cset.ops = (op,)
    if op == "confidence" and _case_set_name(metafunc.config) != "default":
        cset.kinds = cs.CONFIDENCE_KINDS  # every kind is cheap at small shapes
    items = [(case, impl) for case in cset.cases() for impl in runner.impls_for(case, config)]
    metafunc.parametrize("bench_item", items, ids=[f"{c.test_id}-{i.name}" for c, i in items])


class BenchSession:
    """Inputs, reference outputs and measured times shared by the tests of a session.

    Inputs of one (N, V, dtype) are kept until a case of another shape needs new ones (tests of a module run in
    parametrization order, which keeps the cases of one shape together).
    """

    def __init__(self, config):
        self.config = _run_config(config)
        self.device = self.config.device
        self._key = None
        self._logits = self._bias = None
        self._refs: dict[cs.Case, runner.Reference] = {}
        self.times: dict[str, dict[str, float]] = {}  # case label -> impl -> seconds

    def inputs(self, case: cs.Case) -> cs.Inputs:
        key = (case.n, case.v, case.dtype)
        if key != self._key:
            self._logits = self._bias = None
            self._refs.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._logits = cs.random_matrix(case.n, case.v, case.torch_dtype, self.device, self.config.seed)
            self._key = key
        if case.bias and self._bias is None:
            self._bias = cs.random_matrix(case.n, case.v, case.torch_dtype, self.device, self.config.seed + 1, 1.0)
        inp = cs.make_inputs(case.n, case.v, case.dtype, self.device, bias=False, seed=self.config.seed,
                             logits=self._logits)
        inp.bias = self._bias if case.bias else None
        return inp

    def reference(self, case: cs.Case, inp: cs.Inputs) -> runner.Reference:
        if case not in self._refs:
            self._refs[case] = runner.Reference(case, inp)
        return self._refs[case]

    def run(self, benchmark, case: cs.Case, impl: runner.Impl) -> None:
        """Check ``impl`` on ``case`` once, then time it with ``benchmark``; numbers into ``extra_info``."""
        benchmark.group = case.label
        benchmark.extra_info.update({"op": case.op, "n": case.n, "v": case.v, "dtype": case.dtype,
                                     "bias": case.bias, "variant": case.variant, "impl": impl.name,
                                     "device": str(self.device), "bytes": case.bytes_moved()})
        with torch.inference_mode():
            inp = self.inputs(case)
            rec, fn, first_s = runner.prepare_impl(impl, case, inp, self.reference(case, inp), self.config)
            if rec["status"] == "skipped":
                pytest.skip(rec["reason"])
            if rec["status"] != "ok":
                pytest.fail(f"{impl.name} on {case.label}: {rec['status']}: {rec['reason']}")
            benchmark.extra_info["check"] = rec.get("check")
            self._time(benchmark, case, impl, fn, first_s, inp.logits.numel() * inp.logits.element_size())

    def _time(self, benchmark, case, impl, fn, first_s, logits_bytes) -> None:
        device = self.device
        # The checked call may have compiled or JIT-built kernels: time one more before choosing the rounds.
        if (impl.warm_call or device.type == "cuda") and not benchmark.disabled:
            first_s = time_once(fn, device)[1]
        rounds = max(1, min(MAX_ROUNDS, int(self.config.min_time / max(first_s, 1e-9))))
        if device.type == "cuda":
            rounds = max(rounds, 5)

        def call():
            out = fn()
            synchronize(device)
            return out

        warmup = 1 if first_s < self.config.slow_s else 0  # a multi-second call needs no warm-up
        benchmark.pedantic(call, rounds=rounds, warmup_rounds=warmup, iterations=1)
        if benchmark.disabled:
            return
        if device.type == "cuda":
            t = measure(fn, device, min_time=self.config.min_time)
            t_s, method = t.median_s, t.method
        else:
            t_s, method = benchmark.stats.stats.median, "wall (pytest-benchmark)"
        times = self.times.setdefault(case.label, {})
        times[impl.name] = t_s
        benchmark.extra_info.update({"time_s": t_s, "method": method})
        benchmark.extra_info.update(runner.derived(case, impl.name, t_s, times, logits_bytes))


@pytest.fixture(scope="session")
def bench_session(request) -> BenchSession:
    return BenchSession(request.config)


@pytest.fixture
def bench_item(request):
    """``(case, implementation)`` of this test (parametrized by :func:`pytest_generate_tests`)."""
    return request.param
