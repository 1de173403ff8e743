"""The self-check of ``auto`` (KERNEL_SPEC §5, backends.py), tested on the CPU by injecting backends.

An injected backend registers every op under its own suffix (``gtl::<op>_faulty`` ...) and claims the CPU with a
priority above the real ones, so ``auto`` would pick it; it is marked ``self_check=True`` like ``cuda`` and ``triton``.
"""

import math
import warnings

import pytest
import torch
from fuzz_checks import race_gaps

import gtl_kernels
from gtl_kernels import _library, backends, reference, self_check

CALLS: dict[str, int] = {}


def _counting(suffix, op, impl):
    def wrapped(*args):
        CALLS[suffix] = CALLS.get(suffix, 0) + 1
        return impl(*args)

    return wrapped


def _sample_ignoring_bias(logits, bias, gamma, temperature, top_k, seeds, offset, index=None):
    """A plausible kernel bug: the guidance term is dropped."""
    return reference.sample(logits, None, gamma, temperature, top_k, seeds, offset, index)


def _crashing_topk(*args):
    raise RuntimeError("illegal memory access (injected)")


IMPLS = {
    "correct": {},
    "faulty": {"sample": _sample_ignoring_bias},
    "crashing": {"topk_log_softmax": _crashing_topk},
}


@pytest.fixture(scope="module")
def injected():
    """Define ``gtl::<op>_<name>`` for every injected backend (removed again afterwards)."""
    lib = torch.library.Library("gtl", "FRAGMENT")
    for name, overrides in IMPLS.items():
        for op, schema in _library.SCHEMAS.items():
            impl = overrides.get(op, _library._REFERENCE_IMPLS[op])
            lib.define(f"{op}_{name}{schema}")
            lib.impl(f"{op}_{name}", _counting(name, op, impl), "CompositeExplicitAutograd")
    yield
    lib._destroy()


@pytest.fixture
def register(injected, monkeypatch):
    """Register an injected backend for one test (the measured table is bypassed: priorities decide)."""
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.delenv(backends.SELF_CHECK_ENV_VAR, raising=False)
    monkeypatch.setattr(backends, "_auto_choices", lambda: {})
    names = []

    def add(name, self_check=True):
        backends.register_backend(name, priority=100, device_types=("cpu",), module="gtl_kernels._library",
                                  op_suffix=f"_{name}", self_check=self_check)
        names.append(name)
        CALLS.clear()

    yield add
    for name in names:
        backends.unregister_backend(name)


def _inputs():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 300, generator=g)
    bias = torch.randn(8, 300, generator=g) * 3
    return logits, bias


def test_a_correct_self_checked_backend_is_used_without_warning(register):
    register("correct")
    logits, bias = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gtl_kernels.sample(logits, bias, seeds=1)
    assert torch.equal(out, gtl_kernels.sample(logits, bias, seeds=1, backend="torch"))
    calls_after_check = CALLS["correct"]
    assert calls_after_check > len(self_check.calls(self_check.fixed_inputs("cpu")))  # the check ran, then the call
    assert backends._SELF_CHECK_VERDICTS[("correct", "cpu")] is None


def test_a_faulty_backend_falls_back_with_one_warning(register):
    register("faulty")
    logits, bias = _inputs()
    with pytest.warns(RuntimeWarning, match=r"'faulty' failed its self-check on cpu \(sample: .* values differ"):
        out = gtl_kernels.sample(logits, bias, seeds=1)
    expected = gtl_kernels.sample(logits, bias, seeds=1, backend="torch")
    assert torch.equal(out, expected)  # the next backend ran the call
    assert not torch.equal(gtl_kernels.sample(logits, bias, seeds=1, backend="faulty"), expected)  # the fault is real
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cached per process and device: no second check, no second warning
        calls = CALLS.get("faulty", 0)
        assert torch.equal(gtl_kernels.sample(logits, bias, seeds=1), expected)
        gtl_kernels.guided_log_softmax(logits, bias)  # other ops fall back too: the backend as a whole failed
        assert CALLS.get("faulty", 0) == calls


def test_a_crashing_backend_falls_back(register):
    register("crashing")
    logits, _ = _inputs()
    with pytest.warns(RuntimeWarning, match=r"topk_log_softmax: raised RuntimeError: illegal memory access"):
        values, ids = gtl_kernels.topk_log_softmax(logits, 5)
    assert torch.equal(ids, gtl_kernels.topk_log_softmax(logits, 5, backend="torch")[1])


def test_disabled_by_the_environment(register, monkeypatch):
    monkeypatch.setenv(backends.SELF_CHECK_ENV_VAR, "0")
    register("faulty")
    logits, bias = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gtl_kernels.sample(logits, bias, seeds=1)
    assert torch.equal(out, gtl_kernels.sample(logits, bias, seeds=1, backend="faulty"))  # used, unchecked
    assert ("faulty", "cpu") not in backends._SELF_CHECK_VERDICTS


def test_an_explicit_backend_is_not_checked(register):
    register("faulty")
    logits, bias = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gtl_kernels.sample(logits, bias, seeds=1, backend="faulty")
    assert ("faulty", "cpu") not in backends._SELF_CHECK_VERDICTS


def test_backends_without_the_flag_are_not_checked(register):
    register("faulty", self_check=False)
    logits, bias = _inputs()
    out = gtl_kernels.sample(logits, bias, seeds=1)
    assert torch.equal(out, gtl_kernels.sample(logits, bias, seeds=1, backend="faulty"))


def test_the_gpu_backends_are_self_checked():
    assert backends._REGISTRY["cuda"].self_check and backends._REGISTRY["triton"].self_check
    assert not backends._REGISTRY["cpu"].self_check and not backends._REGISTRY["torch"].self_check


def test_every_available_backend_passes(backend):
    """The real backends pass their own self-check (on the GPU machine: cuda and triton on the device)."""
    assert self_check.run(backends._REGISTRY[backend.name].op, backend.device) is None


def test_the_fixed_input_covers_every_op_and_has_no_near_ties():
    x = self_check.fixed_inputs("cpu")
    assert {op for op, _ in self_check.calls(x).values()} == set(_library.OPS)
    z = reference.guided_scores(x["logits"], x["bias"], x["gamma"])
    z_masked = z.index_fill(1, torch.tensor([self_check.MASK_ID]), -math.inf)
    for scores, top_k in ((z, 0), (z, self_check.K), (z_masked, self_check.K)):
        s, _ = reference._tempered(scores, x["temperature"], greedy_limit=False)
        s = reference._plus_inf_restriction(reference._top_k_restriction(s, top_k))
        random_rows = x["temperature"] > 0
        assert (race_gaps(s, x["seeds"], x["offset"])[random_rows] > self_check.MIN_RACE_GAP).all()
    greedy = z[x["temperature"] == 0].topk(2, -1).values
    assert ((greedy[:, 0] - greedy[:, 1]) > self_check.MIN_RACE_GAP).all()
