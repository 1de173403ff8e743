"""Comparison rules of the property-based tests: a backend's result against the float64 reference.

- Invalid rows (NaN / -1) must match exactly, as must everything the contract fixes exactly: copied positions of
  ``masked_transition``, the ``-inf`` entries of ``guided_log_softmax``, the ``-inf`` places of ``topk_log_softmax``.
- Deterministic values: ``|got - ref| <= ATOL + RTOL * |ref| + ROUND * scale`` where ``scale`` bounds the fp32 rounding
  of the scores: the kernels compute ``s = (logits + gamma * bias) / T`` in fp32, a few ulp of the largest term
  (``scale = max |logits| + |gamma * bias|, over T``; 0 when no rounding happens: no bias and ``T == 1``).
- Tokens: identical, except where the choice is a near-tie the fp32 scores cannot resolve (KERNEL_SPEC §3): the two
  best race keys (chunk level or token level), the k-th and (k+1)-th scores of a top-k restriction, or the two best
  scores of a greedy row, within ``TIE_ATOL + TIE_RTOL * (scale + max |s|)``.
"""

from __future__ import annotations

import math

import torch

from gtl_kernels import reference

ATOL, RTOL, ROUND = 3e-5, 2e-6, 2e-6
TIE_ATOL, TIE_RTOL = 1e-4, 2e-6


def rounding_scale(logits2, bias2, gamma, temperature) -> torch.Tensor:
    """Per row, the magnitude whose fp32 rounding bounds the error of the scores (see the module docstring):
    float64 ``[N]``."""
    lg = logits2.double().abs()
    lg = torch.where(lg.isfinite(), lg, 0.0)
    t = temperature.double()
    if bias2 is None:
        terms = torch.zeros_like(lg)
    else:
        gb = (gamma.double().unsqueeze(-1) * bias2.double()).abs()
        terms = torch.where(gb.isfinite() & (gamma.unsqueeze(-1) != 0), gb + lg, 0.0)
    needs_division = (t != 1) & (t > 0) & t.isfinite()
    terms = torch.where(needs_division.unsqueeze(-1), lg + terms, terms)
    tt = torch.where(needs_division, t, 1.0).unsqueeze(-1)
    return (terms / tt).amax(-1) if terms.shape[-1] else torch.zeros(terms.shape[0], dtype=torch.float64)


def check_values(got: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor, what: str, extra_atol=0.0) -> None:
    """``got`` vs ``ref`` (``[N, ...]``): NaN and infinities in the same places, finite values within tolerance
    (``extra_atol``: a number or float ``[N]``, added per row)."""
    got, ref = got.double().cpu(), ref.double().cpu()
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    nan_diff = got.isnan() != ref.isnan()
    assert not nan_diff.any(), f"{what}: NaN pattern differs at {nan_diff.nonzero()[:5].tolist()}"
    finite = ref.isfinite()
    inf_diff = (~finite & ~ref.isnan()) & (got != ref)
    assert not inf_diff.any(), f"{what}: infinities differ at {inf_diff.nonzero()[:5].tolist()}"
    def per_row(x):
        return x.double().view(-1, *([1] * (ref.dim() - 1))).expand_as(ref) if isinstance(x, torch.Tensor) else x

    tol = ATOL + per_row(extra_atol) + RTOL * ref.abs() + ROUND * per_row(scale)
    bad = finite & ~((got - ref).abs() <= tol)
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int(bad.sum())} values out of tolerance; first at {i}: got {got[i].item()!r}, "
                             f"reference {ref[i].item()!r}, tolerance {tol[i].item():.3g}")


def _top2_gap(x: torch.Tensor) -> torch.Tensor:
    """Gap between the best and second-best entry of each row (inf when fewer than two are finite-or-+inf)."""
    if x.shape[-1] < 2:
        return torch.full(x.shape[:1], math.inf, dtype=torch.float64)
    top = x.topk(2, -1).values
    gap = top[:, 0] - top[:, 1]
    return torch.where(top[:, 1] == -math.inf, math.inf, torch.where(top[:, 0] == top[:, 1], 0.0, gap))


def race_gaps(s: torch.Tensor, seeds: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Per row, the smaller of the chunk-level and token-level gaps between the best and second-best race keys of
    the reference's race on ``s`` (float64 ``[N, V]`` restricted to the allowed set)."""
    n, v = s.shape
    chunk = reference.CHUNK
    n_chunks = -(-v // chunk)
    padded = torch.nn.functional.pad(s, (0, n_chunks * chunk - v), value=-math.inf).view(n, n_chunks, chunk)
    mass = torch.logsumexp(padded, -1)
    ids = torch.arange(n_chunks).expand(n, n_chunks)
    chunk_keys = mass - reference.exponential64(seeds, ids, offset, reference.STREAM_CHUNK).log()
    chosen = chunk_keys.argmax(-1)
    token_ids = chosen[:, None] * chunk + torch.arange(chunk)
    in_chunk = padded.gather(1, chosen.view(n, 1, 1).expand(n, 1, chunk)).squeeze(1)
    token_keys = in_chunk - reference.exponential64(seeds, token_ids, offset, reference.STREAM_TOKEN).log()
    return torch.minimum(_top2_gap(chunk_keys), _top2_gap(token_keys))


def _sorted_gap_at(s: torch.Tensor, k: int) -> torch.Tensor:
    """Gap between the k-th and (k+1)-th largest scores of each row (inf when there is no (k+1)-th)."""
    if k <= 0 or k >= s.shape[-1]:
        return torch.full(s.shape[:1], math.inf, dtype=torch.float64)
    top = s.topk(k + 1, -1).values
    gap = top[:, k - 1] - top[:, k]
    return torch.where(top[:, k] == -math.inf, math.inf, gap)


def explain_token_mismatch(z, temperature, top_k, seeds, offset, scale) -> torch.Tensor:
    """For each row, whether a different token is explained by a near-tie (bool ``[N]``).

    ``z``: float64 guided scores ``[N, V]`` with excluded tokens at ``-inf``; ``temperature`` float32 ``[N]``."""
    s, invalid = reference._tempered(z, temperature, greedy_limit=False)
    finite = torch.where(s.isfinite(), s.abs(), 0.0)
    tol = TIE_ATOL + TIE_RTOL * (scale + (finite.amax(-1) if s.shape[-1] else 0.0))
    restricted = reference._plus_inf_restriction(reference._top_k_restriction(s, top_k))
    tie = race_gaps(restricted, seeds, offset) <= tol
    tie |= (top_k > 0) & (_sorted_gap_at(s, top_k) <= tol)
    greedy = temperature == 0
    tie |= greedy & (_top2_gap(torch.where(z.isnan(), -math.inf, z)) <= tol)
    return tie & ~invalid


def check_tokens(got, ref, explained, what: str, stats: dict) -> None:
    """Tokens equal, or differing only where ``explained`` (bool ``[N]``, or a function returning it, called only
    when some tokens differ: the near-tie analysis recomputes the race); -1 (invalid) must always match."""
    got, ref = got.reshape(-1).cpu(), ref.reshape(-1).cpu()
    differ = got != ref
    if callable(explained):
        explained = explained() if differ.any() else torch.zeros_like(differ)
    invalid_differ = differ & ((got == -1) | (ref == -1))
    assert not invalid_differ.any(), (
        f"{what}: invalid rows differ at {invalid_differ.nonzero()[:5].flatten().tolist()} "
        f"(got {got[invalid_differ][:5].tolist()}, reference {ref[invalid_differ][:5].tolist()})")
    unexplained = differ & ~explained
    assert not unexplained.any(), (
        f"{what}: tokens differ without a near-tie at rows {unexplained.nonzero()[:5].flatten().tolist()} "
        f"(got {got[unexplained][:5].tolist()}, reference {ref[unexplained][:5].tolist()})")
    stats["rows"] = stats.get("rows", 0) + len(got)
    stats["near_tie_mismatches"] = stats.get("near_tie_mismatches", 0) + int(differ.sum())
    stats[f"near_tie_mismatches/{what}"] = stats.get(f"near_tie_mismatches/{what}", 0) + int(differ.sum())
