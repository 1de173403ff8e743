"""Regression tests for what the property-based tests (tests/test_fuzz.py) found.

A finding in a kernel that is not fixed yet is an ``xfail(strict=True)`` test here, with the minimal reproducer: it
starts to pass (and so fails, being strict) the moment the kernel is fixed, and is then turned into a plain test. The
fuzz checks skip exactly the inputs of a known finding (``KNOWN_FINDINGS``) and count them, so the rest of the case
still runs; docs/RELIABILITY.md lists the findings.
"""

import math
import os

import pytest
import torch

import gtl_kernels


def _cpu_available():
    return gtl_kernels.available_backends()["cpu"].available


@pytest.mark.skipif(not _cpu_available(), reason="the cpu backend is not built")
@pytest.mark.xfail(strict=True, reason="cpu backend: confidence(kind='margin') of a row with a single allowed token at "
                   "temperature inf is NaN; the reference (p1 = 1, p2 = 0) gives 1")
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


@pytest.mark.parametrize("backend", [
    pytest.param("cpu", marks=pytest.mark.skipif(not _cpu_available(), reason="the cpu backend is not built")),
    pytest.param("triton", marks=[
        pytest.mark.skipif(not _triton_available(), reason="triton cannot run here"),
        pytest.mark.xfail(strict=True, reason="triton backend: guided_log_softmax and topk_log_softmax write "
                          "s - (m + log S) in fp32, so the log-normalizer is lost below ulp(m) of the row maximum m: "
                          "with m = 1e10 the -ln 3 of three tied tokens comes out as 0 (1e5: -1.1016)"),
    ]),
])
def test_log_probabilities_of_rows_with_a_large_maximum(backend):
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    logits = torch.tensor([LARGE_MAX_ROW], device=device)
    expected = torch.full((3,), -math.log(3.0), dtype=torch.float64)
    logp = gtl_kernels.guided_log_softmax(logits, backend=backend)[0, [1, 4, 7]].double().cpu()
    top = gtl_kernels.topk_log_softmax(logits, 3, backend=backend)[0][0].double().cpu()
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(top, expected, atol=1e-5, rtol=0)


@pytest.mark.skipif(not _triton_available(), reason="triton cannot run here")
@pytest.mark.xfail(strict=True, reason="triton backend: topk_log_softmax of an invalid row at temperature 0 writes -1 "
                   "to the first id only; the other k - 1 ids are never written (uninitialized memory)")
def test_triton_topk_ids_of_an_invalid_greedy_row():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits = torch.full((1, 64), -math.inf, device=device)
    values, ids = gtl_kernels.topk_log_softmax(logits, 20, temperature=0.0, backend="triton")
    assert (ids == -1).all(), ids.tolist()
    assert values.isnan().all()


def known_finding_atol(backend_name: str, op: str, row_max: torch.Tensor) -> torch.Tensor | float:
    """Extra absolute tolerance (float ``[N]``, or 0.0) for the rows of a known, unfixed precision finding above:
    triton's log-probabilities are off by up to one fp32 ulp of the row maximum ``row_max`` (float64 ``[N]``, the
    largest finite |score|)."""
    if backend_name == "triton" and op in ("guided_log_softmax", "topk_log_softmax"):
        return 2.0**-22 * row_max
    return 0.0


def known_finding(backend_name: str, op: str, allowed: torch.Tensor, temperature: torch.Tensor,
                  kind: str = "", invalid: torch.Tensor | None = None) -> torch.Tensor:
    """Rows (bool ``[N]``) whose inputs hit a finding above that is not fixed yet: the fuzz checks leave them out.

    ``allowed``: int ``[N]`` count of tokens with a score above -inf; ``temperature``: float32 ``[N]``; ``invalid``:
    bool ``[N]`` rows the reference marks invalid."""
    skip = torch.zeros(temperature.shape, dtype=torch.bool)
    if backend_name == "triton" and op == "topk_log_softmax" and invalid is not None:
        skip |= invalid & (temperature == 0)
    if backend_name == "cpu" and op == "confidence" and kind == "margin":
        skip |= (temperature == math.inf) & (allowed == 1)
    return skip
