"""``guided_log_softmax`` against float64 PyTorch, special rows, temperatures, strides."""

import math

import pytest
import torch
from helpers import oracle_scores, random_logits

import gtl_kernels

# fp32 accumulation over up to 128k terms: |error| <= ATOL + RTOL * |value| (a few fp32 ulp of the log-sum-exp).
ATOL, RTOL = 3e-5, 2e-6


def _oracle(logits, bias=None, gamma=1.0, temperature=1.0):
    """float64 log-softmax of the reference's guided scores (finite rows, ``T > 0``)."""
    return torch.log_softmax(oracle_scores(logits, bias, gamma, temperature), dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("v", [7, 1000, 30522])
def test_matches_float64(backend, dtype, v):
    n = 4 if backend.interpreted else 33
    logits = random_logits(n, v, dtype, backend.device, scale=4.0, seed=v)
    bias = random_logits(n, v, torch.float32, backend.device, scale=2.0, seed=v + 1)
    gamma = torch.linspace(-1, 2, n, device=backend.device)
    out = gtl_kernels.guided_log_softmax(logits, bias, gamma, 0.7, backend=backend.name)
    assert out.dtype == torch.float32 and out.shape == logits.shape
    torch.testing.assert_close(out.double(), _oracle(logits, bias, gamma, 0.7), atol=ATOL, rtol=RTOL)


def test_3d_and_padded_vocabulary(backend):
    """[B, L, V] input that is a slice of a padded [B, L, V + 64] tensor (row stride > V)."""
    b, l, v = 2, 3, 3000
    padded = random_logits(b * l, v + 64, torch.bfloat16, backend.device, seed=1).view(b, l, v + 64)
    logits = padded[..., :v]
    out = gtl_kernels.guided_log_softmax(logits, backend=backend.name)
    assert out.shape == (b, l, v)
    torch.testing.assert_close(out.double(), _oracle(logits.reshape(-1, v)).view(b, l, v), atol=ATOL, rtol=RTOL)


def test_special_rows(backend):
    logits = random_logits(5, 2000, torch.float32, backend.device, seed=2)
    logits[0] = -math.inf  # invalid: all NaN
    logits[1, 17] = math.nan  # invalid
    logits[2, [5, 1999]] = math.inf  # two +inf tokens share the mass
    logits[3, ::2] = -math.inf  # half the tokens excluded
    out = gtl_kernels.guided_log_softmax(logits, backend=backend.name)
    assert out[0].isnan().all() and out[1].isnan().all()
    expected = torch.full((2000,), -math.inf, dtype=torch.float64)
    expected[[5, 1999]] = math.log(0.5)
    torch.testing.assert_close(out[2].double().cpu(), expected, atol=ATOL, rtol=RTOL)
    assert (out[3, ::2] == -math.inf).all()
    torch.testing.assert_close(out[3].double(), _oracle(logits[3:4])[0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out[4].double(), _oracle(logits[4:5])[0], atol=ATOL, rtol=RTOL)


def test_zero_temperature_is_the_greedy_point_mass(backend):
    logits = random_logits(6, 500, torch.float32, backend.device, seed=3)
    logits[1, [10, 400]] = 100.0  # tie: the lower id gets the mass
    out = gtl_kernels.guided_log_softmax(logits, temperature=0.0, backend=backend.name)
    expected = torch.full_like(out, -math.inf)
    expected.scatter_(1, logits.argmax(-1, keepdim=True), 0.0)
    assert torch.equal(out, expected) and out[1, 10] == 0


def test_zero_gamma_ignores_bias(backend):
    logits = random_logits(3, 300, torch.float32, backend.device, seed=4)
    bias = torch.full_like(logits, math.nan)
    out = gtl_kernels.guided_log_softmax(logits, bias, gamma=0.0, backend=backend.name)
    torch.testing.assert_close(out.double(), _oracle(logits), atol=ATOL, rtol=RTOL)


def test_inputs_not_modified(backend):
    logits = random_logits(4, 100, torch.float16, backend.device, seed=5)
    bias = random_logits(4, 100, torch.float32, backend.device, seed=6)
    before = logits.clone(), bias.clone()
    gtl_kernels.guided_log_softmax(logits, bias, gamma=2.0, temperature=0.5, backend=backend.name)
    assert torch.equal(logits, before[0]) and torch.equal(bias, before[1])
