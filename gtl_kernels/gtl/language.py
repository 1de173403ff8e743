"""A synthetic "language" with an exact ground truth: two sparse first-order Markov chains over a large vocabulary.

The *source* chain gives every token ``u`` a successor set ``S(u)`` of ``n_successors`` tokens (drawn from a Zipf
unigram, so frequent words are frequent successors) with Zipf weights inside the set. The *target* chain keeps
``S(u)`` but reweights it like a topic shift (successors of the boosted topic get ``topic_boost`` times the weight)
and moves ``1 - overlap`` of its mass to ``n_target_only`` target-only successors ``T(u)``. Both chains mix in
``background`` mass on the unigram, so every token has positive probability under both (as under a softmax language
model) and every log-ratio is finite; a target-only successor is only a background token for the source, so the
source ranks it far down (a top-``n`` candidate set finds it only for large ``n``). The first token follows the
unigram (source) or the topic-reweighted unigram (target).

Exact oracles for a left-to-right reveal (:class:`LeftToRightDenoiser`, :class:`LeftToRightRatio`): the exact source
conditional of the leftmost masked position is the source row of its left neighbour, and the exact log-ratio of a
one-token substitution at that position, up to a constant of the row, is ``log q(v | prev) - log p(v | prev)``.
Neither enumerates ``V`` per candidate.

Shapes: token ids are int64; rows are stored sparse (``[V, K]`` ids and probabilities), dense rows ``[n, V]`` are
built only for the rows asked for.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

__all__ = [
    "LanguageConfig",
    "MarkovLanguage",
    "make_language",
    "LeftToRightDenoiser",
    "LeftToRightRatio",
    "sampler_conditional",
    "CHAINS",
]

CHAINS = ("source", "target")


@dataclasses.dataclass(frozen=True)
class LanguageConfig:
    """Parameters of :func:`make_language` (defaults: the ``gtl-language`` experiment)."""

    vocab: int = 30522
    n_successors: int = 32  # |S(u)|: successors shared by both chains
    n_target_only: int = 8  # |T(u)|: successors of the target only
    overlap: float = 0.8  # target mass on the shared successors (the rest on T(u))
    successor_zipf: float = 1.1  # weight of the j-th successor ~ j ** -successor_zipf
    unigram_zipf: float = 1.0  # unigram weight of the token of rank r ~ r ** -unigram_zipf
    background: float = 0.01  # mass of the unigram background in every row of both chains
    n_topics: int = 8
    topic_boost: float = 4.0  # target reweighting of successors in topic 0
    seed: int = 0

    def __post_init__(self):
        if self.vocab < self.n_successors + self.n_target_only + 1:
            raise ValueError(f"vocab must exceed n_successors + n_target_only, got vocab={self.vocab}")
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"overlap must be in [0, 1], got {self.overlap}")
        if not 0.0 < self.background < 1.0:
            raise ValueError(f"background must be in (0, 1), got {self.background}")


class MarkovLanguage:
    """Source and target chains in sparse form.

    Args (all CPU tensors):
        log_unigram: fp64 ``[V]`` background distribution (log).
        log_init: dict chain -> fp64 ``[V]`` first-token distribution (log).
        succ: dict chain -> int64 ``[V, K]`` successor ids of every token (no repeats within a row).
        succ_prob: dict chain -> fp64 ``[V, K]`` their probabilities before mixing (each row sums to 1).
        target_only: int64 ``[V, K_t]`` the target-only successors ``T(u)`` (``K_t`` may be 0).
        background: the unigram mass mixed into every row: ``row = (1 - b) * sparse + b * unigram``.
    """

    def __init__(self, log_unigram, log_init, succ, succ_prob, target_only, background: float):
        self.vocab = int(log_unigram.shape[0])
        self.log_unigram, self.log_init = log_unigram.double(), {c: log_init[c].double() for c in CHAINS}
        self.succ, self.succ_prob = dict(succ), {c: succ_prob[c].double() for c in CHAINS}
        self.target_only, self.background = target_only, float(background)
        for c in CHAINS:
            if self.succ[c].shape != self.succ_prob[c].shape or self.succ[c].shape[0] != self.vocab:
                raise ValueError(f"succ[{c!r}] and succ_prob[{c!r}] must both be [V, K] with V = {self.vocab}")

    def _check_chain(self, chain: str) -> None:
        if chain not in CHAINS:
            raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")

    def log_transition(self, chain: str, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        """``log P(nxt | prev)`` under ``chain``: fp64, the shape of ``prev`` (int64, same shape as ``nxt``)."""
        self._check_chain(chain)
        shape = prev.shape
        prev, nxt = prev.reshape(-1), nxt.reshape(-1)
        hit = self.succ[chain][prev] == nxt.unsqueeze(1)  # [n, K]
        sparse = (self.succ_prob[chain][prev] * hit).sum(1)
        mixed = (1.0 - self.background) * sparse + self.background * self.log_unigram[nxt].exp()
        return mixed.log().view(shape)

    def log_rows(self, chain: str, prev: torch.Tensor) -> torch.Tensor:
        """Dense rows ``log P(. | prev)``: fp64 ``[n, V]`` for int64 ``prev [n]``."""
        self._check_chain(chain)
        rows = (self.background * self.log_unigram.exp()).expand(len(prev), -1).clone()
        rows.scatter_add_(1, self.succ[chain][prev], (1.0 - self.background) * self.succ_prob[chain][prev])
        return rows.log()

    def log_first(self, chain: str, n: int) -> torch.Tensor:
        """The first-token distribution repeated: fp64 ``[n, V]``."""
        self._check_chain(chain)
        return self.log_init[chain].expand(n, -1)

    def log_likelihood(self, chain: str, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log P(x)`` of sequences ``x`` int64 ``[N, L]`` under ``chain``: fp64 ``[N]``."""
        self._check_chain(chain)
        if x.dim() != 2 or x.dtype != torch.int64:
            raise ValueError(f"x must be int64 [N, L], got {x.dtype} {tuple(x.shape)}")
        if len(x) and (int(x.min()) < 0 or int(x.max()) >= self.vocab):
            raise ValueError(f"x must hold token ids in [0, {self.vocab}), got range [{int(x.min())}, {int(x.max())}]")
        out = self.log_init[chain][x[:, 0]]
        if x.shape[1] > 1:
            out = out + self.log_transition(chain, x[:, :-1], x[:, 1:]).sum(1)
        return out

    def sample(self, chain: str, n: int, length: int, seed: int = 0) -> torch.Tensor:
        """``n`` sequences of ``length`` tokens drawn from ``chain`` itself (torch's generator): int64 ``[n, L]``."""
        g = torch.Generator().manual_seed(seed)
        x = torch.empty(n, length, dtype=torch.int64)
        x[:, 0] = torch.multinomial(self.log_first(chain, n).exp(), 1, generator=g).view(-1)
        for l in range(1, length):
            x[:, l] = torch.multinomial(self.log_rows(chain, x[:, l - 1]).exp(), 1, generator=g).view(-1)
        return x

    def sample_sparse(self, chain: str, n: int, length: int, seed: int = 0) -> torch.Tensor:
        """The law of :meth:`sample` without dense ``[n, V]`` rows (another stream of random numbers): each
        transition is a background draw from the unigram with probability ``background``, else a draw from the
        sparse successor row. Cost ``O(n * L * K)``: training sets of many sequences at ``V = 30522``. int64
        ``[n, L]``."""
        self._check_chain(chain)
        g = torch.Generator().manual_seed(seed)
        x = torch.empty(n, length, dtype=torch.int64)
        if n == 0 or length == 0:
            return x
        x[:, 0] = torch.multinomial(self.log_init[chain].exp(), n, replacement=True, generator=g)
        unigram = self.log_unigram.exp()
        for l in range(1, length):
            prev = x[:, l - 1]
            col = torch.multinomial(self.succ_prob[chain][prev], 1, generator=g).view(-1)
            nxt = self.succ[chain][prev, col]
            bg = torch.rand(n, generator=g, dtype=torch.float64) < self.background
            if bool(bg.any()):
                nxt[bg] = torch.multinomial(unigram, int(bg.sum()), replacement=True, generator=g)
            x[:, l] = nxt
        return x

    def target_only_share(self, x: torch.Tensor) -> float:
        """Share of the transitions of ``x`` (int64 ``[N, L]``) whose next token is a target-only successor."""
        if x.shape[1] < 2 or self.target_only.shape[1] == 0:
            return 0.0
        hit = (self.target_only[x[:, :-1]] == x[:, 1:].unsqueeze(-1)).any(-1)
        return float(hit.double().mean())


def _zipf(n: int, s: float) -> torch.Tensor:
    w = torch.arange(1, n + 1, dtype=torch.float64) ** -s
    return w / w.sum()


def _distinct_draws(probs: torch.Tensor, rows: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``k`` distinct tokens per row drawn without replacement from ``probs`` ``[V]``: int64 ``[rows, k]``.

    Draws with replacement and keeps first occurrences in draw order, which is the law of successive draws without
    replacement; rows short of ``k`` distinct tokens are drawn again with more draws.
    """
    out = torch.empty(rows, k, dtype=torch.int64)
    todo = torch.arange(rows)
    draws = 4 * k
    while len(todo):
        d = torch.multinomial(probs, len(todo) * draws, replacement=True, generator=g).view(len(todo), draws)
        srt, order = d.sort(dim=1, stable=True)
        dup_sorted = torch.zeros_like(srt, dtype=torch.bool)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        dup = torch.empty_like(dup_sorted).scatter_(1, order, dup_sorted)  # duplicate of an earlier draw
        rank = (~dup).cumsum(1) - 1
        ok = (~dup).sum(1) >= k
        keep = (~dup) & (rank < k)
        rows_ok = ok.nonzero(as_tuple=True)[0]
        out[todo[rows_ok]] = d[rows_ok][keep[rows_ok]].view(-1, k)
        todo, draws = todo[~ok], 2 * draws
    return out


def make_language(cfg: LanguageConfig = LanguageConfig()) -> MarkovLanguage:
    """The source and target chains of ``cfg`` (deterministic in ``cfg.seed``)."""
    g = torch.Generator().manual_seed(cfg.seed)
    v = cfg.vocab
    unigram = torch.empty(v, dtype=torch.float64)
    unigram[torch.randperm(v, generator=g)] = _zipf(v, cfg.unigram_zipf)  # token ids carry no rank
    topic = torch.randint(cfg.n_topics, (v,), generator=g)
    boost = torch.where(topic == 0, cfg.topic_boost, 1.0).double()

    drawn = _distinct_draws(unigram, v, cfg.n_successors + cfg.n_target_only, g)
    shared, target_only = drawn[:, : cfg.n_successors], drawn[:, cfg.n_successors :]
    w_src = _zipf(cfg.n_successors, cfg.successor_zipf).expand(v, -1)
    w_tgt = w_src * boost[shared]
    w_tgt = cfg.overlap * w_tgt / w_tgt.sum(1, keepdim=True)
    if cfg.n_target_only:
        w_only = (1.0 - cfg.overlap) * _zipf(cfg.n_target_only, cfg.successor_zipf).expand(v, -1)
    else:
        w_tgt, w_only = w_tgt / cfg.overlap, torch.empty(v, 0, dtype=torch.float64)
    init_tgt = unigram * boost
    return MarkovLanguage(
        log_unigram=unigram.log(),
        log_init={"source": unigram.log(), "target": (init_tgt / init_tgt.sum()).log()},
        succ={"source": shared.contiguous(), "target": torch.cat([shared, target_only], 1)},
        succ_prob={"source": w_src.contiguous(), "target": torch.cat([w_tgt, w_only], 1)},
        target_only=target_only.contiguous(),
        background=cfg.background,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Exact oracles for a left-to-right reveal
# ---------------------------------------------------------------------------------------------------------------------


def _revealed_prefix(z: torch.Tensor, mask_id: int, who: str) -> torch.Tensor:
    """Number of revealed tokens of each row of ``z`` int64 ``[n, L]``, checking they form a prefix (the only
    states a left-to-right reveal visits; the oracles are exact only there): int64 ``[n]``."""
    revealed = z != mask_id
    count = revealed.sum(1)
    prefix = torch.arange(z.shape[1], device=z.device).unsqueeze(0) < count.unsqueeze(1)
    if not torch.equal(revealed, prefix):
        raise ValueError(f"{who}: the revealed tokens must form a prefix (use order='left_to_right')")
    return count


class LeftToRightDenoiser:
    """Exact source denoiser for a left-to-right reveal: ``(z [B, L], t [B]) -> [B, L, V + 1]`` fp32 log-probs.

    The row of the leftmost masked position is the exact source conditional (the first-token distribution at
    position 0, else the source row of its left neighbour), mask column ``-inf``. To stay cheap at ``V = 30522`` the
    output is that ``[B, 1, V + 1]`` row broadcast over ``L`` (a stride-0 view): only the leftmost masked position's
    row is exact, which is the only row a left-to-right scheduled sampler reads. Do not use it with other orders or
    samplers. ``calls`` counts invocations, ``seconds`` their wall time.
    """

    def __init__(self, lang: MarkovLanguage, chain: str = "source"):
        lang._check_chain(chain)
        self.lang, self.chain, self.mask_id = lang, chain, lang.vocab
        self.calls, self.seconds = 0, 0.0

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self._rows(z)
        self.calls, self.seconds = self.calls + 1, self.seconds + time.perf_counter() - t0
        return out

    def _rows(self, z: torch.Tensor) -> torch.Tensor:
        count = _revealed_prefix(z, self.mask_id, type(self).__name__)
        if bool((count >= z.shape[1]).any()):
            raise ValueError(f"{type(self).__name__}: every sequence needs a masked position")
        bsz = z.shape[0]
        rows = torch.empty(bsz, self.lang.vocab + 1, dtype=torch.float32)
        rows[:, -1] = -math.inf
        first = count == 0
        if bool(first.any()):
            rows[first, :-1] = self.lang.log_first(self.chain, int(first.sum())).float()
        rest = (~first).nonzero(as_tuple=True)[0]
        if len(rest):
            prev = z[rest, count[rest] - 1]
            rows[rest, :-1] = self.lang.log_rows(self.chain, prev).float()
        return rows.unsqueeze(1).expand(bsz, z.shape[1], -1)


class LeftToRightRatio:
    """Exact log-ratio of one-token substitutions for a left-to-right reveal: ``z [n, L] -> [n]`` fp32.

    For a revealed prefix ``x[0..c-1]`` (masks after it), ``log q(x) - log p(x)`` differs between siblings (same
    prefix but the last token ``v``) only by ``log q(v | x[c-2]) - log p(v | x[c-2])`` (first-token distributions when
    ``c = 1``): that is returned, exact up to a constant per row of candidates, which guidance cancels. Cost per
    candidate: one pass over ``L`` (the prefix check) and two sparse-row lookups, never ``V``.
    """

    def __init__(self, lang: MarkovLanguage):
        self.lang, self.mask_id = lang, lang.vocab
        self.calls, self.seconds = 0, 0.0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self._timed(self._log_ratio, z)

    def score_substitutions(self, z: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor,
                            cand: torch.Tensor) -> torch.Tensor:
        """The same scores for ``z[seq[m]]`` with position ``pos[m]`` set to ``cand[m, k]``, without building those
        sequences (``RatioScorer``'s substitution-aware protocol): fp32 ``[M, K]``. Each substituted sequence must
        still be a revealed prefix ending at ``pos``."""
        return self._timed(self._substitution_log_ratio, z, seq, pos, cand)

    def _timed(self, fn, *args) -> torch.Tensor:
        t0 = time.perf_counter()
        out = fn(*args)
        self.calls, self.seconds = self.calls + 1, self.seconds + time.perf_counter() - t0
        return out

    def _log_ratio(self, z: torch.Tensor) -> torch.Tensor:
        count = _revealed_prefix(z, self.mask_id, type(self).__name__)
        if bool((count == 0).any()):
            raise ValueError(f"{type(self).__name__}: every candidate needs a revealed token")
        idx = torch.arange(len(z))
        last = count - 1
        return self._log_ratio_of_last(z[idx, (last - 1).clamp(min=0)], z[idx, last], last == 0).float()

    def _substitution_log_ratio(self, z, seq, pos, cand) -> torch.Tensor:
        idx = torch.arange(len(seq))
        rows = z[seq]  # a copy: a revealed token at ``pos`` makes each row its substituted sequences' mask pattern
        rows[idx, pos] = 0
        if not torch.equal(_revealed_prefix(rows, self.mask_id, type(self).__name__), pos + 1):
            raise ValueError(f"{type(self).__name__}: the substituted position must end the revealed prefix (use "
                             f"order='left_to_right')")
        k = cand.shape[1]
        prev = rows[idx, (pos - 1).clamp(min=0)].repeat_interleave(k)
        return self._log_ratio_of_last(prev, cand.reshape(-1), (pos == 0).repeat_interleave(k)).view(-1, k).float()

    def _log_ratio_of_last(self, prev: torch.Tensor, v: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """What a revealed prefix ending in token ``v`` (after ``prev``; ``first``: ``v`` is the first token and
        ``prev`` is not read) adds to ``log q - log p``: fp64 ``[n]``."""
        out = torch.empty(len(v), dtype=torch.float64)
        out[first] = self.lang.log_init["target"][v[first]] - self.lang.log_init["source"][v[first]]
        rest = ~first
        out[rest] = self._log_ratio_pairs(prev[rest], v[rest])
        return out

    def _log_ratio_pairs(self, prev: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``log q(v | prev) - log p(v | prev)``: fp64 ``[n]``. Candidates of one row share ``prev``: when there are
        few distinct ``prev`` for many candidates, dense rows of the distinct ones are cheaper than sparse lookups."""
        uniq, inv = prev.unique(return_inverse=True)
        if len(uniq) * self.lang.vocab <= 4 * len(prev) * self.lang.succ["target"].shape[1]:
            rows = self.lang.log_rows("target", uniq) - self.lang.log_rows("source", uniq)
            return rows[inv, v]
        return self.lang.log_transition("target", prev, v) - self.lang.log_transition("source", prev, v)


def sampler_conditional(lang: MarkovLanguage, prev: torch.Tensor | None, n: int, *, n_ratio: int | None,
                        top_k: int = 0, gamma: float = 1.0) -> torch.Tensor:
    """The law a left-to-right scheduled sampler draws a token from, given the exact oracles: fp64 ``[n, V]`` log.

    ``prev``: int64 ``[n]`` left neighbours, or ``None`` for the first position. The source row's ``n_ratio`` most
    likely tokens (``None``: all) are reweighted by ``exp(gamma * (log q - log p))``, the ``top_k`` best kept
    (0 = all), renormalized; the rest get ``-inf``. Ties at a cut are broken arbitrarily (the kernels may differ on
    exact ties). With ``n_ratio=None, top_k=0, gamma=1`` it is the target row.
    """
    logp = lang.log_first("source", n) if prev is None else lang.log_rows("source", prev)
    logq = lang.log_first("target", n) if prev is None else lang.log_rows("target", prev)
    guided = logp + gamma * (logq - logp)
    if n_ratio is not None and n_ratio < lang.vocab:
        keep = torch.zeros_like(guided, dtype=torch.bool).scatter_(1, logp.topk(n_ratio, dim=1).indices, True)
        guided = guided.masked_fill(~keep, -math.inf)
    if top_k and top_k < lang.vocab:
        kth = guided.topk(top_k, dim=1).values[:, -1:]
        guided = guided.masked_fill(guided < kth, -math.inf)
    return torch.log_softmax(guided, dim=1)
