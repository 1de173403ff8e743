"""``confidence``: max_prob, margin and neg_entropy against float64 PyTorch."""

import math

import pytest
import torch
from helpers import random_logits
from test_guided_log_softmax import _oracle

import gtl_kernels

KINDS = ["max_prob", "margin", "neg_entropy"]


def _expected(logp, kind):
    p = logp.exp()
    if kind == "max_prob":
        return p.max(-1).values
    if kind == "margin":
        top = p.topk(min(2, p.shape[-1]), dim=-1).values
        return top[:, 0] - (top[:, 1] if p.shape[-1] > 1 else 0)
    return torch.where(p > 0, p * logp, 0.0).sum(-1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_float64(backend, kind, dtype):
    n, v = (4, 4000) if backend.interpreted else (50, 50257)
    logits = random_logits(n, v, dtype, backend.device, scale=4.0, seed=1)
    logits[0, 123] = 40.0  # a near one-hot row
    bias = random_logits(n, v, torch.float32, backend.device, scale=1.0, seed=2)
    argmax, score = gtl_kernels.confidence(logits, bias, gamma=0.3, temperature=0.9, kind=kind, backend=backend.name)
    logp = _oracle(logits, bias, 0.3, 0.9)
    assert argmax.dtype == torch.int64 and score.dtype == torch.float32
    assert torch.equal(argmax, logp.argmax(-1))
    torch.testing.assert_close(score.double(), _expected(logp, kind), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_special_rows(backend, kind):
    logits = random_logits(5, 1500, torch.float32, backend.device, seed=3)
    logits[0] = -math.inf
    logits[1, 4] = math.nan
    logits[2, [30, 1400]] = math.inf  # two +inf tokens: p = 1/2 each
    logits[3] = 0.0  # uniform: every id ties, the argmax is 0
    argmax, score = gtl_kernels.confidence(logits, kind=kind, backend=backend.name)
    assert argmax[:2].tolist() == [-1, -1] and score[:2].isnan().all()
    assert argmax[2] == 30 and argmax[3] == 0
    expected_2 = {"max_prob": 0.5, "margin": 0.0, "neg_entropy": -math.log(2)}[kind]
    expected_3 = {"max_prob": 1 / 1500, "margin": 0.0, "neg_entropy": -math.log(1500)}[kind]
    assert score[2].item() == pytest.approx(expected_2, abs=1e-6)
    assert score[3].item() == pytest.approx(expected_3, abs=2e-6, rel=1e-5)


def test_single_token_and_zero_temperature(backend):
    logits = random_logits(3, 1, torch.float32, backend.device, seed=4)
    for kind, expected in [("max_prob", 1.0), ("margin", 1.0), ("neg_entropy", 0.0)]:
        argmax, score = gtl_kernels.confidence(logits, kind=kind, backend=backend.name)
        assert (argmax == 0).all() and torch.allclose(score, torch.full_like(score, expected))
    logits = random_logits(3, 50, torch.float32, backend.device, seed=5)
    argmax, score = gtl_kernels.confidence(logits, temperature=0.0, kind="margin", backend=backend.name)
    assert torch.equal(argmax, logits.argmax(-1)) and (score == 1.0).all()
