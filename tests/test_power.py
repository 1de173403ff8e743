"""High-power statistical tests every backend can afford: one two-token row, designed so that the token rate moves
as fast as possible with the parameter under test, so that few draws see a 15% error in gamma or temperature.

Each test asserts its own power: the rate a 15% parameter error would produce lies outside the acceptance interval
by at least 4 standard deviations (a missed detection has probability < 3e-5). False-failure rate: ``ALPHA`` (1e-6)
each, fixed seeds.
"""

import math

import pytest
import torch
from helpers import ALPHA, draw_many
from scipy import stats

import gtl_kernels

ERROR = 0.15  # the parameter error each test must see


def _interval(draws, p):
    return stats.binom.ppf(ALPHA / 2, draws, p), stats.binom.isf(ALPHA / 2, draws, p)


def _assert_power(draws, p_true, p_wrong):
    lo, hi = _interval(draws, p_true)
    margin = 4 * math.sqrt(draws * p_wrong * (1 - p_wrong))
    assert draws * p_wrong < lo - margin or draws * p_wrong > hi + margin, "the test could miss a 15% error"


def _p1(s0, s1):
    return 1 / (1 + math.exp(s0 - s1))


@pytest.mark.parametrize("op", ["sample", "masked_transition"])
def test_gamma_is_applied_exactly(backend, op):
    """logits (0, -8 gamma), bias (0, 8): p(token 1) = 1/2 at the right gamma, 0.77 / 0.23 at a gamma 15% off."""
    gamma, delta = 1.25, 8.0
    draws = 3_000 if backend.interpreted else 20_000
    # token 2 is the mask (masked_transition) and sits at -inf for sample
    logits = torch.tensor([[0.0, -gamma * delta, -math.inf]], device=backend.device)
    bias = torch.tensor([[0.0, delta, 0.0]], device=backend.device)
    p = _p1(0.0, 0.0)
    for f in (1 - ERROR, 1 + ERROR):
        _assert_power(draws, p, _p1(0.0, -gamma * delta + f * gamma * delta))
    if op == "sample":
        tokens = draw_many(backend, logits, draws, bias, gamma=gamma)
    else:
        keys = torch.arange(draws, dtype=torch.int64, device=backend.device) * 7919 + 3
        x_t = torch.full((draws,), 2, dtype=torch.int64, device=backend.device)
        tokens = gtl_kernels.masked_transition(x_t, logits.expand(draws, -1), bias.expand(draws, -1), gamma,
                                               stay_prob=0.0, mask_id=2, seeds=keys, backend=backend.name)
    assert set(tokens.cpu().tolist()) <= {0, 1}
    hits = int((tokens == 1).sum())
    lo, hi = _interval(draws, p)
    assert lo <= hits <= hi, f"{hits} of {draws} draws of token 1, expected [{lo:.0f}, {hi:.0f}]"


def test_temperature_is_applied_exactly(backend):
    """logits (0, 1.5 T): p(token 1) = sigmoid(1.5); a 15% error in T moves it by ~0.03, 6+ sd at 20,000 draws."""
    if backend.interpreted:
        pytest.skip("needs ~20,000 draws: the gamma test is the interpreter's high-power test")
    t, draws = 0.8, 20_000
    logits = torch.tensor([[0.0, 1.5 * t]], device=backend.device)
    p = _p1(0.0, 1.5)
    for f in (1 - ERROR, 1 + ERROR):
        _assert_power(draws, p, _p1(0.0, 1.5 / f))
    tokens = draw_many(backend, logits, draws, temperature=t)
    hits = int((tokens == 1).sum())
    lo, hi = _interval(draws, p)
    assert lo <= hits <= hi, f"{hits} of {draws} draws of token 1, expected [{lo:.0f}, {hi:.0f}]"
