"""Samplers for masked diffusion with and without GTL ratio guidance.

Every random decision goes through the public ``gtl_kernels`` ops (``masked_transition``, ``sample`` with ``index``,
``topk_log_softmax``, ``confidence``); this module only evaluates models and arranges tensors.

Model interfaces (networks from :mod:`~gtl_kernels.gtl.nets` and the Markov oracles both fit):

* ``denoiser(z, t) -> log-probabilities``: ``z`` int64 ``[B, L]`` with ``mask_id = V`` the mask token, ``t`` float
  ``[B]``; returns float ``[B, L, V + 1]`` in SUBS form (mask column ``-inf``, unmasked positions copied). A
  ``denoiser.scores(z, t)`` method (unnormalized, mask column ``-inf``) is used instead when present, so that only
  the rows a step uses are normalized, inside the kernels.
* ``ratio(z) -> log-ratio``: float ``[B]``, an estimate of ``log q_t(z) / p_t(z)`` up to a constant. A ratio model
  that can score one-token substitutions without being handed each substituted sequence (one that reuses the
  shared context, or an oracle) may also have ``ratio.score_substitutions(z, seq, pos, cand) -> [M, K]``
  (:class:`RatioScorer`); it is then called instead of building ``M * K`` sequences. An attribute that is ``None``
  means the model has no such shortcut (e.g. a ``SequenceScorer`` with global attention).
* ``planner(z) -> position logits``: float ``[B, L]``.

Seeds (KERNEL_SPEC §3): a sampler call takes one integer ``seed``; sequence ``i`` of the call (its global index,
also across batches) gets its own key ``derive_keys(seed, i)``, and each row of each op call is keyed from that
sequence key and the position, with ``offset`` = the step. A sequence's sample therefore depends only on
``(seed, i)`` and the models, never on the batch size or on the other sequences of its batch.

Every sampler has a public ``step`` (one reverse step of a batch, optionally on the caller's logits) that
``__call__`` loops over; ``__call__(..., z0=...)`` starts from given tokens (prompts, infilling), which never change.

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
    "AncestralState",
    "RatioScorer",
    "topn_candidates",
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
    # ScheduledSampler only: the drawn tokens and the sum of their log-probabilities under the laws they were drawn
    # from (guided, tempered, top-k restricted); -token_logprob / tokens_drawn estimates the sampler's entropy per
    # token (exactly its expectation for a left-to-right order, see ``token_nll``)
    tokens_drawn: int = 0
    token_logprob: float = 0.0

    def per_sequence(self) -> dict:
        """Average passes per generated sequence, plus wall time per sequence in milliseconds."""
        n = max(self.samples, 1)
        return {
            "denoiser": self.denoiser_passes / n,
            "planner": self.planner_passes / n,
            "ratio": self.ratio_passes / n,
            "ms": 1e3 * self.wall_s / n,
            "token_nll": self.token_nll(),
        }

    def token_nll(self) -> float:
        """Mean negative log-probability of the drawn tokens under the laws they were drawn from (nats; NaN when no
        token was recorded). Its expectation is ``H(tokens drawn along the path) / tokens``: for a fixed order
        (left-to-right) the sampler's entropy per token; for an order that depends on the drawn tokens, the
        entropy of the path, an upper bound on that of the sequences."""
        return -self.token_logprob / self.tokens_drawn if self.tokens_drawn else math.nan

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
    return rho.masked_fill(cand_logp == -math.inf, 0.0)


def _generate(sampler, n_samples: int, length: int, seed: int, batch_size: int, progress: bool,
              stats: SamplerStats, z0: torch.Tensor | None, first_index: int = 0) -> tuple[torch.Tensor, SamplerStats]:
    """The batch loop every sampler shares: ``sampler._batch`` on batches of at most ``batch_size`` sequences, each
    sequence keyed by its global index ``first_index + i`` (so its sample does not depend on the batching, nor on
    which shard of a distributed run draws it), ``stats.steps`` bar ticks per batch. ``z0``: optional starting
    tokens ``[n_samples, length]`` (``mask_id`` where to generate).
    Returns (int64 ``[n_samples, length]`` on the CPU, ``stats``)."""
    if z0 is not None:
        if not isinstance(z0, torch.Tensor) or z0.dtype != torch.int64:
            raise TypeError(f"z0 must be an int64 tensor, got {getattr(z0, 'dtype', type(z0).__name__)}")
        if tuple(z0.shape) != (n_samples, length):
            raise ValueError(f"z0 must have shape [n_samples, length] = [{n_samples}, {length}], got {tuple(z0.shape)}")
    out = torch.empty(n_samples, length, dtype=torch.int64)
    bar = progress_bar(-(-n_samples // batch_size) * stats.steps, type(sampler).__name__, progress)
    t0 = time.perf_counter()
    for start in range(0, n_samples, batch_size):
        bsz = min(batch_size, n_samples - start)
        seeds = sequence_seeds(seed, first_index + start, bsz, sampler.device)
        if z0 is None:
            z = torch.full((bsz, length), sampler.mask_id, dtype=torch.int64, device=sampler.device)
        else:
            z = z0[start : start + bsz].to(sampler.device)
        out[start : start + bsz] = sampler._batch(z, seeds, first_index + start, stats, bar).cpu()
    stats.wall_s = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return out, stats


def _denoise(denoiser, z: torch.Tensor, t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The denoiser's scores ``[B, L, V + 1]`` (fp32): its unnormalized ``scores`` when it has them (only the rows a
    step uses are then normalized, inside the kernels), else its log-probabilities."""
    fn = getattr(denoiser, "scores", None) or denoiser
    out = fn(z, t)
    _check_model_output("denoiser", out, tuple(z.shape), vocab_last=True)
    if out.shape[-1] <= mask_id:
        raise ValueError(f"denoiser returned {out.shape[-1]} columns, but the mask token {mask_id} needs a column "
                         f"(expected [{', '.join(map(str, z.shape))}, V + 1] with mask_id = V)")
    return out.float()


def _row_keys(seeds: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Philox keys of rows ``(seq[m], pos[m])``: ``derive_keys(seeds[seq], pos)``, the keys ``masked_transition``
    derives from per-sequence seeds for ``[B, L, V]`` input, so a sparse step draws with a dense step's keys."""
    return gk.derive_keys(seeds[seq], pos)


def _check_model_output(name: str, out: torch.Tensor, shape: tuple, vocab_last: bool = False) -> None:
    """A model output must be a float tensor of ``shape`` (``shape + [any V]`` with ``vocab_last``): else an error
    naming the model, never a wrong draw."""
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise TypeError(f"{name} must return a float tensor, got {getattr(out, 'dtype', type(out).__name__)}")
    got = tuple(out.shape[:-1]) if vocab_last and out.dim() else tuple(out.shape)
    if got != tuple(shape) or (vocab_last and out.dim() == 0):
        expected = f"[{', '.join(map(str, shape))}, V]" if vocab_last else f"{tuple(shape)}"
        raise ValueError(f"{name} returned shape {tuple(out.shape)}, expected {expected}")


class RatioScorer:
    """Scores one-token substitutions with the ratio model, streamed in calls of at most ``chunk`` sequences (at
    most ``chunk`` candidate sequences exist at a time), and counts the passes.

    The sequences are written into one buffer reused by every call of the model: a fresh ``[chunk, L]`` tensor per
    call would cost more in page faults than writing its tokens (8x at ``n_ratio = 512``, docs/PERF.md). Candidates
    are laid out so that a buffer row keeps its sequence and its substituted position from one call to the next:
    with ``C`` calls, candidate ``i`` (row-major in ``[M, K]``) goes to row ``i // C`` of call ``i % C``, so a row
    runs through consecutive candidates of one masked position, and a call writes one token per row (the next
    candidate, into the same cell) instead of ``L`` (at ``n_ratio = 512`` the sequences are ``M * 512 * L``
    tokens, 2 GiB of int64 at ``M = 1024, L = 512``). Where a row passes to the next masked position, the token
    there is put back (same sequence) or the row is copied whole (another sequence). So the model must not keep a
    reference to its input beyond the call; if it writes into its input (an in-place op, seen in the buffer's
    version counter), the next call's rows are rebuilt whole.

    Substitution-aware models: when ``ratio`` has a ``score_substitutions(z, seq, pos, cand)`` method it is called
    once with the arguments of :meth:`__call__` and must return the same float ``[M, K]`` scores that calling the
    model on every substituted sequence would (it does its own batching). No sequence is built then."""

    def __init__(self, ratio, chunk: int, stats: SamplerStats):
        self.ratio, self.chunk, self.stats = ratio, chunk, stats

    def __call__(self, z: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Log-ratios of ``z[seq[m]]`` with position ``pos[m]`` set to ``cand[m, k]``: float32 ``[M, K]``.

        ``z`` int64 ``[B, L]``; ``seq``, ``pos`` int64 ``[M]``; ``cand`` int64 ``[M, K]``. ``ceil(M * K / chunk)``
        model calls; call ``c`` holds candidates ``c, c + C, c + 2C, ...`` (row-major in ``[M, K]``).
        """
        m, k = cand.shape
        total, length = m * k, z.shape[1]
        if total == 0:
            return torch.empty(m, k, dtype=torch.float32, device=z.device)
        by_substitution = getattr(self.ratio, "score_substitutions", None)
        if by_substitution is not None:
            scores = by_substitution(z, seq, pos, cand)
            _check_model_output("ratio.score_substitutions", scores, (m, k))
            self.stats.ratio_calls += 1
            self.stats.ratio_passes += total
            return scores.float()
        layout = _SubstitutionLayout(z, seq, pos, k, min(self.chunk, total))
        calls, rows = layout.calls, layout.rows
        with torch.inference_mode(False):  # a normal tensor, whose version counter shows writes by the model
            buf = torch.empty(rows, length, dtype=z.dtype, device=z.device)
        cells, flat = buf.view(-1), cand.reshape(-1)
        out = torch.empty(calls, rows, dtype=torch.float32, device=z.device)
        version = None
        for c in range(calls):
            n = rows - (c >= layout.last_row_calls)  # the last row may hold fewer candidates than the others
            rebuild = c == 0 or buf._version != version
            layout.advance(c, None if rebuild else buf)
            if rebuild:  # first call, or the model wrote into its input
                torch.index_select(z, 0, layout.row_seq, out=buf)
            cells.scatter_(0, layout.cells[:n], flat[c::calls])
            version = buf._version
            scores = self.ratio(buf if n == rows else buf[:n])
            _check_model_output("ratio", scores, (n,))
            out[c, :n] = scores
            self.stats.ratio_calls += 1
        self.stats.ratio_passes += total
        return out.t().reshape(-1)[:total].view(m, k)


class _SubstitutionLayout:
    """Where :class:`RatioScorer` puts the ``M * K`` substitutions in a buffer of ``rows`` rows over ``calls`` calls
    (candidate ``i`` at row ``i // calls`` of call ``i % calls``), planned once with tensor ops: per row its current
    sequence and substituted cell, and the calls at which rows pass to the next masked position (``M`` events at
    most), grouped by call."""

    def __init__(self, z: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, k: int, width: int):
        m, length = seq.shape[0], z.shape[1]
        total = m * k
        self.calls = -(-total // width)
        self.rows = -(-total // self.calls)
        self.last_row_calls = total - (self.rows - 1) * self.calls  # calls in which the last row holds a candidate
        lanes = torch.arange(self.rows, device=z.device)
        first = lanes * self.calls // k  # the masked position each row starts at
        self.row_seq, self.cells = seq[first], lanes * length + pos[first]
        # events: candidate i = j * K starts masked position j in row i // calls at call i % calls (> 0: not a start)
        start = torch.arange(1, m, device=z.device) * k
        start = start[start % self.calls != 0]
        call = start % self.calls
        order = torch.argsort(call, stable=True)
        start, call = start[order], call[order]
        j = start // k
        self.ev_row, self.ev_seq = start // self.calls, seq[j]
        self.ev_cell = self.ev_row * length + pos[j]
        self.ev_moved = seq[j] != seq[j - 1]  # the row passes to another sequence: copied whole
        self.ev_old_cell = self.ev_row * length + pos[j - 1]  # else the old position's token is put back
        self.ev_old_tok = z[seq[j - 1], pos[j - 1]]
        self.z = z
        at, counts = torch.unique_consecutive(call, return_counts=True)
        ends = counts.cumsum(0).tolist()
        self.events = {c: (e - n, e) for c, n, e in zip(at.tolist(), counts.tolist(), ends)}

    def advance(self, c: int, buf: torch.Tensor | None) -> None:
        """Applies call ``c``'s events to the rows' sequences and cells, and to ``buf`` (``None``: the caller
        rebuilds every row from ``row_seq``)."""
        span = self.events.get(c)
        if span is None:
            return
        s = slice(*span)
        rows = self.ev_row[s]
        self.row_seq[rows] = self.ev_seq[s]
        self.cells[rows] = self.ev_cell[s]
        if buf is None:
            return
        moved = self.ev_moved[s]
        stay = ~moved
        buf.view(-1)[self.ev_old_cell[s][stay]] = self.ev_old_tok[s][stay]
        if bool(moved.any()):
            buf[rows[moved]] = self.z[self.ev_seq[s][moved]]


# ---------------------------------------------------------------------------------------------------------------------
# Ancestral samplers (a time grid of T steps; several positions may be revealed per step)
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class AncestralState:
    """What an ancestral sampler carries from one step of a batch to the next (MDLM's cache, per sequence).

    ``scores``: the denoiser output ``[B, L, V + 1]`` of each sequence's last pass; ``fresh``: bool ``[B]``, the
    sequences whose tokens did not change since that pass (their scores, and the guided candidates below, are
    reused). Guided samplers also keep, per position, the top-``n`` candidates ``cand`` (int64 ``[B, L, n]``), their
    log-probabilities ``cand_logp`` and ratio scores ``rho`` (fp32 ``[B, L, n]``): sparse, never ``[B, L, V]``.
    """

    scores: torch.Tensor | None = None
    fresh: torch.Tensor | None = None
    cand: torch.Tensor | None = None
    cand_logp: torch.Tensor | None = None
    rho: torch.Tensor | None = None


class AncestralSampler:
    """Unguided ancestral sampler of absorbing diffusion with MDLM's cache.

    Steps ``t_i = 1 - i/T``; each step calls ``masked_transition`` with ``stay_prob = m_s / m_t`` (the last step has
    ``s = 0`` and reveals everything). The denoiser is re-run only for sequences whose tokens changed since its last
    pass (MDLM's ``ddpm_cache``, per sequence): under absorbing noise the exact ``x0``-posterior depends on ``z``
    alone, so reusing it is exact for the Bayes-optimal model (a time-conditioned network sees the time of its last
    pass).

    Args:
        denoiser: ``(z [B, L], t [B]) -> [B, L, V + 1]`` log-probabilities (SUBS); a ``scores`` method with the same
            signature returning unnormalized log-probabilities (mask column ``-inf``) is used instead when present.
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

    @torch.inference_mode()
    def __call__(self, n_samples: int, length: int, *, seed: int = 0, batch_size: int = 1024,
                 progress: bool = False, z0: torch.Tensor | None = None,
                 first_index: int = 0) -> tuple[torch.Tensor, SamplerStats]:
        """Generate ``n_samples`` sequences of ``length`` tokens: (int64 ``[n_samples, length]``, stats).

        ``z0``: optional starting tokens int64 ``[n_samples, length]``, ``mask_id`` at the positions to generate;
        the given tokens never change (prompts, infilling). ``first_index``: the global index of the first sequence
        (sequence ``i`` is keyed by ``derive_keys(seed, first_index + i)``): shards of one call draw what the whole
        call would.
        """
        stats = SamplerStats(samples=n_samples, steps=self.steps)
        return _generate(self, n_samples, length, seed, batch_size, progress, stats, z0, first_index)

    @torch.inference_mode()
    def step(self, z: torch.Tensor, i: int, seeds: torch.Tensor, *, logits: torch.Tensor | None = None,
             state: AncestralState | None = None, stats: SamplerStats | None = None
             ) -> tuple[torch.Tensor, SamplerStats]:
        """One reverse step from ``t = 1 - i/T`` to ``s = 1 - (i+1)/T``.

        Args:
            z: int64 ``[B, L]`` current tokens (``mask_id`` = masked).
            i: the step index in ``[0, T)``; it is also the ``offset`` of the draws.
            seeds: int64 ``[B]`` per-sequence keys (e.g. :func:`sequence_seeds`); row ``(b, l)`` draws with
                ``derive_keys(seeds[b], l)``, so a sequence's sample never depends on its batch.
            logits: optional denoiser output for ``z`` at ``t`` (``[B, L, V + 1]``, log-probabilities or scores);
                when given, the denoiser is not called and nothing is cached.
            state: an :class:`AncestralState` carried across the steps of one batch (MDLM's cache); ``None``
                computes everything afresh.
            stats: accumulates pass counts (a new :class:`SamplerStats` when ``None``).
        Returns:
            (int64 ``[B, L]`` next tokens, stats). Unmasked tokens never change.
        """
        stats = stats if stats is not None else SamplerStats(samples=z.shape[0], steps=1)
        kept = state is not None and self.cache and logits is None  # the state outlives this step
        state = state if kept else AncestralState()
        t, s = 1.0 - i / self.steps, 1.0 - (i + 1) / self.steps
        stale = torch.ones(z.shape[0], dtype=torch.bool, device=z.device) if state.fresh is None else ~state.fresh
        if logits is not None:
            _check_model_output("logits", logits, tuple(z.shape), vocab_last=True)
            state.scores = logits
        elif stale.any():
            fresh = _denoise(self.denoiser, z[stale], torch.full((int(stale.sum()),), t, device=z.device),
                             self.mask_id)
            whole = state.scores is None or bool(stale.all())
            state.scores = fresh if whole else state.scores.index_put((stale,), fresh)
            stats.denoiser_passes += int(stale.sum())
            stats.denoiser_calls += 1
        z_new = self._transition(z, i, seeds, state, stale, stats, t, s, kept)
        _check_drawn(z_new, 0, f"{type(self).__name__} step {i}")
        state.fresh = ~(z_new != z).any(1)
        return z_new, stats

    def _transition(self, z, i, seeds, state, stale, stats, t, s, kept):
        return gk.masked_transition(
            z, state.scores, None, 1.0, self.temperature, self.top_k,
            stay_prob=self.schedule.stay_prob(t, s), mask_id=self.mask_id, seeds=seeds, offset=i,
        )

    def _batch(self, z, seeds, first_seq, stats, bar):
        state = AncestralState()
        for i in range(self.steps):
            try:
                z, _ = self.step(z, i, seeds, state=state, stats=stats)
            except RuntimeError as exc:  # name the sequences of the call, not of the batch
                raise RuntimeError(f"{exc} (sequence indices relative to {first_seq})") from None
            if bar is not None:
                bar.update(1)
        return z


class GuidedAncestralSampler(AncestralSampler):
    """GTL guided ancestral sampler: every masked position is guided at every step.

    For a masked position ``l`` with candidates ``v``, the ratio model scores the one-token substitutions
    ``rho_l(v) = r(z[l <- v])``; ``masked_transition`` (candidate path) then draws from
    ``x_theta(z)_v * exp(gamma * rho_l(v))`` renormalized over the candidates (a row constant in ``rho`` cancels),
    keeps only the ``top_k`` guided tokens, and keeps the unguided stay-masked probability ``m_s / m_t``
    (mask-probability preservation: guidance changes which token is revealed, not when).

    The step is sparse: only the masked rows are read for candidates (``topk_log_softmax``), candidate sequences
    are built ``ratio_chunk`` at a time, and the draw takes the ``[M, n]`` candidate scores: no ``[B, L, V]`` tensor
    besides the denoiser's output.

    Args:
        ratio: ``z [B, L] -> [B]`` log-ratio.
        mode: ``"exact"`` scores all ``V`` substitutions of every masked position; ``"topn"`` only the denoiser's
            ``n_ratio`` most likely tokens (the others are dropped).
        gamma: a float or a progress -> gamma callable (:class:`ConstantGamma`, :class:`PiecewiseLinearGamma`).
        top_k: keep the ``top_k`` best tokens after guidance (0 = all; the paper uses 8).
        ratio_chunk: candidate sequences per ratio-model call.
    Candidates and ratio scores are cached per sequence like the denoiser output.
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

    def _candidates(self, scores: torch.Tensor, flat_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates of rows ``flat_rows`` of ``scores`` viewed ``[B * L, V + 1]``: (log-probabilities fp32
        ``[M, n]``, token ids int64 ``[M, n]``)."""
        rows = scores.view(-1, scores.shape[-1])
        vocab = rows.shape[-1]
        if self.mode == "exact":
            ids = torch.arange(vocab, device=rows.device)
            cand = ids[ids != self.mask_id].expand(len(flat_rows), -1)
            return torch.log_softmax(rows[flat_rows].float(), dim=-1).gather(1, cand), cand
        return topn_candidates(rows, flat_rows, min(self.n_ratio, vocab - 1))  # never the mask (its score is -inf)

    def _transition(self, z, i, seeds, state, stale, stats, t, s, kept):
        bsz, length = z.shape
        masked = z == self.mask_id
        todo = masked & stale.unsqueeze(1)  # masked positions of sequences whose candidates are out of date
        seq, pos = todo.nonzero(as_tuple=True)
        current = None  # (cand, cand_logp, rho) of every masked position, row-major, when this step made them all
        if len(seq):
            cand_logp, cand = self._candidates(state.scores, seq * length + pos)
            rho = RatioScorer(self.ratio, self.ratio_chunk, stats)(z, seq, pos, cand)
            rho = _impossible_stay_impossible(rho, cand_logp)
            if torch.equal(todo, masked):
                current = (cand, cand_logp, rho)
            if kept or current is None:  # stored only where a later step, or the gather below, reads them
                if state.cand is None or state.cand.shape[-1] != cand.shape[-1]:
                    width = cand.shape[-1]
                    state.cand = torch.zeros(bsz, length, width, dtype=torch.int64, device=z.device)
                    state.cand_logp = torch.zeros(bsz, length, width, device=z.device)
                    state.rho = torch.zeros(bsz, length, width, device=z.device)
                state.cand[seq, pos], state.cand_logp[seq, pos], state.rho[seq, pos] = cand, cand_logp, rho
        seq, pos = masked.nonzero(as_tuple=True)
        z_new = z.clone()
        if len(seq):
            if current is None:
                current = (state.cand[seq, pos], state.cand_logp[seq, pos], state.rho[seq, pos])
            cand, cand_logp, rho = current
            z_new[seq, pos] = gk.masked_transition(
                z[seq, pos], cand_logp, rho, self.gamma(1.0 - t), self.temperature,
                self.top_k, stay_prob=self.schedule.stay_prob(t, s), mask_id=self.mask_id,
                seeds=_row_keys(seeds, seq, pos), offset=i, index=cand,
            )
        return z_new


_ROW_BLOCK = 256  # rows gathered at a time when only a few rows of a step need candidates


def topn_candidates(rows: torch.Tensor, flat_rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` most likely tokens of rows ``flat_rows`` of ``rows`` (``[N, V]`` scores or log-probabilities):
    (log-probabilities fp32 ``[M, n]``, token ids int64 ``[M, n]``), via ``topk_log_softmax``.

    When at least a quarter of the rows are asked for, every row is read in place (no gathered copy); otherwise the
    asked rows are gathered ``_ROW_BLOCK`` at a time, so the extra memory stays small.
    """
    if 4 * len(flat_rows) >= rows.shape[0]:
        logp, cand = gk.topk_log_softmax(rows, n)
        if len(flat_rows) == rows.shape[0] and torch.equal(flat_rows, torch.arange(len(flat_rows), device=rows.device)):
            return logp, cand  # every row, in order (e.g. an all-masked batch): no gathered copy
        return logp[flat_rows], cand[flat_rows]
    out = [gk.topk_log_softmax(rows[flat_rows[i : i + _ROW_BLOCK]], n) for i in range(0, len(flat_rows), _ROW_BLOCK)]
    if not out:
        return rows.new_empty(0, n, dtype=torch.float32), rows.new_empty(0, n, dtype=torch.int64)
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


# ---------------------------------------------------------------------------------------------------------------------
# The scheduled sampler (one position per sequence per step; L steps)
# ---------------------------------------------------------------------------------------------------------------------


class ScheduledSampler:
    """GTL's efficient sampler: reveal one position per sequence per step, guided with top-``n_ratio`` candidates.

    Each step (exactly ``L`` of them from an all-masked start):

    1. choose a masked position: ``order="planner"`` draws from ``softmax(planner(z) / planner_temperature)`` over
       masked positions; ``"max_prob"``, ``"margin"``, ``"neg_entropy"`` take the masked position where the denoiser
       is most confident (``confidence``); ``"random"`` draws uniformly; ``"left_to_right"`` takes the first
       masked position (every revealed token then has its left neighbour revealed, which suits a local ratio);
    2. the denoiser's ``n_ratio`` most likely tokens there (``topk_log_softmax`` of that row only) become
       candidates, scored by the ratio model on the one-token substitutions, streamed in chunks;
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
                 progress: bool = False, z0: torch.Tensor | None = None,
                 first_index: int = 0) -> tuple[torch.Tensor, SamplerStats]:
        """Generate ``n_samples`` sequences of ``length`` tokens: (int64 ``[n_samples, length]``, stats).

        ``z0``: optional starting tokens int64 ``[n_samples, length]``, ``mask_id`` at the positions to generate;
        the given tokens never change. Then there are as many steps as the most masked positions of a sequence.
        ``first_index``: the global index of the first sequence, as in :meth:`AncestralSampler.__call__`.
        """
        stats = SamplerStats(samples=n_samples, steps=length)
        return _generate(self, n_samples, length, seed, batch_size, progress, stats, z0, first_index)

    def _choose_position(self, z, masked, scores, seeds, step, stats):
        bsz = z.shape[0]
        neg_inf = torch.tensor(-math.inf, device=z.device)
        if self.order == "planner":
            logits = self.planner(z).float()
            _check_model_output("planner", logits, tuple(z.shape))
            stats.planner_passes += bsz
            stats.planner_calls += 1
            temperature = self.planner_temperature
        elif self.order == "random":
            logits, temperature = torch.zeros(z.shape, device=z.device), 1.0
        elif self.order == "left_to_right":  # greedy on -position: the leftmost masked position
            logits = -torch.arange(z.shape[1], device=z.device, dtype=torch.float32).expand(z.shape)
            temperature = 0.0
        else:
            logits, temperature = gk.confidence(scores, kind=self.order)[1], 0.0  # greedy: the most confident
        logits = torch.where(masked, logits, neg_inf)
        keys = gk.derive_keys(seeds.view(-1, 1), torch.full((bsz, 1), _POSITION_CHANNEL, device=z.device)).reshape(-1)
        return gk.sample(logits, temperature=temperature, seeds=keys, offset=step)

    @torch.inference_mode()
    def step(self, z: torch.Tensor, step: int, seeds: torch.Tensor, *, logits: torch.Tensor | None = None,
             stats: SamplerStats | None = None) -> tuple[torch.Tensor, SamplerStats]:
        """Reveal one masked position of every sequence that has one.

        Args:
            z: int64 ``[B, L]`` current tokens (``mask_id`` = masked).
            step: the step index (the ``offset`` of the draws).
            seeds: int64 ``[B]`` per-sequence keys (e.g. :func:`sequence_seeds`).
            logits: optional denoiser output for ``z`` (``[B, L, V + 1]``, log-probabilities or scores); when given
                the denoiser is not called. Only the ``B`` rows at the chosen positions are normalized.
            stats: accumulates pass counts (a new :class:`SamplerStats` when ``None``).
        Returns:
            (int64 ``[B, L]`` next tokens, stats); sequences without a masked position are returned unchanged.
        """
        stats = stats if stats is not None else SamplerStats(samples=z.shape[0], steps=1)
        masked = z == self.mask_id
        n_masked = masked.sum(1)
        if not bool((n_masked > 0).any()):
            return z, stats
        if logits is None:
            logits = _denoise(self.denoiser, z, masked.float().mean(1), self.mask_id)  # masked fraction: no time grid
            stats.denoiser_passes += z.shape[0]
            stats.denoiser_calls += 1
        else:
            _check_model_output("logits", logits, tuple(z.shape), vocab_last=True)
        pos = self._choose_position(z, masked, logits, seeds, step, stats)
        seq = (n_masked > 0).nonzero(as_tuple=True)[0]
        pos = pos[seq]
        _check_drawn(pos, 0, f"position choice at step {step}")
        keys = _row_keys(seeds, seq, pos)
        row = logits[seq, pos]  # [A, V + 1]: the only rows this step normalizes
        if self.ratio is None:
            tok, logprob = gk.sample(row, temperature=self.temperature, top_k=self.top_k, seeds=keys, offset=step,
                                     return_logprob=True)
        else:
            n = min(self.n_ratio, row.shape[-1] - 1)  # the mask token never is a candidate
            cand_logp, cand = gk.topk_log_softmax(row, n)
            rho = _impossible_stay_impossible(RatioScorer(self.ratio, self.ratio_chunk, stats)(z, seq, pos, cand),
                                              cand_logp)
            progress = (z.shape[1] - n_masked[seq]).double() / z.shape[1]  # fraction revealed, per sequence
            gamma = torch.tensor([self.gamma(p) for p in progress.tolist()], device=z.device)
            tok, logprob = gk.sample(cand_logp, rho, gamma, self.temperature, self.top_k, seeds=keys, offset=step,
                                     index=cand, return_logprob=True)
        _check_drawn(tok.view(-1, 1), 0, f"token draw at step {step}")
        stats.tokens_drawn += len(tok)
        stats.token_logprob += float(logprob.double().sum())
        z = z.clone()
        z[seq, pos] = tok
        return z, stats

    def _batch(self, z, seeds, first_seq, stats, bar):
        for step in range(int((z == self.mask_id).sum(1).max())):
            try:
                z, _ = self.step(z, step, seeds, stats=stats)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc} (sequence indices relative to {first_seq})") from None
            if bar is not None:
                bar.update(1)
        return z
