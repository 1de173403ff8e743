"""Regression tests for what the property-based tests (tests/test_fuzz.py) found.

A finding in a kernel that is not fixed yet is an ``xfail(strict=True)`` test here, with the minimal reproducer: it
starts to pass (and so fails, being strict) the moment the kernel is fixed, and is then turned into a plain test. The
fuzz checks skip exactly the inputs of a known finding (``KNOWN_FINDINGS``) and count them, so the rest of the case
still runs; docs/RELIABILITY.md lists the findings.
"""

import math

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


def known_finding(backend_name: str, op: str, allowed: torch.Tensor, temperature: torch.Tensor,
                  kind: str = "") -> torch.Tensor:
    """Rows (bool ``[N]``) whose inputs hit a finding above that is not fixed yet: the fuzz checks leave them out.

    ``allowed``: int ``[N]`` count of tokens with a score above -inf; ``temperature``: float32 ``[N]``."""
    skip = torch.zeros(temperature.shape, dtype=torch.bool)
    if backend_name == "cpu" and op == "confidence" and kind == "margin":
        skip |= (temperature == math.inf) & (allowed == 1)
    return skip
