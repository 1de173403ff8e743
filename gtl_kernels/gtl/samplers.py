"""Samplers for masked diffusion with and without GTL ratio guidance.

Every random decision goes through the public ``gtl_kernels`` ops (``masked_transition``, ``sample`` with ``index``,
``topk_log_softmax``, ``confidence``); this module only evaluates models and arranges tensors.

Model interfaces (networks from :mod:`~gtl_kernels.gtl.nets` and the Markov oracles both fit):

* ``denoiser(z, t) -> log-probabilities``: ``z`` int64 ``[B, L]`` with ``mask_id = V`` the mask token, ``t`` float
  ``[B]``; returns float ``[B, L, V + 1]`` in SUBS form (mask column ``-inf``, unmasked positions copied).
* ``ratio(z) -> log-ratio``: float ``[B]``, an estimate of ``log q_t(z) / p_t(z)`` up to a constant.
* ``planner(z) -> position logits``: float ``[B, L]``.

Seeds (KERNEL_SPEC §3): a sampler call takes one integer ``seed``; sequence ``i`` of the call (its global index,
also across batches) gets its own key ``derive_keys(seed, i)``, and each row of each op call is keyed from that
sequence key and the position, with ``offset`` = the step. A sequence's sample therefore depends only on
``(seed, i)`` and the models, never on the batch size or on the other sequences of its batch.

Counts in :class:`SamplerStats` are *sequence* forward passes (one pass = one length-``L`` sequence through a
network), the unit of the paper's cost analysis; ``*_calls`` count batched invocations.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import torch

import gtl_kernels as gk

from .progress import bar as progress_bar
from .schedule import LogLinearSchedule

__all__ = [
    "SamplerStats",
    "ConstantGamma",
    "PiecewiseLinearGamma",
    "sequence_seeds",
    "one_token_substitutions",
    "AncestralSampler",
    "GuidedAncestralSampler",
    "ScheduledSampler",
]

# derive_keys "position" of the per-step position choice of the scheduled sampler: far above any sequence position,
# so its key never coincides with a token-draw key of the same sequence.
_POSITION_CHANNEL = 1 << 40


# ---------------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SamplerStats:
    """Cost of one sampler call. Pass counts are per *sequence* forward pass (summed over all sequences)."""

    samples: int = 0
    steps: int = 0  # sampler steps per sequence
    denoiser_passes: int = 0
    planner_passes: int = 0
    ratio_passes: int = 0
    denoiser_calls: int = 0
    planner_calls: int = 0
    ratio_calls: int = 0
    wall_s: float = 0.0

    def per_sequence(self) -> dict:
        """Average passes per generated sequence, plus wall time per sequence in milliseconds."""
        n = max(self.samples, 1)
        return {
            "denoiser": self.denoiser_passes / n,
            "planner": self.planner_passes / n,
            "ratio": self.ratio_passes / n,
            "ms": 1e3 * self.wall_s / n,
        }

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"per_sequence": self.per_sequence()}


@dataclasses.dataclass(frozen=True)
class ConstantGamma:
    """Guidance strength ``gamma`` independent of progress."""

    gamma: float = 1.0

    def __call__(self, progress: float) -> float:
        return self.gamma


@dataclasses.dataclass(frozen=True)
class PiecewiseLinearGamma:
    """``g0`` while progress ``<= p0``, ``g1`` from ``p1`` on, linear in between (the paper's 1 -> 2 schedule).

    Progress is the fraction of the reverse process done: ``1 - t`` for the ancestral samplers, the fraction of
    revealed positions for the scheduled one. Weaker guidance early, where the ratio is hardest to estimate.
    """

    g0: float = 1.0
    g1: float = 2.0
    p0: float = 0.33
    p1: float = 0.66

    def __call__(self, progress: float) -> float:
        if progress <= self.p0:
            return self.g0
        if progress >= self.p1:
            return self.g1
        return self.g0 + (self.g1 - self.g0) * (progress - self.p0) / (self.p1 - self.p0)


def _as_gamma(gamma) -> Callable[[float], float]:
    return ConstantGamma(float(gamma)) if isinstance(gamma, (int, float)) else gamma


def sequence_seeds(seed: int, start: int, count: int, device="cpu") -> torch.Tensor:
    """Per-sequence keys of sequences ``start .. start + count - 1`` of a sampler call: int64 ``[count]``."""
    keys = gk.derive_keys(torch.tensor([seed], dtype=torch.int64), torch.arange(start, start + count))
    return keys.reshape(-1).to(device)


def one_token_substitutions(z: torch.Tensor, pos: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Candidate sequences ``z[m]`` with position ``pos[m]`` set to ``tokens[m, k]``: int64 ``[M, K, L]``.

    ``z`` int64 ``[M, L]``, ``pos`` int64 ``[M]``, ``tokens`` int64 ``[M, K]``. One scatter, no loop over candidates.
    """
    m, k = tokens.shape
    out = z.unsqueeze(1).expand(m, k, z.shape[1]).clone()
    out.scatter_(2, pos.view(m, 1, 1).expand(m, k, 1), tokens.unsqueeze(-1))
    return out


def _check_drawn(tokens: torch.Tensor, first_seq: int, what: str) -> None:
    """The ops return -1 for invalid rows (all scores -inf or NaN): turn that into an error naming the rows."""
    bad = (tokens == -1).nonzero()
    if len(bad):
        rows = [(first_seq + int(r[0]),) + tuple(int(c) for c in r[1:]) for r in bad[:8]]
        raise RuntimeError(
            f"{what}: {len(bad)} invalid row(s) (scores all -inf or NaN); first (sequence, position) entries: {rows}"
        )


def _impossible_stay_impossible(rho: torch.Tensor, cand_logp: torch.Tensor) -> torch.Tensor:
    """Zero the ratio score of candidates the denoiser gives probability 0: guidance reweights the denoiser's
    proposals and cannot create new ones (and ``-inf + inf`` would make the row invalid)."""
    return torch.where(cand_logp == -math.inf, torch.zeros_like(rho), rho)


def _generate(sampler, n_samples: int, length: int, seed: int, batch_size: int, progress: bool,
              stats: SamplerStats) -> tuple[torch.Tensor, SamplerStats]:
    """The batch loop every sampler shares: ``sampler._batch`` on batches of at most ``batch_size`` sequences, each
    sequence keyed by its index in the call (so its sample does not depend on the batching), ``stats.steps`` bar
    ticks per batch. Returns (int64 ``[n_samples, length]`` on the CPU, ``stats``)."""
    out = torch.empty(n_samples, length, dtype=torch.int64)
    bar = progress_bar(-(-n_samples // batch_size) * stats.steps, type(sampler).__name__, progress)
    t0 = time.perf_counter()
    for start in range(0, n_samples, batch_size):
        bsz = min(batch_size, n_samples - start)
        seeds = sequence_seeds(seed, start, bsz, sampler.device)
        out[start : start + bsz] = sampler._batch(bsz, length, seeds, start, stats, bar).cpu()
    stats.wall_s = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return out, stats


class _RatioScorer:
    """Scores candidate sequences with the ratio model in chunks of ``chunk`` sequences and counts the passes."""

    def __init__(self, ratio, chunk: int, stats: SamplerStats):
        self.ratio, self.chunk, self.stats = ratio, chunk, stats

    def __call__(self, seqs: torch.Tensor) -> torch.Tensor:
        """``seqs`` int64 ``[..., L]`` -> float32 ``[...]`` log-ratios."""
        flat = seqs.reshape(-1, seqs.shape[-1])
        out = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
        for i in range(0, flat.shape[0], self.chunk):
            out[i : i + self.chunk] = self.ratio(flat[i : i + self.chunk]).float()
            self.stats.ratio_calls += 1
        self.stats.ratio_passes += flat.shape[0]
        return out.view(seqs.shape[:-1])


# ---------------------------------------------------------------------------------------------------------------------
# Ancestral samplers (a time grid of T steps; several positions may be revealed per step)
# ---------------------------------------------------------------------------------------------------------------------


class AncestralSampler:
    """Unguided ancestral sampler of absorbing diffusion with MDLM's cache.

    Steps ``t_i = 1 - i/T``; each step calls ``masked_transition`` with ``stay_prob = m_s / m_t`` (the last step has
    ``s = 0`` and reveals everything). The denoiser is re-run only for sequences whose tokens changed since its last
    pass (MDLM's ``ddpm_cache``, per sequence): under absorbing noise the exact ``x0``-posterior depends on ``z``
    alone, so reusing it is exact for the Bayes-optimal model (a time-conditioned network sees the time of its last
    pass).

    Args:
        denoiser: ``(z [B, L], t [B]) -> [B, L, V + 1]`` log-probabilities (SUBS).
        mask_id: the mask token ``V``.
        steps: ``T``.
        top_k: keep only the ``top_k`` most likely tokens (0 = all); temperature: token temperature.
        device: where sequences are built and the models run.
    """

    def __init__(self, denoiser, mask_id: int, steps: int = 20, *, top_k: int = 0, temperature: float = 1.0,
                 schedule: LogLinearSchedule | None = None, cache: bool = True, device="cpu"):
        self.denoiser, self.mask_id, self.steps, self.device = denoiser, mask_id, steps, torch.device(device)
        self.top_k, self.temperature, self.cache = top_k, temperature, cache
        self.schedule = schedule or LogLinearSchedule()

    # Hooks the guided subclass overrides: extra per-step scores for the masked rows.
    def _bias(self, z, logp, dirty, cache, stats, progress):
        return logp, None, 1.0

    @torch.inference_mode()
    def __call__(self, n_samples: int, length: int, *, seed: int = 0, batch_size: int = 1024,
                 progress: bool = False) -> tuple[torch.Tensor, SamplerStats]:
        """Generate ``n_samples`` sequences of ``length`` tokens: (int64 ``[n_samples, length]``, stats)."""
        stats = SamplerStats(samples=n_samples, steps=self.steps)
        return _generate(self, n_samples, length, seed, batch_size, progress, stats)

    def _batch(self, bsz, length, seeds, first_seq, stats, bar):
        z = torch.full((bsz, length), self.mask_id, dtype=torch.int64, device=self.device)
        logp = None
        dirty = torch.ones(bsz, dtype=torch.bool, device=self.device)  # sequences whose denoiser output is stale
        cache: dict = {}
        for i in range(self.steps):
            t, s = 1.0 - i / self.steps, 1.0 - (i + 1) / self.steps
            if logp is None or not self.cache:
                dirty[:] = True
            if dirty.any():
                fresh = self.denoiser(z[dirty], torch.full((int(dirty.sum()),), t, device=self.device)).float()
                logp = fresh if logp is None or bool(dirty.all()) else logp.index_put((dirty,), fresh)
                stats.denoiser_passes += int(dirty.sum())
                stats.denoiser_calls += 1
            logits, bias, gamma = self._bias(z, logp, dirty, cache, stats, progress=1.0 - t)
            z_new = gk.masked_transition(
                z, logits, bias, gamma, self.temperature, self.top_k,
                stay_prob=self.schedule.stay_prob(t, s), mask_id=self.mask_id, seeds=seeds, offset=i,
            )
            _check_drawn(z_new, first_seq, f"{type(self).__name__} step {i}")
            dirty = (z_new != z).any(1)
            z = z_new
            if bar is not None:
                bar.update(1)
        return z


class GuidedAncestralSampler(AncestralSampler):
    """GTL guided ancestral sampler: every masked position is guided at every step.

    For a masked position ``l`` with candidates ``v``, the ratio model scores the one-token substitutions
    ``rho_l(v) = r(z[l <- v])``; ``masked_transition`` then draws from ``x_theta(z)_v * exp(gamma * rho_l(v))``
    renormalized over the candidates (a row constant in ``rho`` cancels), keeps only the ``top_k`` guided tokens,
    and keeps the unguided stay-masked probability ``m_s / m_t`` (mask-probability preservation: guidance changes
    which token is revealed, not when).

    Args:
        ratio: ``z [B, L] -> [B]`` log-ratio.
        mode: ``"exact"`` scores all ``V`` substitutions of every masked position; ``"topn"`` only the denoiser's
            ``n_ratio`` most likely tokens (the others are dropped).
        gamma: a float or a progress -> gamma callable (:class:`ConstantGamma`, :class:`PiecewiseLinearGamma`).
        top_k: keep the ``top_k`` best tokens after guidance (0 = all; the paper uses 8).
        ratio_chunk: candidate sequences per ratio-model call.
    Ratio scores are cached per sequence like the denoiser output.
    """

    def __init__(self, denoiser, ratio, mask_id: int, steps: int = 20, *, mode: str = "exact", n_ratio: int = 512,
                 gamma=1.0, top_k: int = 8, temperature: float = 1.0, ratio_chunk: int = 8192,
                 schedule: LogLinearSchedule | None = None, cache: bool = True, device="cpu"):
        super().__init__(denoiser, mask_id, steps, top_k=top_k, temperature=temperature, schedule=schedule,
                         cache=cache, device=device)
        if mode not in ("exact", "topn"):
            raise ValueError(f"mode must be 'exact' or 'topn', got {mode!r}")
        self.ratio, self.mode, self.n_ratio = ratio, mode, n_ratio
        self.gamma, self.ratio_chunk = _as_gamma(gamma), ratio_chunk

    def _bias(self, z, logp, dirty, cache, stats, progress):
        gamma = self.gamma(progress)
        if "bias" not in cache or not self.cache:
            cache["bias"] = torch.zeros_like(logp)
            cache["logits"] = logp.clone()
            dirty = torch.ones_like(dirty)
        bias, logits = cache["bias"], cache["logits"]
        rows = dirty.unsqueeze(1) & (z == self.mask_id)  # masked positions of sequences that changed
        b_idx, l_idx = rows.nonzero(as_tuple=True)
        if len(b_idx) == 0:
            return logits, bias, gamma
        row_logp = logp[b_idx, l_idx]  # [M, V + 1]
        vocab = logp.shape[-1]
        if self.mode == "exact":
            ids = torch.arange(vocab, device=z.device)
            cand = ids[ids != self.mask_id].expand(len(b_idx), -1)
            cand_logp = row_logp.gather(1, cand)
        else:
            n = min(self.n_ratio, vocab - 1)  # the mask token never is a candidate (SUBS gives it -inf)
            cand_logp, cand = gk.topk_log_softmax(row_logp, n)
        scorer = _RatioScorer(self.ratio, self.ratio_chunk, stats)
        rho = _impossible_stay_impossible(scorer(one_token_substitutions(z[b_idx], l_idx, cand)), cand_logp)
        # Dense rows for masked_transition: candidates keep their log-probability and score, the rest is -inf.
        logits[b_idx, l_idx] = torch.full_like(row_logp, -math.inf).scatter(1, cand, cand_logp)
        bias[b_idx, l_idx] = torch.zeros_like(row_logp).scatter(1, cand, rho)
        return logits, bias, gamma


# ---------------------------------------------------------------------------------------------------------------------
# The scheduled sampler (one position per sequence per step; L steps)
# ---------------------------------------------------------------------------------------------------------------------


class ScheduledSampler:
    """GTL's efficient sampler: reveal one position per sequence per step, guided with top-``n_ratio`` candidates.

    Each step (exactly ``L`` of them):

    1. choose a masked position: ``order="planner"`` draws from ``softmax(planner(z) / planner_temperature)`` over
       masked positions; ``"max_prob"``, ``"margin"``, ``"neg_entropy"`` take the masked position where the denoiser
       is most confident (``confidence``); ``"random"`` draws uniformly; ``"left_to_right"`` takes the first
       masked position (every revealed token then has its left neighbour revealed, which suits a local ratio);
    2. the denoiser's ``n_ratio`` most likely tokens there (``topk_log_softmax``) become candidates, scored by the
       ratio model on the one-token substitutions, in chunks;
    3. ``sample(..., index=candidates)`` draws the token from ``log x_theta(v) + gamma * rho(v)`` (top-``top_k``).

    With ``ratio=None`` it is an unguided one-position-per-step sampler. If ``n_ratio >= V`` and ``top_k`` is 0,
    the guided step is exact: with the exact denoiser and ratio and ``gamma = 1`` every revealed token follows the
    target conditional, so the output follows the target distribution, for any order that depends only on the
    revealed tokens.

    Cost per sequence: ``L`` denoiser passes, ``L`` planner passes (planner order only) and ``L * n_ratio`` ratio
    passes (``n_ratio`` capped at ``V``).
    """

    ORDERS = ("planner", "max_prob", "margin", "neg_entropy", "random", "left_to_right")

    def __init__(self, denoiser, mask_id: int, ratio=None, *, planner=None, order: str = "random",
                 planner_temperature: float = 0.5, n_ratio: int = 512, gamma=1.0, top_k: int = 0,
                 temperature: float = 1.0, ratio_chunk: int = 8192, device="cpu"):
        if order not in self.ORDERS:
            raise ValueError(f"order must be one of {self.ORDERS}, got {order!r}")
        if order == "planner" and planner is None:
            raise ValueError("order='planner' needs a planner")
        self.denoiser, self.mask_id, self.ratio, self.planner = denoiser, mask_id, ratio, planner
        self.order, self.planner_temperature = order, planner_temperature
        self.n_ratio, self.gamma, self.top_k = n_ratio, _as_gamma(gamma), top_k
        self.temperature, self.ratio_chunk, self.device = temperature, ratio_chunk, torch.device(device)

    @torch.inference_mode()
    def __call__(self, n_samples: int, length: int, *, seed: int = 0, batch_size: int = 1024,
                 progress: bool = False) -> tuple[torch.Tensor, SamplerStats]:
        """Generate ``n_samples`` sequences of ``length`` tokens: (int64 ``[n_samples, length]``, stats)."""
        stats = SamplerStats(samples=n_samples, steps=length)
        return _generate(self, n_samples, length, seed, batch_size, progress, stats)

    def _choose_position(self, z, masked, logp, seeds, step, stats):
        bsz = z.shape[0]
        neg_inf = torch.tensor(-math.inf, device=z.device)
        if self.order == "planner":
            scores = self.planner(z).float()
            stats.planner_passes += bsz
            stats.planner_calls += 1
            temperature = self.planner_temperature
        elif self.order == "random":
            scores, temperature = torch.zeros(z.shape, device=z.device), 1.0
        elif self.order == "left_to_right":  # greedy on -position: the leftmost masked position
            scores = -torch.arange(z.shape[1], device=z.device, dtype=torch.float32).expand(z.shape)
            temperature = 0.0
        else:
            scores, temperature = gk.confidence(logp, kind=self.order)[1], 0.0  # greedy: the most confident
        scores = torch.where(masked, scores, neg_inf)
        keys = gk.derive_keys(seeds.view(-1, 1), torch.full((bsz, 1), _POSITION_CHANNEL, device=z.device)).reshape(-1)
        return gk.sample(scores, temperature=temperature, seeds=keys, offset=step)

    def _batch(self, bsz, length, seeds, first_seq, stats, bar):
        z = torch.full((bsz, length), self.mask_id, dtype=torch.int64, device=self.device)
        rows = torch.arange(bsz, device=self.device)
        for step in range(length):
            masked = z == self.mask_id
            t = masked.float().mean(1)  # the masked fraction: the scheduled sampler has no time grid
            logp = self.denoiser(z, t).float()
            stats.denoiser_passes += bsz
            stats.denoiser_calls += 1
            pos = self._choose_position(z, masked, logp, seeds, step, stats)
            _check_drawn(pos, first_seq, f"position choice at step {step}")
            keys = gk.derive_keys(seeds.view(-1, 1), pos.view(-1, 1)).reshape(-1)
            row_logp = logp[rows, pos]  # [B, V + 1]
            if self.ratio is None:
                tok = gk.sample(row_logp, temperature=self.temperature, top_k=self.top_k, seeds=keys, offset=step)
            else:
                n = min(self.n_ratio, row_logp.shape[-1] - 1)  # the mask token never is a candidate
                cand_logp, cand = gk.topk_log_softmax(row_logp, n)
                rho = _RatioScorer(self.ratio, self.ratio_chunk, stats)(one_token_substitutions(z, pos, cand))
                rho = _impossible_stay_impossible(rho, cand_logp)
                tok = gk.sample(cand_logp, rho, self.gamma(step / length), self.temperature, self.top_k,
                                seeds=keys, offset=step, index=cand)
            _check_drawn(tok.view(-1, 1), first_seq, f"token draw at step {step}")
            z = z.clone()
            z[rows, pos] = tok
            if bar is not None:
                bar.update(1)
        return z
