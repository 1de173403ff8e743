"""The one-pass top-k candidate buffer and the two-level race over it (KERNEL_SPEC §1 top-k, §3 race).

Design (docs/TRITON_BACKEND.md, "top-k"): every token becomes one int64 key ``(ordered score << 32) | (2^32-1-id)``
(``_common.pack_key``), so "larger key" means "higher score, then lower id" and all keys are distinct. A program keeps
the ``K_PAD`` largest keys seen so far in registers, sorted ascending. For each block of the row:

- if the block's largest key does not beat the buffer's smallest, the block is skipped (the usual case once the
  buffer holds good candidates);
- else ``tl.topk`` takes the block's ``K_PAD`` largest (descending); against the ascending buffer the elementwise
  maximum holds the ``K_PAD`` largest of the union as a bitonic sequence (Batcher), and one bitonic merge sorts it.

The set of the ``k`` largest keys is unique, so the result does not depend on the block size or on how a row is split
across programs: split buffers are merged the same way. ``k`` up to ``K_MAX`` (1024) is served like this; larger
``k`` falls back to scores + ``torch.sort`` (see the ops).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import CHUNK, STREAM_CHUNK, STREAM_TOKEN, exponential64, philox_words, unpack_key


@triton.jit
def buffer_init(K_PAD: tl.constexpr):
    return tl.full([K_PAD], -9223372036854775808, tl.int64)


@triton.jit
def buffer_push(buf, keys, K_PAD: tl.constexpr):
    """Merge a block of keys (1-D, a power of two ``>= K_PAD`` long, padding ``KEY_PAD``) into the ascending buffer."""
    if tl.max(keys) > tl.min(buf):
        best = tl.topk(keys, K_PAD)  # descending
        buf = tl.bitonic_merge(tl.maximum(buf, best), descending=False)
    return buf


@triton.jit
def buffer_merge_rows(bufs, K_PAD: tl.constexpr):
    """The ``K_PAD`` largest keys of a ``[R, K_PAD]`` stack of buffers (R a power of two), sorted descending."""
    return tl.topk(tl.reshape(bufs, [bufs.numel]), K_PAD)


@triton.jit
def _segment_sum(c1, v1, c2, v2):
    # Suffix sums within runs of equal chunk ids (ids sorted ascending): keep the lower (nearer) run's partial sum.
    same = c1 == c2
    first = c1 < c2
    return tl.where(first, c1, c2), tl.where(same, v1 + v2, tl.where(first, v1, v2))


@triton.jit
def _segment_max(c1, v1, c2, v2):
    # Running maximum within runs of equal chunk ids: the suffix sum at a run's first element is the run's total.
    same = c1 == c2
    last = c1 > c2
    return tl.where(last, c1, c2), tl.where(same, tl.maximum(v1, v2), tl.where(last, v1, v2))


@triton.jit
def buffer_race(buf_desc, top_k, seed, offset, K_PAD: tl.constexpr):
    """One draw from the softmax over the ``top_k`` largest keys of a descending buffer, by the two-level race.

    The allowed set is the top ``top_k`` entries with a score above ``-inf``; if any is ``+inf`` only those remain,
    with equal scores (KERNEL_SPEC §3). Returns the token id, or -1 when nothing is allowed.

    The race needs each chunk's log-mass: the allowed entries are re-sorted by token id (``(id << 32) | score bits``)
    so that each chunk is a contiguous run; a suffix-sum scan and a running-max scan give every entry its run's total.
    Masses use the buffer maximum as the common shift: a chunk more than ~49 nats below it cannot win the race
    (``-ln E`` lies in ``[-3.9, 45.1]``), so underflow there changes nothing.
    """
    pos = tl.arange(0, K_PAD)
    s, col = unpack_key(buf_desc)
    allowed = (pos < top_k) & (buf_desc != -9223372036854775808) & (s > float("-inf"))
    pinf = allowed & (s == float("inf"))
    has_pinf = tl.max(pinf.to(tl.int32)) > 0
    allowed = tl.where(has_pinf, pinf, allowed)
    score = tl.where(has_pinf, 0.0, s)

    by_id = (tl.where(allowed, col, 2147483647).to(tl.int64) << 32) | (
        score.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
    )
    by_id = tl.sort(by_id)
    tok = (by_id >> 32).to(tl.int32)
    ok = tok < 2147483647
    score = (by_id & 0xFFFFFFFF).to(tl.int32).to(tl.float32, bitcast=True)
    chunk = tl.where(ok, tok // CHUNK, 2147483647)

    m = tl.max(tl.where(ok, score, float("-inf")))
    e = tl.where(ok, tl.exp(score - tl.where(m > float("-inf"), m, 0.0)), 0.0)
    _, suffix = tl.associative_scan((chunk, e), 0, _segment_sum, reverse=True)
    _, total = tl.associative_scan((chunk, suffix), 0, _segment_max)
    w0, w1 = philox_words(seed, chunk, offset, STREAM_CHUNK)
    chunk_key = tl.where(ok, m + tl.log(total) - tl.log(exponential64(w0, w1)), float("-inf"))
    best = tl.max(chunk_key)
    chosen = tl.min(tl.where(ok & (chunk_key == best), chunk, 2147483647))

    w0, w1 = philox_words(seed, tok, offset, STREAM_TOKEN)
    token_key = tl.where(ok & (chunk == chosen), score - tl.log(exponential64(w0, w1)), float("-inf"))
    best = tl.max(token_key)
    token = tl.min(tl.where(token_key == best, tok, 2147483647))
    return tl.where(tl.max(ok.to(tl.int32)) > 0, token, -1)
