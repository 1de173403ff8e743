"""Negative controls: the statistical tests of this suite reject deliberately wrong samplers, so they can fail.

Each wrong sampler is run through the same check (same helper, same ALPHA, same seed) that the real backends pass.
"""

import math

import numpy as np
import torch
from helpers import (
    ALPHA,
    DEEP_TAIL_DRAWS,
    DEEP_TAIL_GAP,
    DEEP_TAIL_V,
    chi_square_pvalue,
    deep_tail_row,
    oracle_probs,
    poisson_interval,
    random_logits,
)

import gtl_kernels


def _repeat(row, draws):
    return row.expand(draws, -1).contiguous(), torch.arange(draws, dtype=torch.int64) * 7919 + 12345


def _exact_backend() -> str:
    """The C++ CPU backend where it is built (bit-identical to the reference, and much faster at 40,000 draws)."""
    return "cpu" if gtl_kernels.available_backends()["cpu"].available else "torch"


def test_chi_square_rejects_a_sampler_that_ignores_the_bias():
    logits = random_logits(1, 50, torch.float32, scale=2.0, seed=1)
    bias = random_logits(1, 50, torch.float32, scale=1.0, seed=2)
    rows, keys = _repeat(logits, 60_000)
    wrong = gtl_kernels.sample(rows, seeds=keys, temperature=1.3, backend="torch")  # bias dropped
    probs = oracle_probs(logits, bias, gamma=0.7, temperature=1.3)[0]
    assert chi_square_pvalue(np.bincount(wrong.numpy(), minlength=50), probs) < ALPHA


def test_chi_square_rejects_a_sampler_that_ignores_the_temperature():
    logits = random_logits(1, 50, torch.float32, scale=2.0, seed=1)
    rows, keys = _repeat(logits, 60_000)
    wrong = gtl_kernels.sample(rows, seeds=keys, backend="torch")  # temperature 1 instead of 1.3
    probs = oracle_probs(logits, temperature=1.3)[0]
    assert chi_square_pvalue(np.bincount(wrong.numpy(), minlength=50), probs) < ALPHA


def test_chi_square_rejects_a_slightly_wrong_top_k():
    """Keeping k + 1 tokens instead of k shows up in the support check and in the chi-square test."""
    logits = random_logits(1, 40, torch.float32, scale=1.5, seed=3)
    rows, keys = _repeat(logits, 40_000)
    wrong = gtl_kernels.sample(rows, seeds=keys, top_k=7, backend="torch")
    counts = np.bincount(wrong.numpy(), minlength=40)
    probs = oracle_probs(logits, top_k=6)[0]
    assert counts[probs == 0].sum() > 0
    assert chi_square_pvalue(counts, probs) < ALPHA


def _race_hits(draws, tail_gap, n_tail, uniform_bits, seed=0):
    """Tail hits of an exponential race over one head token (score 0) and ``n_tail`` tokens at ``-tail_gap``.

    Simulated exactly with two numbers per draw: the head's uniform, and the largest of the ``n_tail`` tail uniforms
    (``W = V ** (1 / n_tail)``), both rounded down to a grid of ``2 ** -uniform_bits`` (24 for float32 uniforms, as
    ``torch.rand`` gives). A token wins when its key ``s - ln(-ln u)`` is the largest.
    """
    rng = np.random.default_rng(seed)
    grid = 2.0**uniform_bits

    def on_grid(u):
        return np.floor(u * grid) / grid if uniform_bits < 53 else u

    u_head = np.maximum(on_grid(rng.random(draws)), 1 / grid)  # u = 0 has probability 2**-bits: keep the log finite
    u_tail = on_grid(rng.random(draws) ** (1.0 / n_tail))
    head_key = -np.log(-np.log(u_head))
    with np.errstate(divide="ignore"):
        tail_key = -tail_gap - np.log(-np.log(u_tail))
    return int((tail_key > head_key).sum())


def test_deep_tail_check_rejects_float32_uniforms():
    """The deep-tail check of test_sample (800k draws, Poisson bounds) passes an exact race and rejects the same race
    fed float32 uniforms."""
    row = deep_tail_row()
    expected = DEEP_TAIL_DRAWS * oracle_probs(row)[0, 1:].sum()
    lo, hi = poisson_interval(expected)
    exact = _race_hits(DEEP_TAIL_DRAWS, DEEP_TAIL_GAP, DEEP_TAIL_V - 1, uniform_bits=53)
    float32 = _race_hits(DEEP_TAIL_DRAWS, DEEP_TAIL_GAP, DEEP_TAIL_V - 1, uniform_bits=24)
    assert lo <= exact <= hi, f"the exact race fails its own check: {exact} hits, expected {expected:.1f}"
    assert not lo <= float32 <= hi, f"float32 uniforms passed: {float32} hits, expected {expected:.1f}"


def test_batch_invariance_check_rejects_slot_keyed_noise():
    """Noise keyed by the batch slot (as in samplers that seed by row index) changes a row's draw when the batch is
    permuted: the batch-invariance check of test_sample catches it."""
    n = 24
    logits = random_logits(n, 1500, torch.float32, scale=0.5, seed=10)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
    slot_keys = torch.arange(n)
    full = gtl_kernels.sample(logits, seeds=slot_keys, offset=7, backend="torch")
    permuted = gtl_kernels.sample(logits[perm], seeds=slot_keys, offset=7, backend="torch")
    assert not torch.equal(permuted, full[perm])


def test_tail_check_rejects_a_truncated_sampler():
    """A sampler that drops tokens below 1e-4 of the head (a common 'numerical' shortcut) fails the tail check."""
    draws = 40_000
    logits = torch.full((1, 1024), -12.0)
    logits[0, 0] = 0.0
    truncated = logits.clone()
    truncated[truncated < math.log(1e-4)] = -math.inf
    rows, keys = _repeat(truncated, draws)
    hits = int((gtl_kernels.sample(rows, seeds=keys, backend=_exact_backend()) != 0).sum())
    lo, hi = poisson_interval(draws * oracle_probs(logits)[0, 1:].sum())
    assert not lo <= hits <= hi
