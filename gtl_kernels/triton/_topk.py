"""The one-pass top-k candidate buffer and the two-level race over it (KERNEL_SPEC §1 top-k, §3 race).

Design (docs/TRITON_BACKEND.md, "top-k"): every token becomes one int64 key ``(ordered score << 32) | (2^32-1-id)``
(``_common.pack_key``), so "larger key" means "higher score, then lower id" and all keys are distinct. A program keeps
the ``K_PAD`` largest keys seen so far in registers, sorted ascending. For each block of the row:

- if the block's largest key does not beat the buffer's smallest, the block is skipped (the usual case once the
  buffer holds good candidates);
- else a bitonic top-k takes the block's ``K_PAD`` largest (descending); against the ascending buffer the elementwise
  maximum holds the ``K_PAD`` largest of the union as a bitonic sequence (Batcher), and one bitonic merge sorts it.

The set of the ``k`` largest keys is unique, so the result does not depend on the block size or on how a row is split
across programs: split buffers are merged the same way. ``k`` up to ``K_MAX`` (1024) is served like this; larger
``k`` falls back to scores + ``torch.sort`` (see the ops).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._bitonic import merge_sorted, topk_desc
from ._common import CHUNK, STREAM_CHUNK, STREAM_TOKEN, exponential64, philox_words, unpack_key


@triton.jit
def buffer_init(K_PAD: tl.constexpr):
    return tl.full([K_PAD], -9223372036854775808, tl.int64)


@triton.jit
def buffer_push(buf, keys, K_PAD: tl.constexpr):
    """Merge a block of keys (1-D, a power of two ``>= K_PAD`` long, padding ``KEY_PAD``) into the ascending buffer."""
    if tl.max(keys) > tl.min(buf):
        best = topk_desc(keys, K_PAD)
        buf = merge_sorted(tl.maximum(buf, best), False)
    return buf


@triton.jit
def buffer_descending(buf):
    """The ascending buffer in descending order (an ascending run is bitonic: one merge)."""
    return merge_sorted(buf, True)


@triton.jit
def buffer_merge_rows(bufs, K_PAD: tl.constexpr):
    """The ``K_PAD`` largest keys of a ``[R, K_PAD]`` stack of buffers (R a power of two), sorted descending."""
    return topk_desc(tl.reshape(bufs, [bufs.numel]), K_PAD)


@triton.jit
def buffer_race(buf_desc, top_k, n_chunks, seed, offset, K_PAD: tl.constexpr, CT: tl.constexpr):
    """One draw from the softmax over the ``top_k`` largest keys of a descending buffer, by the two-level race.

    The allowed set is the top ``top_k`` entries with a score above ``-inf``; if any is ``+inf`` only those remain,
    with equal scores (KERNEL_SPEC §3). Returns the token id, or -1 when nothing is allowed.

    Chunk log-masses are summed over ``[CT, K_PAD]`` tiles (chunk ids x entries), ``CT`` chunks at a time, with the
    buffer maximum as the common shift: a chunk more than ~49 nats below it cannot win the race (``-ln E`` lies in
    ``[-3.9, 45.1]``), so underflow there changes nothing.
    """
    pos = tl.arange(0, K_PAD)
    s, tok = unpack_key(buf_desc)
    allowed = (pos < top_k) & (buf_desc != -9223372036854775808) & (s > float("-inf"))
    pinf = allowed & (s == float("inf"))
    has_pinf = tl.max(pinf.to(tl.int32)) > 0
    allowed = tl.where(has_pinf, pinf, allowed)
    score = tl.where(has_pinf, 0.0, s)
    chunk = tl.where(allowed, tok // CHUNK, -1)

    m = tl.max(tl.where(allowed, score, float("-inf")))
    e = tl.where(allowed, tl.exp(score - tl.where(m > float("-inf"), m, 0.0)), 0.0)
    best_key = float("-inf")
    chosen = -1
    for c0 in range(0, n_chunks, CT):
        cid = c0 + tl.arange(0, CT)
        mass = tl.sum(tl.where(chunk[None, :] == cid[:, None], e[None, :], 0.0), axis=1)
        w0, w1 = philox_words(seed, cid, offset, STREAM_CHUNK)
        key = tl.where(mass > 0.0, m + tl.log(mass) - tl.log(exponential64(w0, w1)), float("-inf"))
        kmax = tl.max(key)
        if kmax > best_key:  # strictly: on a tie the earlier (lower) chunk stays
            best_key = kmax
            chosen = tl.min(tl.where(key == kmax, cid, 2147483647))

    w0, w1 = philox_words(seed, tok, offset, STREAM_TOKEN)
    token_key = tl.where(allowed & (chunk == chosen), score - tl.log(exponential64(w0, w1)), float("-inf"))
    best = tl.max(token_key)
    token = tl.min(tl.where(token_key == best, tok, 2147483647))
    return tl.where(chosen >= 0, token, -1)
