"""Top-p (nucleus) sampling, composed from two ops: :func:`~gtl_kernels.topk_log_softmax` finds each row's kept set
(exact normalized log-probabilities of its best tokens, sorted), :func:`~gtl_kernels.sample` draws over those
candidates. Not an op of its own (KERNEL_SPEC §9, "Top-p"): every backend runs it through its own ops.

The kept set of a row (the rule of Dream's and HF-style samplers): sort the tokens by guided, tempered probability,
descending, ties toward the lower id; token ``j`` (0-based) stays when ``j == 0`` or the probability mass of tokens
``0 .. j - 1`` is at most ``top_p``; then at most ``top_k`` stay. The first pass asks for 64 candidates.

- :func:`nucleus` returns the kept sets: rows whose set does not fit are read again with 8x more candidates, up to
  ``V`` (a peaked row costs one read, a flat one several, the last a full selection).
- :func:`sample_top_p` draws: rows whose set fits in the first 64 candidates draw over them; the others by
  rejection, which never builds their set: a token drawn from the row's whole (top-k restricted) distribution is kept
  when the mass of the tokens ranked before it is at most ``top_p`` (and fewer than ``top_k`` are), else drawn again
  with a fresh key. That is exact (the kept set's distribution, renormalized) and takes ``1 / kept mass`` draws on
  average, fewer than ``1 / top_p``, each a ``sample`` and one pass over the row.
"""

from __future__ import annotations

import numbers

import torch

from . import ops

FIRST_K = 64  # candidates of the first pass
GROWTH = 8  # candidates multiply by this for the rows whose kept set did not fit
MAX_TRIALS = 64  # rejection rounds before the remaining rows build their kept sets (each round keeps > top_p)
_MEMBERSHIP_ROWS = 64  # rows per pass of the membership test (bounds its temporaries)


def _check_top_p(top_p) -> float | None:
    if top_p is None:
        return None
    if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 <= top_p <= 1:
        raise ValueError(f"top_p must be a number in [0, 1] or None, got {top_p!r}")
    return float(top_p)


def _kept(vals: torch.Tensor, top_p: float, k: int, cap: int):
    """``(kept values, -inf elsewhere; kept count; fits)`` of sorted candidate log-probabilities ``[N, k]``: a row
    fits unless its next token (index ``k``) would be kept too and more candidates exist."""
    cum = vals.double().exp().cumsum(-1)
    keep = torch.ones_like(vals, dtype=torch.bool)
    keep[:, 1:] = cum[:, :-1] <= top_p
    fits = ~((cum[:, -1] <= top_p) & (k < cap))
    return torch.where(keep, vals, -torch.inf), keep.sum(-1), fits


def nucleus(logits: torch.Tensor, top_p: float | None, bias=None, gamma=1.0, temperature=1.0, top_k: int = 0, *,
            rows: torch.Tensor | None = None, backend=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept set of each row of ``logits [R, V]`` (or of its rows ``rows``, int64 ``[N]``).

    Args:
        logits, bias, gamma, temperature: the scores ``(logits + gamma * bias) / temperature`` (``temperature > 0``).
        top_p: the nucleus mass (``None`` or 1: no top-p restriction). top_k: at most this many tokens (0: no limit).
        rows: read the scores of these rows only (the first pass reads every row: a window of rows around them can
            cost less than a copy of them).
    Returns:
        fp32 ``[N, K]`` log-probabilities under the unrestricted softmax, sorted descending, ``-inf`` past each row's
        kept count (NaN for invalid rows, as ``topk_log_softmax``), and int64 ``[N, K]`` token ids (0 in invalid
        rows); ``K`` is the largest kept count.
    """
    top_p = _check_top_p(top_p)
    v = logits.shape[-1]
    cap = v if not top_k else min(int(top_k), v)
    use_p = top_p is not None and top_p < 1
    k = min(cap, FIRST_K) if use_p else cap

    def read(src, k):
        b = None if bias is None else (bias if src is None else bias[src])
        z = logits if src is None else logits[src]
        return ops.topk_log_softmax(z, k, b, gamma, temperature, backend=backend)

    vals, ids = read(None, k)
    if rows is not None:
        vals, ids = vals[rows], ids[rows]
    ids = ids.clamp(min=0)  # invalid rows: NaN values; their ids (-1) become a valid id, so sample can take them
    if not use_p:
        return vals, ids
    n = vals.shape[0]
    todo = torch.arange(n, device=logits.device)
    parts = []
    while True:
        kept, count, fits = _kept(vals, top_p, k, cap)
        parts.append((todo[fits], kept[fits], ids[fits], count[fits]))
        more = ~fits
        if not bool(more.any()):
            break
        todo, k = todo[more], min(cap, k * GROWTH)
        vals, ids = read(todo if rows is None else rows[todo], k)
        ids = ids.clamp(min=0)
    width = max(int(count.max()) for _, _, _, count in parts if count.numel()) if n else 1
    out_v = torch.full((n, width), -torch.inf, dtype=torch.float32, device=logits.device)
    out_i = torch.zeros((n, width), dtype=torch.int64, device=logits.device)
    for r, pv, pi, _ in parts:
        w = min(width, pv.shape[1])
        out_v[r, :w], out_i[r, :w] = pv[:, :w], pi[:, :w]
    return out_v, out_i


def sample_top_p(logits: torch.Tensor, top_p: float | None, bias=None, gamma: float = 1.0, temperature: float = 1.0,
                 top_k: int = 0, *, seeds=None, offset=0, return_logprob: bool = False, backend=None):
    """One draw per row from the kept set of :func:`nucleus`, renormalized (exact).

    Args:
        logits: fp32/bf16/fp16 ``[N, V]`` or ``[B, L, V]``; bias: optional, the shape of ``logits``.
        gamma, temperature: numbers (``temperature == 0`` is greedy: the argmax, whatever ``top_p``).
        top_k: as in :func:`~gtl_kernels.sample` (0: no limit).
        top_p: the nucleus mass in ``[0, 1]`` (0 keeps the best token only; ``None`` or 1: no restriction).
        seeds, offset: as in :func:`~gtl_kernels.sample` (one key per row; a row's draw depends only on its scores,
            its key and ``offset``, never on the batch).
        return_logprob: also return the log-probability of each drawn token under the renormalized kept set (its
            rows then all build their kept sets: no rejection).
    Returns:
        int64 of the leading shape (-1 for invalid rows), and with ``return_logprob`` float32 of that shape.
    """
    top_p = _check_top_p(top_p)
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (2, 3):
        raise ValueError(f"logits must be a tensor [N, V] or [B, L, V], got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    if logits.dim() == 3:  # rows of [B, L, V], keyed as sample keys them (per-sequence seeds included)
        lead = logits.shape[:-1]
        if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != logits.shape):
            raise ValueError(f"bias must have the logits' shape {tuple(logits.shape)}")
        keys = ops._row_keys(seeds, lead, logits.device).reshape(-1)
        out = sample_top_p(logits.reshape(-1, logits.shape[-1]), top_p,
                           None if bias is None else bias.reshape(-1, bias.shape[-1]), gamma, temperature, top_k,
                           seeds=keys, offset=offset, return_logprob=return_logprob, backend=backend)
        return tuple(t.reshape(lead) for t in out) if return_logprob else out.reshape(lead)
    for name, value in (("gamma", gamma), ("temperature", temperature)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number here, got {type(value).__name__}")
    if temperature == 0 or top_p is None or top_p >= 1:
        return ops.sample(logits, bias, gamma, temperature, top_k, seeds=seeds, offset=offset,
                          return_logprob=return_logprob, backend=backend)
    keys = ops._row_keys(seeds, logits.shape[:-1], logits.device)
    if return_logprob:
        vals, ids = nucleus(logits, top_p, bias, gamma, temperature, top_k, backend=backend)
        return ops.sample(vals, seeds=keys, offset=offset, index=ids, return_logprob=True, backend=backend)
    n, v = logits.shape
    cap = v if not top_k else min(int(top_k), v)
    k = min(cap, FIRST_K)
    vals, ids = ops.topk_log_softmax(logits, k, bias, gamma, temperature, backend=backend)
    kept, _, fits = _kept(vals, top_p, k, cap)
    tokens = ops.sample(kept, seeds=keys, offset=offset, index=ids.clamp(min=0), backend=backend)
    pending = (~fits).nonzero()[:, 0]
    # log of each pending row's whole mass (its unrestricted softmax's sum), once: it does not change between rounds
    log_all = torch.empty(n, dtype=torch.float64, device=logits.device)
    if pending.numel():
        log_all[pending] = _log_mass(logits[pending], None if bias is None else bias[pending], gamma, temperature,
                                     None, backend)
    trial = 0
    while pending.numel() and trial < MAX_TRIALS:
        z = logits[pending]
        b = None if bias is None else bias[pending]
        trial_keys = keys[pending] if trial == 0 else ops.derive_keys(keys[pending], torch.full_like(pending, trial))
        x = ops.sample(z, b, gamma, temperature, top_k, seeds=trial_keys, offset=offset, backend=backend)
        accept = _in_kept_set(z, b, gamma, temperature, x, top_p, log_all[pending], backend)
        tokens[pending[accept]] = x[accept]
        pending, trial = pending[~accept], trial + 1
    if pending.numel():  # a very unlucky row: build its set (exact either way)
        vals, ids = nucleus(logits, top_p, bias, gamma, temperature, top_k, rows=pending, backend=backend)
        tokens[pending] = ops.sample(vals, seeds=keys[pending], offset=offset, index=ids, backend=backend)
    return tokens


def _log_mass(z, bias, gamma, temperature, allowed, backend=None) -> torch.Tensor:
    """float64 ``[R]``: the log of each row's sum of ``exp((z + gamma * bias) / T)`` over its tokens, or over the
    tokens where ``allowed`` (bool ``[R, V]``) holds (``-inf`` where none does), from ``sample``'s log-probability of
    a draw: ``log sum = s_y / T - logprob(y)``."""
    g = gamma if bias is not None else 0.0
    if allowed is not None:  # the other tokens get a bias of -inf
        bias = torch.where(allowed, 0.0 if bias is None else g * bias.float(), -torch.inf)
        g = 1.0
    keys = torch.zeros(z.shape[0], dtype=torch.int64, device=z.device)  # any: only the log-probabilities count
    y, lp = ops.sample(z, bias, g, temperature, seeds=keys, return_logprob=True, backend=backend)
    at = y.clamp(min=0).unsqueeze(-1)
    s_y = z.gather(-1, at)[:, 0].float() + (0.0 if bias is None else g * bias.gather(-1, at)[:, 0].float())
    return torch.where(y >= 0, (s_y / temperature).double() - lp.double(), -torch.inf)


def _in_kept_set(z, bias, gamma, temperature, x, top_p, log_all, backend=None) -> torch.Tensor:
    """bool ``[R]``: is token ``x[r]`` (>= 0) in the top-p set of row ``r`` of the scores, i.e. is the mass of the
    tokens ranked before it (higher score, or equal score and lower id) at most ``top_p``? (The top-k limit holds
    already: ``x`` was drawn from the top-k restricted distribution, whose tokens come first in the same order.)
    ``log_all``: float64 ``[R]``, each row's :func:`_log_mass`; the mass before ``x`` comes from the same function
    over the tokens ranked before it (in blocks of rows, which bound the mask's size)."""
    out = torch.zeros(x.shape, dtype=torch.bool, device=z.device)
    ids = torch.arange(z.shape[1], device=z.device)
    for lo in range(0, z.shape[0], _MEMBERSHIP_ROWS):
        hi = min(lo + _MEMBERSHIP_ROWS, z.shape[0])
        zb, xb = z[lo:hi], x[lo:hi].clamp(min=0).unsqueeze(-1)
        b = None if bias is None else bias[lo:hi]
        s = zb if b is None else zb.float() + gamma * b.float()  # the order of the scores
        sx = s.gather(-1, xb)
        before = s > sx
        ties = (s == sx).sum(-1) > 1
        if bool(ties.any()):  # equal scores rank by id
            before[ties] |= (s[ties] == sx[ties]) & (ids < xb[ties])
        log_before = _log_mass(zb, b, gamma, temperature, before, backend)
        out[lo:hi] = ((log_before - log_all[lo:hi]).exp() <= top_p) & (x[lo:hi] >= 0)
    return out
