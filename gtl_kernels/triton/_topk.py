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

from ._bitonic import merge_runs_desc, merge_sorted, topk_desc
from ._common import (
    CHUNK_C,
    INT32_MAX,
    KEY_PAD,
    STREAM_CHUNK,
    STREAM_TOKEN,
    exponential64,
    philox_words,
    row_max_sum_exp,
    unpack_key,
)


@triton.jit
def buffer_init(R: tl.constexpr, K_PAD: tl.constexpr):
    return tl.full([R, K_PAD], KEY_PAD, tl.int64)


@triton.jit
def buffer_push(buf, keys, K_PAD: tl.constexpr):
    """Merge a block of keys ``[R, BLOCK]`` (``BLOCK`` a power of two ``>= K_PAD``, padding ``KEY_PAD``) into the
    ascending buffers ``[R, K_PAD]``. Skipped when no row has a key above its buffer's smallest."""
    if tl.max((tl.max(keys, axis=1) > tl.min(buf, axis=1)).to(tl.int32)) > 0:
        best = topk_desc(keys, K_PAD)
        buf = merge_sorted(tl.maximum(buf, best), False)
    return buf


@triton.jit
def buffer_descending(buf):
    """The ascending buffers in descending order (an ascending run is bitonic: one merge)."""
    return merge_sorted(buf, True)


@triton.jit
def buffer_merge(bufs, K_PAD: tl.constexpr):
    """The ``K_PAD`` largest keys of each row of ``[R, S, K_PAD]`` split buffers, each sorted ascending (as the
    programs store them), descending: ``[R, K_PAD]``."""
    return merge_runs_desc(tl.reshape(bufs, [bufs.shape[0], bufs.shape[1] * bufs.shape[2]]), K_PAD)


@triton.jit
def load_split_buffers(ws_buf_ptr, ws_bad_ptr, rows, ok, n_splits, SPLITS_PAD: tl.constexpr, K_PAD: tl.constexpr):
    """The ``[R, SPLITS_PAD, K_PAD]`` buffers and NaN flags that the split programs of rows ``rows`` stored.
    Each is sorted ascending (padding splits are constant), as :func:`buffer_merge` expects."""
    sp = tl.arange(0, SPLITS_PAD)[None, :]
    m = ok[:, None] & (sp < n_splits)
    j = rows.to(tl.int64)[:, None] * n_splits + sp
    bufs = tl.load(ws_buf_ptr + j[:, :, None] * K_PAD + tl.arange(0, K_PAD)[None, None, :], mask=m[:, :, None],
                   other=KEY_PAD)
    bad = tl.max(tl.load(ws_bad_ptr + j, mask=m, other=0), axis=1)
    return bufs, bad


@triton.jit
def buffer_race(buf_desc, top_k, n_chunks, seed, offset, K_PAD: tl.constexpr, CT: tl.constexpr,
                LOGPROB: tl.constexpr):
    """One draw per row from the softmax over the ``top_k`` largest keys of descending buffers ``[R, K_PAD]``, by the
    two-level race; ``seed`` is ``[R]``. Returns ``[R]`` token ids, -1 where nothing is allowed, and (``LOGPROB``,
    else zeros) their log-probabilities under that softmax (KERNEL_SPEC §2 ``sample``).

    The allowed set is the top ``top_k`` entries with a score above ``-inf``; if any is ``+inf`` only those remain,
    with equal scores (KERNEL_SPEC §3). Chunk log-masses are summed over ``[R, CT, K_PAD]`` tiles (rows x chunk ids x
    entries), ``CT`` chunks at a time, with the buffer maximum as the common shift: a chunk more than ~49 nats below it
    cannot win the race (``-ln E`` lies in ``[-3.9, 45.1]``), so underflow there changes nothing.

    The log-probability normalizes over the race's allowed set: ``log Z = m + ln(sum of the chunk masses) =
    m + ln sum exp(score - m)``, taken with ``m`` in one (max, sum) reduction, and ``log p = (s_token - m) - ln(sum)``
    (``+inf`` mode: scores 0, hence ``-ln(count)``); no further read of the row.
    """
    pos = tl.arange(0, K_PAD)[None, :]
    s, tok = unpack_key(buf_desc)
    allowed = (pos < top_k) & (buf_desc != KEY_PAD) & (s > float("-inf"))
    pinf = allowed & (s == float("inf"))
    has_pinf = tl.max(pinf.to(tl.int32), axis=1)[:, None] > 0
    allowed = tl.where(has_pinf, pinf, allowed)
    score = tl.where(has_pinf, 0.0, s)
    chunk = tl.where(allowed, tok // CHUNK_C, -1)

    if LOGPROB:
        m_row, z_row = row_max_sum_exp(tl.where(allowed, score, float("-inf")))
    else:
        m_row = tl.max(tl.where(allowed, score, float("-inf")), axis=1)
    m = m_row[:, None]
    e = tl.where(allowed, tl.exp(score - tl.where(m > float("-inf"), m, 0.0)), 0.0)
    R: tl.constexpr = buf_desc.shape[0]
    best_key = tl.full([R], float("-inf"), tl.float32)
    chosen = tl.full([R], -1, tl.int32)
    for c0 in range(0, n_chunks, CT):
        cid = c0 + tl.arange(0, CT)
        mass = tl.sum(tl.where(chunk[:, None, :] == cid[None, :, None], e[:, None, :], 0.0), axis=2)  # [R, CT]
        w0, w1 = philox_words(seed[:, None] + cid[None, :] * 0, cid[None, :], offset, STREAM_CHUNK)
        key = tl.where(mass > 0.0, m + tl.log(mass) - tl.log(exponential64(w0, w1)), float("-inf"))
        kmax = tl.max(key, axis=1)
        kid = tl.min(tl.where(key == kmax[:, None], cid[None, :], INT32_MAX), axis=1)
        better = kmax > best_key  # strictly: on a tie the earlier (lower) chunk stays
        best_key = tl.where(better, kmax, best_key)
        chosen = tl.where(better, kid, chosen)

    w0, w1 = philox_words(seed[:, None] + tok * 0, tok, offset, STREAM_TOKEN)
    token_key = tl.where(allowed & (chunk == chosen[:, None]), score - tl.log(exponential64(w0, w1)), float("-inf"))
    best = tl.max(token_key, axis=1)
    token = tl.min(tl.where(token_key == best[:, None], tok, INT32_MAX), axis=1)
    lp = tl.zeros([R], tl.float32)
    if LOGPROB:
        won = tl.max(tl.where(allowed & (tok == token[:, None]), score, float("-inf")), axis=1)
        lp = (won - m_row) - tl.log(z_row)
    return tl.where(chosen >= 0, token, -1), lp
