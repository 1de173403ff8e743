"""Shared test utilities: random inputs, the float64 oracle distribution, and statistical checks.

Every statistical check states its false-failure rate: ``ALPHA`` per test with a fixed seed (so a given backend
either always passes or always fails; the rate says how unlucky a correct sampler would have to be).
"""

import math

import numpy as np
import torch
from scipy import stats

import gtl_kernels
from gtl_kernels import reference

ALPHA = 1e-6  # false-failure probability of each statistical assertion


def random_logits(n, v, dtype=torch.float32, device="cpu", scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, v, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)


def oracle_scores(logits, bias=None, gamma=1.0, temperature=1.0):
    """The reference's float64 scores ``(logits + gamma * bias) / T``, ``[N, V]`` on the logits' device, as the
    backends see them: inputs rounded to their dtype, ``gamma`` and ``temperature`` (scalars or ``[N]``) to float32.
    ``T == 0`` rows are left unscaled (the reference's convention)."""
    n, device = logits.shape[0], logits.device
    gamma = torch.as_tensor(gamma, dtype=torch.float32, device=device).reshape(-1).expand(n)
    temperature = torch.as_tensor(temperature, dtype=torch.float32, device=device).reshape(-1).expand(n)
    s, _ = reference._tempered(reference.guided_scores(logits, bias, gamma), temperature, greedy_limit=False)
    return s


def oracle_probs(logits, bias=None, gamma=1.0, temperature=1.0, top_k=0, exclude=None):
    """The target distribution of KERNEL_SPEC §1/§3 in float64 numpy, ``[N, V]``, from the scores as the backend
    sees them (:func:`oracle_scores`)."""
    s = oracle_scores(logits.cpu(), None if bias is None else bias.cpu(), gamma, temperature)
    if exclude is not None:
        s[:, exclude] = -math.inf
    if top_k:
        order = torch.sort(s, dim=-1, descending=True, stable=True).indices[:, top_k:]
        s = s.scatter(-1, order, -math.inf)
    return torch.softmax(s, dim=-1).numpy()


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson goodness of fit; bins with expected count < 5 are merged into one (zero-probability bins must be
    empty: checked separately by support tests)."""
    total = counts.sum()
    expected = probs * total
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] < 5:  # fold a tiny remainder into the smallest kept bin
        i = np.argmin(exp[:-1])
        obs[i] += obs[-1]
        exp[i] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    if len(exp) < 2:
        return 1.0
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


def draw_many(backend, logits_row, draws, bias_row=None, **kwargs):
    """``draws`` samples of one distribution: the row repeated with a distinct key per copy (one call)."""
    logits = logits_row.expand(draws, -1).contiguous()
    bias = None if bias_row is None else bias_row.expand(draws, -1).contiguous()
    keys = torch.arange(draws, dtype=torch.int64, device=logits.device) * 7919 + 12345
    return gtl_kernels.sample(logits, bias, seeds=keys, backend=backend.name, **kwargs)


def poisson_interval(mean: float, alpha: float = ALPHA) -> tuple[int, int]:
    return int(stats.poisson.ppf(alpha / 2, mean)), int(stats.poisson.isf(alpha / 2, mean))


# The deep-tail check: one head token (score 0) and V - 1 tokens DEEP_TAIL_GAP nats below it. Each tail token has
# probability ~1.5e-8, beyond the reach of float32 uniforms (their exponential stops at -ln(2**-24) = 16.6 nats);
# 800k draws expect ~50 tail hits.
DEEP_TAIL_GAP, DEEP_TAIL_V, DEEP_TAIL_DRAWS = 18.0, 4096, 800_000


def deep_tail_row(device="cpu"):
    row = torch.full((1, DEEP_TAIL_V), -DEEP_TAIL_GAP, device=device)
    row[0, 0] = 0.0
    return row


def two_sample_pvalue(a: torch.Tensor, b: torch.Tensor, vocab: int) -> float:
    """Chi-square test that two samples of token ids in ``[0, vocab)`` share one distribution; tokens with fewer
    than 10 draws in both together are pooled into one bin (so no expected count is tiny)."""
    counts = np.stack([np.bincount(a.numpy(), minlength=vocab), np.bincount(b.numpy(), minlength=vocab)])
    common = counts.sum(0) >= 10
    table = np.concatenate([counts[:, common], counts[:, ~common].sum(1, keepdims=True)], axis=1)
    table = table[:, table.sum(0) > 0]
    return 1.0 if table.shape[1] < 2 else float(stats.chi2_contingency(table)[1])


def min_position_pvalue(ours: torch.Tensor, theirs: torch.Tensor, prompt_len: int, vocab: int) -> float:
    """Smallest :func:`two_sample_pvalue` over the generated positions of two ``[N, L]`` token batches,
    Bonferroni-corrected (multiplied by the number of positions)."""
    gen = range(prompt_len, ours.shape[1])
    return min(two_sample_pvalue(ours[:, p], theirs[:, p], vocab) for p in gen) * len(gen)
