"""The PyTorch reference backend: the oracle every other backend is tested against.

Plain, vectorized PyTorch that mirrors KERNEL_SPEC.md; scores and probabilities are computed in float64. The functions
here take *normalized* arguments (what the public wrappers in ``gtl_kernels.ops`` pass to every backend):

    logits   float tensor [N, V] (fp32, bf16 or fp16), any device
    bias     None or float tensor [N, V]
    gamma, temperature, stay_prob   float32 [N]
    seeds    int64 [N] (per-row Philox keys),   offset   int64 scalar tensor
    index    None or int64 [N, K] (candidate path of ``sample`` and ``masked_transition``; then V == K)

Randomness (KERNEL_SPEC §3) is Philox4x32-10 keyed by the row's seed, with counter
``(a, offset_lo, offset_hi, stream)``; ``a`` is a token id (stream 0), 0 for the stay decision (stream 1) or a chunk
index (stream 2). 32-bit words are held in int64 tensors so that everything runs on any device without unsigned types.
"""

from __future__ import annotations

import math

import torch

CHUNK = 1024  # tokens per chunk of the two-level race; part of the contract (KERNEL_SPEC §3)
STREAM_TOKEN, STREAM_STAY, STREAM_CHUNK, STREAM_KEY = 0, 1, 2, 3

_M32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_LN2 = math.log(2.0)
CONFIDENCE_KINDS = ("max_prob", "margin", "neg_entropy")  # the planner scores of `confidence` (one list)


# ---------------------------------------------------------------------------------------------------------------------
# Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"; the Random123 algorithm)
# ---------------------------------------------------------------------------------------------------------------------


def _mulhilo32(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of the 64-bit product of uint32 values ``a`` (held in int64) and the constant ``m``.

    The product is split over 16-bit halves of ``m`` so no intermediate leaves the int64 range.
    """
    p_lo = a * (m & 0xFFFF)  # < 2**48
    p_hi = a * (m >> 16)  # < 2**48
    t = p_lo + ((p_hi & 0xFFFF) << 16)
    return (t >> 32) + (p_hi >> 16), t & _M32


def philox4x32(key: torch.Tensor, counter: torch.Tensor, rounds: int = 10) -> torch.Tensor:
    """Philox4x32 with ``rounds`` rounds (10 is the standard and the contract).

    Args:
        key: int64 ``[...]``; the low 32 bits are key word 0, the high 32 bits key word 1 (two's complement).
        counter: int64 ``[..., 4]`` holding four uint32 counter words (broadcastable against ``key[..., None]``).
    Returns:
        int64 ``[..., 4]``: the four uint32 output words.
    """
    counter, key = torch.broadcast_tensors(counter.to(torch.int64), key.unsqueeze(-1))
    shape = counter.shape
    counter, key = counter.reshape(-1, 4), key[..., 0].reshape(-1)
    # Blocks that stay in cache: the ~250 elementwise passes of the rounds are memory-bound otherwise.
    blocks = [
        _philox_block(key[i : i + _PHILOX_BLOCK], counter[i : i + _PHILOX_BLOCK], rounds)
        for i in range(0, key.numel(), _PHILOX_BLOCK)
    ]
    return (torch.cat(blocks) if blocks else counter.clone()).view(shape)


_PHILOX_BLOCK = 16384


def _philox_block(key: torch.Tensor, counter: torch.Tensor, rounds: int) -> torch.Tensor:
    k0 = key & _M32
    k1 = (key >> 32) & _M32
    c0, c1, c2, c3 = (counter & _M32).unbind(-1)
    for i in range(rounds):
        if i:
            k0 = (k0 + _PHILOX_W0) & _M32
            k1 = (k1 + _PHILOX_W1) & _M32
        hi0, lo0 = _mulhilo32(c0, _PHILOX_M0)
        hi1, lo1 = _mulhilo32(c2, _PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack((c0, c1, c2, c3), dim=-1)


def _counter(a: torch.Tensor, offset: torch.Tensor, stream: int) -> torch.Tensor:
    """Counter words ``(a, offset_lo, offset_hi, stream)`` for every element of ``a`` (int64)."""
    offset = offset.to(device=a.device, dtype=torch.int64)
    lo = torch.broadcast_to(offset & _M32, a.shape)
    hi = torch.broadcast_to((offset >> 32) & _M32, a.shape)
    return torch.stack((a, lo, hi, torch.full_like(a, stream)), dim=-1)


def random_bits64(seeds: torch.Tensor, a: torch.Tensor, offset: torch.Tensor, stream: int) -> tuple[torch.Tensor, ...]:
    """The 64-bit random integer ``x = (w0 << 32) | w1`` of counter ``(a, offset, stream)``, as ``(w0, w1)``.

    ``seeds`` int64 ``[N]``, ``a`` int64 ``[N, M]`` -> two int64 ``[N, M]`` tensors of uint32 words.
    """
    words = philox4x32(seeds.unsqueeze(-1).expand(a.shape), _counter(a, offset, stream))
    return words[..., 0], words[..., 1]


def uniform64(seeds: torch.Tensor, a: torch.Tensor, offset: torch.Tensor, stream: int) -> torch.Tensor:
    """``U = (x + 0.5) / 2**64`` in float64 for the 64-bit Philox integer ``x`` (KERNEL_SPEC §3); shape of ``a``.

    Never 0 and never 1; float64 rounds ``U`` near 1 (use :func:`exponential64` for ``-ln U``).
    """
    w0, w1 = random_bits64(seeds, a, offset, stream)
    return (w0.double() * 2.0**32 + w1.double() + 0.5) * 2.0**-64


def exponential64(seeds: torch.Tensor, a: torch.Tensor, offset: torch.Tensor, stream: int) -> torch.Tensor:
    """``E = -ln U`` in float64 for counter ``(a, offset, stream)``; shape of ``a`` (see :func:`exponential_from_bits`)."""
    return exponential_from_bits(*random_bits64(seeds, a, offset, stream))


def exponential_from_bits(w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """``E = -ln U``, ``U = (x + 0.5) / 2**64``, ``x = (w0 << 32) | w1``, with small relative error over the whole
    range (KERNEL_SPEC §3).

    For ``U <= 1/2`` (top bit clear): ``E = 64 ln 2 - ln(x + 0.5)``. For ``U > 1/2`` the complement
    ``1 - U = (~x + 0.5) / 2**64`` is exact in integers and ``E = -log1p(-(1 - U))``. The largest value is
    ``64 ln 2 - ln 0.5 ~= 45.05``, so tokens ~44 nats below the row maximum are still drawn at their rate.
    """
    low_half = w0 < 2**31
    x = w0.double() * 2.0**32 + w1.double() + 0.5
    x_complement = (_M32 - w0).double() * 2.0**32 + (_M32 - w1).double() + 0.5
    e_low = 64.0 * _LN2 - torch.log(x)
    e_high = -torch.log1p(-x_complement * 2.0**-64)
    return torch.where(low_half, e_low, e_high)


def derive_keys(seeds: torch.Tensor, positions: torch.Tensor, philox=None) -> torch.Tensor:
    """Row keys from sequence seeds and positions: the documented 64-bit mixing function (KERNEL_SPEC §3).

    ``key = (w0 << 32) | w1`` of Philox4x32-10 keyed by the sequence seed at counter
    ``(pos_lo, pos_hi, 0, STREAM_KEY)``. Philox is a keyed bijection of the counter, so distinct positions of one
    sequence get distinct keys, and a key depends only on ``(seed, position)``, never on a batch.

    Args:
        seeds: int64 ``[...]`` sequence seeds.
        positions: int64, broadcastable against ``seeds``.
        philox: the Philox4x32-10 to use, ``(key, counter) -> words`` (default :func:`philox4x32`; a backend's
            native ``gtl::philox``, bit-identical, is faster).
    Returns:
        int64 keys of the broadcast shape (two's complement of the 64-bit key).
    """
    seeds, positions = torch.broadcast_tensors(seeds.to(torch.int64), positions.to(torch.int64))
    ctr = torch.stack(
        (positions & _M32, (positions >> 32) & _M32, torch.zeros_like(positions), torch.full_like(positions, STREAM_KEY)),
        dim=-1,
    )
    w = (philox or philox4x32)(seeds, ctr)
    hi = torch.where(w[..., 0] >= 2**31, w[..., 0] - 2**32, w[..., 0])  # reinterpret the top word as signed
    return (hi << 32) | w[..., 1]


# ---------------------------------------------------------------------------------------------------------------------
# Scores (KERNEL_SPEC §1) and the allowed set (§3)
# ---------------------------------------------------------------------------------------------------------------------


def guided_scores(logits: torch.Tensor, bias, gamma: torch.Tensor) -> torch.Tensor:
    """``logits + gamma * bias`` in float64, ``[N, V]``. A row with ``gamma == 0`` ignores its bias entirely
    (``r ** 0 == 1``), so a ``-inf`` or NaN bias entry cannot poison an unguided row."""
    z = logits.double()
    if bias is not None:
        g = gamma.double().unsqueeze(-1)
        z = z + torch.where(g == 0, 0.0, g * bias.double())
    return z


def _invalid_rows(z: torch.Tensor) -> torch.Tensor:
    """Rows that hold a NaN score or no score above ``-inf``: bool ``[N]`` (KERNEL_SPEC §4). ``amax`` propagates
    NaN, so one pass finds both."""
    row_max = z.amax(-1)
    return row_max.isnan() | (row_max == -math.inf)


def _first_max(z: torch.Tensor) -> torch.Tensor:
    """Index of the first maximum along the last dim (ties go to the lower id); NaN-free input."""
    return torch.argmax(z, dim=-1)


def _tempered(z: torch.Tensor, temperature: torch.Tensor, greedy_limit: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``s = z / T`` (NaN-free, float64 ``[N, V]``) and the invalid-row mask ``[N]``.

    Invalid rows (KERNEL_SPEC §4): a NaN score, no score above ``-inf``, or a negative or NaN temperature; their
    ``s`` is meaningless. Infinite scores keep their sign at any temperature. For ``T == 0`` rows, ``greedy_limit``
    gives the ``T -> 0`` limit (0 at the greedy token, ``-inf`` elsewhere); otherwise ``z`` is left unscaled.
    """
    t = temperature.double().unsqueeze(-1)
    invalid = _invalid_rows(z) | ~(t >= 0).squeeze(-1)
    z = torch.where(z.isnan(), -math.inf, z)  # invalid rows are masked by the caller; keep the rest NaN-free
    # Any positive divisor keeps +-inf; the clamp stops T = inf from turning inf / inf into NaN.
    s = z if (t == 1).all() else z / torch.where(t > 0, t, 1.0).clamp(max=torch.finfo(torch.float64).max)
    if greedy_limit and (t == 0).any():
        greedy = torch.full_like(z, -math.inf).scatter_(-1, _first_max(z).unsqueeze(-1), 0.0)
        s = torch.where(t == 0, greedy, s)
    return s, invalid


def _plus_inf_restriction(s: torch.Tensor) -> torch.Tensor:
    """Rows holding ``+inf`` scores keep only those tokens, with equal (zero) scores (KERNEL_SPEC §3)."""
    has_pos_inf = s.amax(-1, keepdim=True) == math.inf
    if not has_pos_inf.any():
        return s
    return torch.where(has_pos_inf, torch.where(s == math.inf, 0.0, -math.inf), s)


def _top_k_restriction(s: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` highest scores (ties toward the lower id), set the rest to ``-inf``; NaN-free input.

    Everything above the k-th largest value stays; of the tokens equal to it, the lowest ids fill the remaining
    places."""
    if top_k <= 0 or top_k >= s.shape[-1]:
        return s
    kth = torch.topk(s, top_k, dim=-1).values[:, -1:]
    above = s > kth
    places_left = top_k - above.sum(-1, keepdim=True)
    at_kth = s == kth
    keep = above | (at_kth & (at_kth.cumsum(-1) <= places_left))
    return torch.where(keep, s, -math.inf)


# ---------------------------------------------------------------------------------------------------------------------
# The two-level exponential race (KERNEL_SPEC §3)
# ---------------------------------------------------------------------------------------------------------------------


def _race(s: torch.Tensor, seeds: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Draw one column per row from ``softmax(s)`` by the two-level race; ``s`` float64 ``[N, V]`` NaN-free and
    already restricted to the allowed set (``-inf`` = not allowed). Rows with no allowed token get -1."""
    n, v = s.shape
    n_chunks, width = -(-v // CHUNK), min(v, CHUNK)
    padded = s if v % width == 0 else torch.nn.functional.pad(s, (0, n_chunks * width - v), value=-math.inf)
    padded = padded.view(n, n_chunks, width)
    chunk_mass = torch.logsumexp(padded, dim=-1)  # [N, C]; -inf for chunks with no allowed token

    chunk_ids = torch.arange(n_chunks, device=s.device).expand(n, n_chunks)
    chunk_keys = chunk_mass - exponential64(seeds, chunk_ids, offset, STREAM_CHUNK).log()
    chosen_chunk = _first_max(chunk_keys)  # empty chunks have key -inf and never win against a non-empty one

    token_ids = chosen_chunk.unsqueeze(-1) * CHUNK + torch.arange(width, device=s.device)
    in_chunk = padded.gather(1, chosen_chunk.view(n, 1, 1).expand(n, 1, width)).squeeze(1)
    token_keys = in_chunk - exponential64(seeds, token_ids, offset, STREAM_TOKEN).log()
    token = token_ids.gather(1, _first_max(token_keys).unsqueeze(-1)).squeeze(-1)
    return torch.where(chunk_mass.amax(-1) > -math.inf, token, -1)


def _draw(
    z: torch.Tensor, temperature: torch.Tensor, top_k: int, seeds: torch.Tensor, offset: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[N]`` drawn from guided scores ``z`` (float64 ``[N, V]``, excluded tokens already ``-inf``), and
    the log-probability of each under the distribution it was drawn from, float32 ``[N]`` (KERNEL_SPEC §2).

    Greedy rows (``T == 0``) take the first maximum of ``z`` with log-probability 0 (a point mass); invalid rows
    (NaN, nothing allowed, ``T < 0``) get -1 and NaN.
    """
    s, invalid = _tempered(z, temperature, greedy_limit=False)
    allowed = _plus_inf_restriction(_top_k_restriction(s, top_k))
    random = _race(allowed, seeds, offset)
    logp = torch.log_softmax(allowed, dim=-1).gather(1, random.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    greedy = temperature == 0
    if greedy.any():
        token = torch.where(greedy, _first_max(allowed), random)
        logp = torch.where(greedy, 0.0, logp)
    else:
        token = random
    invalid = invalid | (token < 0)
    return torch.where(invalid, -1, token), torch.where(invalid, math.nan, logp).float()


# ---------------------------------------------------------------------------------------------------------------------
# The five operations (KERNEL_SPEC §2)
# ---------------------------------------------------------------------------------------------------------------------


def guided_log_softmax(logits, bias, gamma, temperature) -> torch.Tensor:
    """``log_softmax((logits + gamma * bias) / T)`` as fp32 ``[N, V]``; invalid rows are all NaN.

    ``+inf`` tokens share the row's mass equally; ``T == 0`` gives the greedy point mass (0 at the greedy token).
    """
    s, invalid = _tempered(guided_scores(logits, bias, gamma), temperature, greedy_limit=True)
    out = torch.log_softmax(_plus_inf_restriction(s), dim=-1)
    return torch.where(invalid.unsqueeze(-1), math.nan, out).float()


def sample(logits, bias, gamma, temperature, top_k: int, seeds, offset, index=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per row from the (top-k restricted) guided distribution: (int64 ``[N]`` tokens, -1 for invalid
    rows; float32 ``[N]`` log-probability of each drawn token under that distribution, 0 for greedy rows, NaN for
    invalid ones).

    With ``index`` (int64 ``[N, K]``) the columns are candidates and the result is ``index[r, chosen]``; the race's
    token counter ``a`` is the column, and the log-probability is over the candidates.
    """
    column, logp = _draw(guided_scores(logits, bias, gamma), temperature, top_k, seeds, offset)
    return _candidate_ids(column, index), logp


def _candidate_ids(column: torch.Tensor, index) -> torch.Tensor:
    """The candidate path: drawn column ``[N]`` -> ``index[r, column]`` (-1 stays -1); the column itself without
    ``index``."""
    if index is None:
        return column
    return torch.where(column >= 0, index.gather(1, column.clamp(min=0).unsqueeze(-1)).squeeze(-1), -1)


def masked_transition(
    x_t, logits, bias, gamma, temperature, top_k: int, stay_prob, mask_id: int, seeds, offset, index=None
) -> torch.Tensor:
    """One reverse step of absorbing diffusion, int64 ``[N]``.

    Unmasked positions (``x_t != mask_id``) are copied. A masked position stays masked iff ``U(0, stream 1) <
    stay_prob``; otherwise it gets a token drawn as in :func:`sample` over the allowed set without ``mask_id``
    (-1 if that set is empty or the row is invalid). Rows that are copied or stay masked are not used.

    With ``index`` (int64 ``[N, K]``, the candidate path) the columns are candidates: a column whose id is
    ``mask_id`` is excluded, the race's token counter is the column, and a drawn column ``c`` gives ``index[r, c]``.
    """
    n = x_t.shape[0]
    u_stay = uniform64(seeds, torch.zeros(n, 1, dtype=torch.int64, device=x_t.device), offset, STREAM_STAY)[:, 0]
    z = guided_scores(logits, bias, gamma)
    if index is None:
        z = z.index_fill(1, torch.tensor([mask_id], device=z.device), -math.inf)
    else:
        z = z.masked_fill(index == mask_id, -math.inf)
    token = _candidate_ids(_draw(z, temperature, top_k, seeds, offset)[0], index)
    stays = u_stay < stay_prob.double()
    return torch.where(x_t != mask_id, x_t, torch.where(stays, mask_id, token))


def topk_log_softmax(logits, k: int, bias, gamma, temperature) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest guided log-probabilities, fp32 ``[N, k]`` sorted descending (ties toward the lower id), and
    their token ids, int64 ``[N, k]``. Invalid rows give NaN values and -1 ids."""
    logp = guided_log_softmax(logits, bias, gamma, temperature)
    invalid = logp[:, :1].isnan() if logp.shape[1] else torch.zeros(logp.shape[0], 1, dtype=torch.bool)
    order = torch.sort(torch.where(logp.isnan(), -math.inf, logp), dim=-1, descending=True, stable=True).indices[:, :k]
    return logp.gather(1, order), torch.where(invalid, -1, order)


def confidence(logits, bias, gamma, temperature, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Planner scores of the guided distribution ``p``: (argmax int64 ``[N]``, score fp32 ``[N]``).

    ``kind``: ``max_prob`` = p1, ``margin`` = p1 - p2 (p2 = 0 when ``V == 1``), ``neg_entropy`` = sum p log p.
    The argmax is the lowest id among the highest scores. Invalid rows give -1 and NaN.
    """
    if kind not in CONFIDENCE_KINDS:
        raise ValueError(f"kind must be one of {CONFIDENCE_KINDS}, got {kind!r}")
    s, invalid = _tempered(guided_scores(logits, bias, gamma), temperature, greedy_limit=True)
    logp = torch.log_softmax(_plus_inf_restriction(s), dim=-1)
    p = logp.exp()
    if kind == "max_prob":
        score = p.amax(-1)
    elif kind == "margin":
        top2 = torch.topk(p, min(2, p.shape[-1]), dim=-1).values
        score = top2[:, 0] - (top2[:, 1] if p.shape[-1] > 1 else 0.0)
    else:
        score = torch.where(p > 0, p * logp, 0.0).sum(-1)
    argmax = _first_max(s)
    return torch.where(invalid, -1, argmax), torch.where(invalid, math.nan, score).float()
