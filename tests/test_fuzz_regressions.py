"""Regression tests for what the property-based tests (tests/test_fuzz.py) found.

A finding in a kernel that is not fixed yet is an ``xfail(strict=True)`` test here, with the minimal reproducer: it
starts to pass (and so fails, being strict) the moment the kernel is fixed, and is then turned into a plain test. The
fuzz checks skip exactly the inputs of an open finding (``known_finding``, ``known_finding_atol``) and count them, so
the rest of the case still runs; docs/RELIABILITY.md lists the findings. The five findings below are fixed.
"""

import math
import os

import pytest
import torch

import gtl_kernels


def _cpu_available():
    return gtl_kernels.available_backends()["cpu"].available


# Finding 1 (fixed): the cpu backend's margin took p2 from d2 = (-inf - max) / T, which is -inf / inf = NaN at T = inf
# when no second token is allowed.
@pytest.mark.skipif(not _cpu_available(), reason="the cpu backend is not built")
@pytest.mark.parametrize("row", [[0.25], [1e-30, -math.inf], [-math.inf, 3.0, -math.inf]])
def test_cpu_margin_single_allowed_token_infinite_temperature(row):
    logits = torch.tensor([row])
    assert gtl_kernels.confidence(logits, temperature=math.inf, kind="margin", backend="torch")[1].item() == 1.0
    _, score = gtl_kernels.confidence(logits, temperature=math.inf, kind="margin", backend="cpu")
    assert score.item() == 1.0


def _triton_available():
    return gtl_kernels.available_backends()["triton"].available and (
        torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")


LARGE_MAX_ROW = [0.5, 1e10, 0.0, 0.0, 1e10, 0.0, 0.0, 1e10]  # three tokens tie at a large score: log p = -ln 3


# Finding 2 (fixed): triton wrote s - (m + log S) in fp32, losing log S below ulp(m) of the row maximum m (with
# m = 1e10 the -ln 3 of three tied tokens came out as 0, at 1e5 as -1.1016); it now writes (s - m) - log S.
@pytest.mark.parametrize("backend", [
    pytest.param("cpu", marks=pytest.mark.skipif(not _cpu_available(), reason="the cpu backend is not built")),
    pytest.param("triton", marks=pytest.mark.skipif(not _triton_available(), reason="triton cannot run here")),
])
@pytest.mark.parametrize("scale,temperature", [(1.0, 1.0), (1e-5, 1.0), (1.0, 0.5), (1e5, 1e5)])
def test_log_probabilities_of_rows_with_a_large_maximum(backend, scale, temperature):
    # scale 1e-5 puts the maximum at 1e5; (1e5, T = 1e5) the tempered maximum at 1e10 from a maximum of 1e15
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    logits = torch.tensor([LARGE_MAX_ROW], device=device) * scale
    expected = torch.full((3,), -math.log(3.0), dtype=torch.float64)
    logp = gtl_kernels.guided_log_softmax(logits, temperature=temperature, backend=backend)[0, [1, 4, 7]]
    top = gtl_kernels.topk_log_softmax(logits, 3, temperature=temperature, backend=backend)[0][0]
    logp, top = logp.double().cpu(), top.double().cpu()
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(top, expected, atol=1e-5, rtol=0)


# Finding 4 (fixed): the cuda backend scaled score differences by max(log2(e) / T, 1e-30), so at T = +inf two finite
# scores 1e30 apart weighed 1 : 2^-1 instead of equally (found on an H200, 2026-12-04; the host emulator runs the same
# code, so it runs this test too). Every backend: each finite token of a T = +inf row has probability 1 / (allowed).
@pytest.mark.parametrize("row", [[1.5e-30, 1e30], [1e30, -math.inf, -1e30, 0.5]])
def test_infinite_temperature_weighs_finite_tokens_equally(backend, row):
    logits = torch.tensor([row], device=backend.device)
    finite = torch.tensor(row).isfinite()
    want = torch.where(finite, -math.log(int(finite.sum())), -math.inf).double()
    got = gtl_kernels.guided_log_softmax(logits, temperature=math.inf, backend=backend.name)[0].double().cpu()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    _, p_max = gtl_kernels.confidence(logits, temperature=math.inf, kind="max_prob", backend=backend.name)
    assert abs(p_max.item() - 1 / int(finite.sum())) < 1e-6


# Finding 5 (fixed, GPU only): test_log_probabilities_of_rows_with_a_large_maximum at scale 1e5, T = 1e5 failed for
# triton on an H200 (inf): the compiler fused z * (1 / T) - m into one multiply-add in one pass and rounded the
# product in another; the Triton kernels now launch with fp fusion off (gtl_kernels.triton._common.NO_FMA).


# Finding 3 (fixed): triton's topk_log_softmax wrote only the point set's places (the first one at T = 0, the +inf
# tokens' otherwise) of an invalid row; the other ids were never written.
@pytest.mark.skipif(not _triton_available(), reason="triton cannot run here")
@pytest.mark.parametrize("row,temperature", [
    ([-math.inf] * 64, 0.0),                    # all -inf, greedy
    ([1.0, math.nan] + [0.0] * 62, 0.0),        # NaN, greedy
    ([math.inf, math.nan] + [0.0] * 62, 1.0),   # NaN beside a +inf token (point-set row)
])
def test_triton_topk_of_invalid_point_set_rows(row, temperature):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits = torch.tensor([row], device=device)
    values, ids = gtl_kernels.topk_log_softmax(logits, 20, temperature=temperature, backend="triton")
    assert (ids == -1).all(), ids.tolist()
    assert values.isnan().all()


def known_finding_atol(backend_name: str, op: str, row_max: torch.Tensor) -> torch.Tensor | float:
    """Extra absolute tolerance (float ``[N]``, or 0.0) for the rows of an open precision finding, given the row
    maximum ``row_max`` (float64 ``[N]``, the largest finite |score|). No finding is open: always 0.0."""
    return 0.0


def known_finding(backend_name: str, op: str, allowed: torch.Tensor, temperature: torch.Tensor,
                  kind: str = "", invalid: torch.Tensor | None = None) -> torch.Tensor:
    """Rows (bool ``[N]``) whose inputs hit an open finding: the fuzz checks leave them out and count them.

    ``allowed``: int ``[N]`` count of tokens with a score above -inf (or None); ``temperature``: float32 ``[N]``;
    ``invalid``: bool ``[N]`` rows the reference marks invalid. No finding is open: no row is left out."""
    return torch.zeros(temperature.shape, dtype=torch.bool)
