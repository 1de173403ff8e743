"""The fused draw behind ``sample`` and ``masked_transition``: guidance, temperature, exclusions, top-k and the
two-level exponential race in one read of each row (KERNEL_SPEC §2, §3).

Per group of rows and per split of a row (grid ``(ceil(N / R), splits)``), a program reads its blocks of ``BLOCK``
tokens once:

- ``T > 0``: per chunk of 1024 tokens, its maximum and ``sum exp((z - max) / T)`` go to a small workspace (and, for
  blocks holding ``+inf``, the count of ``+inf`` tokens). After the loop the chunk race ``argmax_c (M_c - ln E(c, 2))``
  runs once over all chunks of the row (``ln(count)`` masses if it holds ``+inf``: those tokens share the mass).
- ``T == 0``: the first maximum (greedy; no randomness).
- a NaN flag (a NaN makes a chunk's sum NaN, so sampling rows need no extra compare per token).

Then the winning chunk is read again (1024 tokens, allowed by the spec) for the token race ``s_v - ln E(v, stream 0)``.
With one split the program finishes its rows (one launch); with several, the programs write chunk statistics and
greedy partials and a small kernel folds them (exact max / min, so the split never changes the token) and races.

``top_k`` in ``[1, K_MAX]`` keeps the ``K_PAD`` best (score, id) keys in registers instead (``_topk.py``) and races
over them: no second read at all. Larger ``top_k`` (below ``V``) takes a slow path: a scores kernel, ``torch.sort``
for the kept set, then the chunked race over the kept scores.

``sample`` (``LOGPROB``) also writes the log-probability of the drawn token (KERNEL_SPEC §2 ``sample``) from what
the race already holds: ``log Z`` is the log-sum-exp of the chunk masses ``M_c`` (top-k: of the buffer's race
weights), the token's tempered score comes from the chunk re-read (top-k: the buffer), so the row is not read again.
``masked_transition`` compiles this out.

``masked_transition`` (``MASKED``): a row whose ``x_t`` is not the mask is copied, and a masked row that stays masked
(``U(0, stream 1) < stay_prob``, decided first) is not read either; ``mask_id`` is never drawn. On its candidate path
(``MASKED`` and ``HAS_INDEX``) the excluded columns are those whose id ``index[r, col]`` is ``mask_id``, read beside
the scores wherever they are loaded (``_draw_scores``), so every path above sees the same allowed set.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _common
from ._common import (
    CHUNK,
    CHUNK_C,
    INT32_MAX,
    K_MAX,
    KEY_PAD,
    STREAM_CHUNK,
    STREAM_STAY,
    STREAM_TOKEN,
    exponential64,
    load_scores,
    pack_key,
    philox_words,
    row_argmax_with_score,
    row_max_sum_exp,
    row_params,
    uniform64_less,
    unpack_key,
)
from ._topk import buffer_descending, buffer_init, buffer_merge, buffer_push, buffer_race, load_split_buffers

# ---------------------------------------------------------------------------------------------------------------------
# Shared row logic. A program handles R rows (R = 1 on the GPU; more under the interpreter, whose cost is per
# operation): per-row values are [R] vectors, tiles carry the rows as their first axis.
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _rows_start(temp_ptr, gamma_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id, rows, n_rows,
                MASKED: tl.constexpr):
    """Row parameters and which rows need a draw at all (KERNEL_SPEC §2 masked_transition: the stay decision comes
    first and uses its own stream, counter a = 0)."""
    ok = rows < n_rows
    gamma, inv_t, greedy, bad_t = row_params(gamma_ptr, temp_ptr, rows, ok)
    seed = tl.load(seeds_ptr + rows, mask=ok, other=0)
    offset = tl.load(offset_ptr)
    if MASKED:
        x = tl.load(x_ptr + rows, mask=ok, other=0)
        w0, w1 = philox_words(seed, rows * 0, offset, STREAM_STAY)
        stays = uniform64_less(w0, w1, tl.load(stay_ptr + rows, mask=ok, other=0.0))
        draw = ok & (x == mask_id) & ~stays
    else:
        x = rows.to(tl.int64) * 0 - 1
        draw = ok
    return gamma, inv_t, greedy, bad_t, seed, offset, x, draw, ok


@triton.jit
def _split_blocks(split, blocks_per_split, n_blocks, draw):
    """Blocks ``[lo, hi)`` of the row that split ``split`` scans. Rows that draw nothing read nothing: with no such
    row in the program the range is empty."""
    lo = split * blocks_per_split
    hi = tl.where(tl.max(draw.to(tl.int32)) > 0, tl.minimum(lo + blocks_per_split, n_blocks), lo)
    return lo, hi


@triton.jit
def _rows_write(out_ptr, lp_ptr, index_ptr, stride_i, rows, ok, token, lp, x, draw, bad,
                HAS_INDEX: tl.constexpr, MASKED: tl.constexpr, LOGPROB: tl.constexpr):
    """Final values: -1 for an invalid row, the candidate's id with ``index``, and for rows of the masked transition
    that draw nothing, ``x_t`` itself (a copy, or the mask when the position stays masked). With ``LOGPROB``
    (``sample``) the drawn column's log-probability ``lp`` too (the callers leave 0 for greedy rows, a point mass),
    NaN for invalid rows (KERNEL_SPEC §2 ``sample``)."""
    token = tl.where(bad, -1, token).to(tl.int64)
    if LOGPROB:
        tl.store(lp_ptr + rows, tl.where(token < 0, float("nan"), lp), mask=ok)
    if HAS_INDEX:
        picked = tl.load(index_ptr + rows.to(tl.int64) * stride_i + tl.maximum(token, 0), mask=draw & (token >= 0))
        token = tl.where(token >= 0, picked, -1)
    if MASKED:
        token = tl.where(draw, token, x)
    tl.store(out_ptr + rows, token, mask=ok)


@triton.jit
def _draw_scores(logits_ptr, l_off, bias_ptr, b_off, index_ptr, i_off, col, mask, gamma, inv_t, mask_id,
                 HAS_BIAS: tl.constexpr, MASKED: tl.constexpr, HAS_INDEX: tl.constexpr):
    """``load_scores`` with the masked transition's exclusion (KERNEL_SPEC §2 ``masked_transition``): column
    ``mask_id``, or on the candidate path every column whose id ``index[r, col]`` is ``mask_id`` (``i_off``: the
    rows' 64-bit offsets into ``index``; ids are read only where ``mask`` holds, and ``mask_id >= 0`` never matches
    the ``-1`` of the others)."""
    if HAS_INDEX:
        s = load_scores(logits_ptr, l_off, bias_ptr, b_off, col, mask, gamma, inv_t, mask_id, HAS_BIAS, False)
        if MASKED:
            ids = tl.load(index_ptr + i_off + col, mask=mask, other=-1)
            s = tl.where(ids == mask_id, float("-inf"), s)
    else:
        s = load_scores(logits_ptr, l_off, bias_ptr, b_off, col, mask, gamma, inv_t, mask_id, HAS_BIAS, MASKED)
    return s


# ---------------------------------------------------------------------------------------------------------------------
# Chunked race (top_k == 0)
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _chunk_scan(logits_ptr, stride_l, bias_ptr, stride_b, index_ptr, stride_i, max_ptr, sum_ptr, cnt_ptr, rows, V,
                n_chunks, gamma, inv_t, greedy, draw, mask_id, blk_lo, blk_hi, CB: tl.constexpr, CW: tl.constexpr,
                HAS_BIAS: tl.constexpr, MASKED: tl.constexpr, HAS_INDEX: tl.constexpr):
    """Blocks ``[blk_lo, blk_hi)`` of the rows that draw.

    ``T > 0`` rows: each chunk's maximum and ``sum exp(s - max)`` go to the workspace (``+inf`` counts too, for
    chunks of a block that holds ``+inf``); the chunk race itself runs once per row afterwards (``_chunk_race``), so
    the loop does no Philox or log work. ``T == 0`` rows: the first maximum, returned with a NaN flag.

    A block is ``CB`` chunks, loaded as an ``[R, CB, CW]`` tile (``CW`` = 1024, or the padded row when V is smaller:
    a single chunk); every chunk is reduced alone, in the same tile whatever the split of the row.
    """
    R: tl.constexpr = rows.shape[0]
    cidx = tl.arange(0, CB)
    tok = tl.arange(0, CW)
    sampling = draw & ~greedy
    picking = draw & greedy
    any_sampling = tl.max(sampling.to(tl.int32)) > 0
    any_picking = tl.max(picking.to(tl.int32)) > 0
    rows64 = rows.to(tl.int64)
    l_off = (rows64 * stride_l)[:, None, None]
    b_off = (rows64 * stride_b)[:, None, None]
    i_off = (rows64 * stride_i)[:, None, None]
    ws_row = (rows64 * n_chunks)[:, None]
    g3 = gamma[:, None, None]
    c2 = (inv_t * 1.4426950408889634)[:, None]  # log2(e) / T
    c3 = c2[:, :, None]
    d3 = draw[:, None, None]
    gval = tl.full([R], float("-inf"), tl.float32)
    garg = tl.full([R], -1, tl.int32)
    bad = tl.full([R], 0, tl.int32)
    for blk in range(blk_lo, blk_hi):
        chunk = blk * CB + cidx
        col = (chunk[:, None] * CHUNK_C + tok[None, :])[None, :, :]
        # guided scores before the temperature (T > 0 keeps their order; T == 0 rows use them as they are)
        s = _draw_scores(logits_ptr, l_off, bias_ptr, b_off, index_ptr, i_off, col, d3 & (col < V), g3, 1.0, mask_id,
                         HAS_BIAS, MASKED, HAS_INDEX)
        if any_picking:  # T == 0: first maximum, NaN check
            nan = tl.max(tl.max((s != s).to(tl.int32), axis=2), axis=1)
            m = tl.max(tl.max(s, axis=2), axis=1)
            arg = tl.min(tl.min(tl.where(s == m[:, None, None], col, INT32_MAX), axis=2), axis=1)
            better = picking & (m > gval)
            gval = tl.where(better, m, gval)
            garg = tl.where(better, arg, garg)
            bad = bad | tl.where(picking, nan, 0)
        if any_sampling:  # T > 0: per-chunk maximum and sum of exponentials (NaN iff the chunk holds a NaN)
            # exp((z - max) / T) as one FMA and an exp2 per token: the temperature folds into the exponent's scale
            m_c = tl.max(s, axis=2)
            ms = tl.where(tl.abs(m_c) < float("inf"), m_c, 0.0)
            sum_c = tl.sum(tl.exp2(s * c3 - (ms * c2)[:, :, None]), axis=2)
            live = sampling[:, None] & (chunk[None, :] < n_chunks)
            tl.store(max_ptr + ws_row + chunk[None, :], ms * inv_t[:, None], mask=live)
            tl.store(sum_ptr + ws_row + chunk[None, :], sum_c, mask=live)
            if tl.max(m_c) == float("inf"):  # rare: counts for the race among +inf tokens
                cnt = tl.sum((s == float("inf")).to(tl.int32), axis=2)
                tl.store(cnt_ptr + ws_row + chunk[None, :], cnt, mask=live)
    return gval, garg, bad


@triton.jit
def _chunk_race(logits_ptr, stride_l, bias_ptr, stride_b, max_ptr, sum_ptr, cnt_ptr, index_ptr, stride_i, out_ptr,
                lp_ptr, rows, ok, V, n_chunks, gamma, inv_t, greedy, bad_t, mask_id, seed, offset, x, draw, garg, bad,
                NCH: tl.constexpr, CW: tl.constexpr, HAS_BIAS: tl.constexpr, MASKED: tl.constexpr,
                HAS_INDEX: tl.constexpr, LOGPROB: tl.constexpr):
    """Both levels of the race for rows whose chunk statistics are in the workspace, then the rows' output.

    Chunk level, all chunks of a row at once: ``argmax_c (M_c - ln E(c, 2))`` with ``M_c = max_c + ln(sum_c)``
    (``ln(count of +inf)`` when the row holds ``+inf``). Token level: the winning chunk is read again for
    ``argmax_v (s_v - ln E(v, 0))`` over its allowed tokens (``+inf`` mode: its ``+inf`` tokens, equal scores).
    Ties go to the lower chunk / token.

    ``LOGPROB`` (KERNEL_SPEC §2 ``sample``): ``log p = s_token - log Z`` with ``log Z = logsumexp_c M_c`` over the
    same chunk masses the race uses (``+inf`` mode: masses ``ln(count)`` and scores 0, so ``-ln(count)``); no
    further read of the row.
    """
    sampling = draw & ~greedy
    slot = tl.arange(0, NCH)[None, :]
    live = sampling[:, None] & (slot < n_chunks)
    at = (rows.to(tl.int64) * n_chunks)[:, None] + slot
    sum_c = tl.load(sum_ptr + at, mask=live, other=0.0)
    mass = tl.load(max_ptr + at, mask=live, other=0.0) + tl.log(sum_c)  # -inf for a chunk with nothing allowed
    bad = bad | tl.where(sampling, tl.max((sum_c != sum_c).to(tl.int32), axis=1), 0)
    pinf_chunk = mass == float("inf")
    pinf_mode = tl.max(pinf_chunk.to(tl.int32), axis=1) > 0
    cnt = tl.load(cnt_ptr + at, mask=live & pinf_chunk, other=0)
    w0, w1 = philox_words(seed[:, None] + slot * 0, slot, offset, STREAM_CHUNK)
    ln_e = tl.log(exponential64(w0, w1))
    # the chunk log-masses the race compares (+inf mode: ln(count of +inf), -inf for a chunk without one)
    mass = tl.where(pinf_mode[:, None], tl.where(cnt > 0, tl.log(cnt.to(tl.float32)), float("-inf")), mass)
    key = tl.where(live, mass - ln_e, float("-inf"))
    best = tl.max(key, axis=1)
    chunk = tl.where(best > float("-inf"), tl.min(tl.where(key == best[:, None], slot, INT32_MAX), axis=1), -1)

    racing = sampling & (chunk >= 0)
    token = tl.where(greedy, garg, -1)
    lp = tl.zeros(token.shape, tl.float32)  # greedy rows: 0 (they never race)
    if LOGPROB:  # log Z = logsumexp_c M_c, in one (max, sum exp) reduction
        nonempty = live & (mass > float("-inf"))
        top, total = row_max_sum_exp(tl.where(nonempty, mass, float("-inf")))
        log_z = top + tl.log(total)
    if tl.max(racing.to(tl.int32)) > 0:
        col = chunk[:, None] * CHUNK_C + tl.arange(0, CW)[None, :]
        rows64 = rows.to(tl.int64)
        s = _draw_scores(logits_ptr, (rows64 * stride_l)[:, None], bias_ptr, (rows64 * stride_b)[:, None], index_ptr,
                         (rows64 * stride_i)[:, None], col, racing[:, None] & (col < V), gamma[:, None],
                         inv_t[:, None], mask_id, HAS_BIAS, MASKED, HAS_INDEX)
        allowed = tl.where(pinf_mode[:, None], s == float("inf"), s > float("-inf"))
        score = tl.where(pinf_mode[:, None], 0.0, s)
        tw0, tw1 = philox_words(seed[:, None] + col * 0, col, offset, STREAM_TOKEN)
        tkey = tl.where(allowed, score - tl.log(exponential64(tw0, tw1)), float("-inf"))
        if LOGPROB:
            # the winner (largest key, then lowest column: the same token as below) and its tempered score (0 in
            # +inf mode) in one reduction instead of max, min and a gather of the score
            tbest, won, won_s = row_argmax_with_score(tkey, col, score)
            lp = tl.where(racing, won_s - log_z, lp)
        else:
            tbest = tl.max(tkey, axis=1)
            won = tl.min(tl.where(tkey == tbest[:, None], col, INT32_MAX), axis=1)
        token = tl.where(racing, won, token)
    _rows_write(out_ptr, lp_ptr, index_ptr, stride_i, rows, ok, token, lp, x, draw, (bad != 0) | bad_t,
                HAS_INDEX, MASKED, LOGPROB)


@triton.jit(do_not_specialize=["n_rows", "n_chunks", "n_blocks", "blocks_per_split", "plane", "mask_id"])
def _chunk_race_kernel(
    logits_ptr, stride_l, bias_ptr, stride_b, gamma_ptr, temp_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id,
    index_ptr, stride_i, out_ptr, lp_ptr, max_ptr, sum_ptr, cnt_ptr, part_f_ptr, part_i_ptr, n_rows, V, n_chunks,
    n_blocks, blocks_per_split, plane,
    R: tl.constexpr, CB: tl.constexpr, CW: tl.constexpr, NCH: tl.constexpr, HAS_BIAS: tl.constexpr,
    MASKED: tl.constexpr, HAS_INDEX: tl.constexpr, LOGPROB: tl.constexpr, FUSED: tl.constexpr,
):
    rows = tl.program_id(0) * R + tl.arange(0, R)
    split = tl.program_id(1)
    gamma, inv_t, greedy, bad_t, seed, offset, x, draw, ok = _rows_start(
        temp_ptr, gamma_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id, rows, n_rows, MASKED
    )
    lo, hi = _split_blocks(split, blocks_per_split, n_blocks, draw)
    gval, garg, bad = _chunk_scan(
        logits_ptr, stride_l, bias_ptr, stride_b, index_ptr, stride_i, max_ptr, sum_ptr, cnt_ptr, rows, V, n_chunks,
        gamma, inv_t, greedy, draw, mask_id, lo, hi, CB, CW, HAS_BIAS, MASKED, HAS_INDEX,
    )
    if FUSED:
        tl.debug_barrier()  # the program's own workspace stores, visible to all its threads
        _chunk_race(logits_ptr, stride_l, bias_ptr, stride_b, max_ptr, sum_ptr, cnt_ptr, index_ptr, stride_i, out_ptr,
                    lp_ptr, rows, ok, V, n_chunks, gamma, inv_t, greedy, bad_t, mask_id, seed, offset, x, draw, garg,
                    bad, NCH, CW, HAS_BIAS, MASKED, HAS_INDEX, LOGPROB)
    else:
        i = rows * tl.num_programs(1) + split
        tl.store(part_f_ptr + i, gval, mask=ok)
        tl.store(part_i_ptr + i, garg, mask=ok)
        tl.store(part_i_ptr + plane + i, bad, mask=ok)


@triton.jit(do_not_specialize=["n_rows", "n_chunks", "n_splits", "plane", "mask_id"])
def _chunk_fold_kernel(
    logits_ptr, stride_l, bias_ptr, stride_b, gamma_ptr, temp_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id,
    index_ptr, stride_i, out_ptr, lp_ptr, max_ptr, sum_ptr, cnt_ptr, part_f_ptr, part_i_ptr, n_rows, V, n_chunks,
    n_splits, plane,
    R: tl.constexpr, SPLITS_PAD: tl.constexpr, CW: tl.constexpr, NCH: tl.constexpr, HAS_BIAS: tl.constexpr,
    MASKED: tl.constexpr, HAS_INDEX: tl.constexpr, LOGPROB: tl.constexpr,
):
    """After a split scan: fold the greedy partials (largest value, lowest column) and NaN flags, then race."""
    rows = tl.program_id(0) * R + tl.arange(0, R)
    gamma, inv_t, greedy, bad_t, seed, offset, x, draw, ok = _rows_start(
        temp_ptr, gamma_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id, rows, n_rows, MASKED
    )
    sp = tl.arange(0, SPLITS_PAD)[None, :]
    m = ok[:, None] & (sp < n_splits)
    i = rows[:, None] * n_splits + sp
    gvals = tl.load(part_f_ptr + i, mask=m, other=float("-inf"))
    best = tl.max(gvals, axis=1)
    garg = tl.where(best > float("-inf"),
                    tl.min(tl.where(gvals == best[:, None], tl.load(part_i_ptr + i, mask=m, other=-1), INT32_MAX),
                           axis=1), -1)
    bad = tl.max(tl.load(part_i_ptr + plane + i, mask=m, other=0), axis=1)
    _chunk_race(logits_ptr, stride_l, bias_ptr, stride_b, max_ptr, sum_ptr, cnt_ptr, index_ptr, stride_i, out_ptr,
                lp_ptr, rows, ok, V, n_chunks, gamma, inv_t, greedy, bad_t, mask_id, seed, offset, x, draw, garg, bad,
                NCH, CW, HAS_BIAS, MASKED, HAS_INDEX, LOGPROB)


# ---------------------------------------------------------------------------------------------------------------------
# Top-k race (1 <= top_k <= K_MAX)
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _topk_scan(logits_ptr, stride_l, bias_ptr, stride_b, index_ptr, stride_i, rows, V, gamma, inv_t, draw, mask_id,
               blk_lo, blk_hi, BLOCK: tl.constexpr, K_PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
               MASKED: tl.constexpr, HAS_INDEX: tl.constexpr):
    R: tl.constexpr = rows.shape[0]
    buf = buffer_init(R, K_PAD)
    bad = tl.full([R], 0, tl.int32)
    l_off = (rows.to(tl.int64) * stride_l)[:, None]
    b_off = (rows.to(tl.int64) * stride_b)[:, None]
    i_off = (rows.to(tl.int64) * stride_i)[:, None]
    for blk in range(blk_lo, blk_hi):
        col = (blk * BLOCK + tl.arange(0, BLOCK))[None, :]
        inb = draw[:, None] & (col < V)
        s = _draw_scores(logits_ptr, l_off, bias_ptr, b_off, index_ptr, i_off, col, inb, gamma[:, None],
                         inv_t[:, None], mask_id, HAS_BIAS, MASKED, HAS_INDEX)
        bad = bad | tl.max((s != s).to(tl.int32), axis=1)
        buf = buffer_push(buf, tl.where(inb, pack_key(s, col), KEY_PAD), K_PAD)
    return buf, bad


@triton.jit
def _topk_finish(index_ptr, stride_i, out_ptr, lp_ptr, rows, ok, V, top_k, greedy, bad_t, seed, offset, x, draw,
                 buf_desc, bad, K_PAD: tl.constexpr, CT: tl.constexpr, HAS_INDEX: tl.constexpr, MASKED: tl.constexpr,
                 LOGPROB: tl.constexpr):
    s, col = unpack_key(tl.max(buf_desc, axis=1))  # the best key: the greedy token
    token = tl.where(s > float("-inf"), col, -1)
    lp = tl.zeros(s.shape, tl.float32)
    if tl.max((draw & ~greedy).to(tl.int32)) > 0:
        drawn, drawn_lp = buffer_race(buf_desc, top_k, tl.cdiv(V, CHUNK_C), seed, offset, K_PAD, CT, LOGPROB)
        token = tl.where(greedy, token, drawn)
        lp = tl.where(greedy, 0.0, drawn_lp)
    _rows_write(out_ptr, lp_ptr, index_ptr, stride_i, rows, ok, token, lp, x, draw, (bad != 0) | bad_t,
                HAS_INDEX, MASKED, LOGPROB)


@triton.jit(do_not_specialize=["n_rows", "top_k", "n_blocks", "blocks_per_split", "mask_id"])
def _topk_race_kernel(
    logits_ptr, stride_l, bias_ptr, stride_b, gamma_ptr, temp_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id,
    index_ptr, stride_i, out_ptr, lp_ptr, ws_buf_ptr, ws_bad_ptr, n_rows, V, top_k, n_blocks, blocks_per_split,
    R: tl.constexpr, BLOCK: tl.constexpr, K_PAD: tl.constexpr, CT: tl.constexpr, HAS_BIAS: tl.constexpr,
    MASKED: tl.constexpr, HAS_INDEX: tl.constexpr, LOGPROB: tl.constexpr, FUSED: tl.constexpr,
):
    rows = tl.program_id(0) * R + tl.arange(0, R)
    split = tl.program_id(1)
    gamma, inv_t, greedy, bad_t, seed, offset, x, draw, ok = _rows_start(
        temp_ptr, gamma_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id, rows, n_rows, MASKED
    )
    lo, hi = _split_blocks(split, blocks_per_split, n_blocks, draw)
    buf, bad = _topk_scan(logits_ptr, stride_l, bias_ptr, stride_b, index_ptr, stride_i, rows, V, gamma, inv_t, draw,
                          mask_id, lo, hi, BLOCK, K_PAD, HAS_BIAS, MASKED, HAS_INDEX)
    if FUSED:
        _topk_finish(index_ptr, stride_i, out_ptr, lp_ptr, rows, ok, V, top_k, greedy, bad_t, seed, offset, x, draw,
                     buffer_descending(buf), bad, K_PAD, CT, HAS_INDEX, MASKED, LOGPROB)
    else:
        i = rows.to(tl.int64) * tl.num_programs(1) + split
        tl.store(ws_buf_ptr + i[:, None] * K_PAD + tl.arange(0, K_PAD)[None, :], buf, mask=ok[:, None])
        tl.store(ws_bad_ptr + i, bad, mask=ok)


@triton.jit(do_not_specialize=["n_rows", "top_k", "n_splits", "mask_id"])
def _topk_fold_kernel(
    gamma_ptr, temp_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id, index_ptr, stride_i, out_ptr, lp_ptr,
    ws_buf_ptr, ws_bad_ptr, n_rows, V, top_k, n_splits,
    R: tl.constexpr, SPLITS_PAD: tl.constexpr, K_PAD: tl.constexpr, CT: tl.constexpr, HAS_INDEX: tl.constexpr,
    MASKED: tl.constexpr, LOGPROB: tl.constexpr,
):
    rows = tl.program_id(0) * R + tl.arange(0, R)
    gamma, inv_t, greedy, bad_t, seed, offset, x, draw, ok = _rows_start(
        temp_ptr, gamma_ptr, seeds_ptr, offset_ptr, x_ptr, stay_ptr, mask_id, rows, n_rows, MASKED
    )
    bufs, bad = load_split_buffers(ws_buf_ptr, ws_bad_ptr, rows, ok, n_splits, SPLITS_PAD, K_PAD)
    _topk_finish(index_ptr, stride_i, out_ptr, lp_ptr, rows, ok, V, top_k, greedy, bad_t, seed, offset, x, draw,
                 buffer_merge(bufs, K_PAD), bad, K_PAD, CT, HAS_INDEX, MASKED, LOGPROB)


# ---------------------------------------------------------------------------------------------------------------------
# Scores for the large-top_k path
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _scores_kernel(logits_ptr, stride_l, bias_ptr, stride_b, index_ptr, stride_i, gamma_ptr, temp_ptr, out_ptr, V,
                   mask_id, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, MASKED: tl.constexpr,
                   HAS_INDEX: tl.constexpr):
    row = tl.program_id(0)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    gamma, inv_t, greedy, bad_t = row_params(gamma_ptr, temp_ptr, row, True)
    row64 = row.to(tl.int64)
    s = _draw_scores(logits_ptr, row64 * stride_l, bias_ptr, row64 * stride_b, index_ptr, row64 * stride_i, col,
                     col < V, gamma, inv_t, mask_id, HAS_BIAS, MASKED, HAS_INDEX)
    tl.store(out_ptr + row.to(tl.int64) * V + col, s, mask=col < V)


# ---------------------------------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------------------------------


def draw(logits, bias, gamma, temperature, top_k, seeds, offset, index=None, x_t=None, stay_prob=None, mask_id=-1,
         logprob=False):
    """Tokens int64 ``[N]`` for normalized arguments (see ``reference.py``); ``x_t`` given: the masked transition.
    ``logprob`` (``sample``): ``(tokens, log-probability float32 [N] of each drawn token)`` (KERNEL_SPEC §2)."""
    n, v = logits.shape
    device = logits.device
    out = torch.empty(n, dtype=torch.int64, device=device)
    lp = torch.empty(n, dtype=torch.float32, device=device) if logprob else None
    if n > 0:
        if top_k >= v:
            top_k = 0  # keeping every token is no restriction (reference: _top_k_restriction)
        with _common.quiet(device):
            if top_k > K_MAX:
                _draw_large_k(logits, bias, gamma, temperature, top_k, seeds, offset, index, x_t, stay_prob, mask_id,
                              out, lp)
            else:
                args = _Args(logits, bias, gamma, temperature, seeds, offset, index, x_t, stay_prob, mask_id, out, lp)
                if top_k > 0:
                    _launch_topk(args, top_k)
                else:
                    _launch_chunked(args)
    return (out, lp) if logprob else out


class _Args:
    """Kernel arguments shared by every launch; absent optional tensors are replaced by a dummy pointer that the
    constexpr flags keep from being read (``lp``: the log-probabilities, ``sample`` only)."""

    def __init__(self, logits, bias, gamma, temperature, seeds, offset, index, x_t, stay_prob, mask_id, out, lp=None):
        self.n, self.v = logits.shape
        self.device = logits.device
        self.flags = dict(HAS_BIAS=bias is not None, MASKED=x_t is not None, HAS_INDEX=index is not None,
                          LOGPROB=lp is not None)
        self.head = (
            logits, logits.stride(0), logits if bias is None else bias, 0 if bias is None else bias.stride(0),
            gamma, temperature, seeds, offset, seeds if x_t is None else x_t, gamma if stay_prob is None else stay_prob,
            mask_id if x_t is not None else -1, seeds if index is None else index,
            0 if index is None else index.stride(0), out, out if lp is None else lp,
        )


def _launch_chunked(a: _Args) -> None:
    block = _common.row_block(a.v, a.device)
    cw = min(CHUNK, max(16, triton.next_power_of_2(a.v)))  # a row shorter than a chunk is one narrower chunk
    cb = block // CHUNK
    rows = _common.rows_per_program(cb * cw, a.n, a.device)
    n_chunks = triton.cdiv(a.v, CHUNK)
    n_blocks = triton.cdiv(a.v, block)
    splits = _common.num_splits(a.n, n_blocks, a.device)
    per_split = triton.cdiv(n_blocks, splits)
    splits = triton.cdiv(n_blocks, per_split)
    # 16 tokens of a block per thread: 8 warps for blocks of 4 chunks, fewer for short rows (with 8 warps over a
    # 2-chunk block, ptxas spilled the LOGPROB race on sm_90; aot_check)
    warps = min(_common.num_warps(a.device), max(2, 2 * cb))
    # per-chunk maximum, sum and +inf count of every row (12 bytes per 1024 tokens), greedy partials of splits
    stats = torch.empty((2, a.n * n_chunks), dtype=torch.float32, device=a.device)
    counts = torch.empty(a.n * n_chunks, dtype=torch.int32, device=a.device)
    plane = a.n * splits
    part_f = torch.empty(plane if splits > 1 else 1, dtype=torch.float32, device=a.device)
    part_i = torch.empty(2 * plane if splits > 1 else 1, dtype=torch.int32, device=a.device)
    grid = triton.cdiv(a.n, rows)
    shared = dict(R=rows, CW=cw, NCH=max(16, triton.next_power_of_2(n_chunks)), **a.flags)  # few variants to compile
    wrap_triton(_chunk_race_kernel)[(grid, splits)](
        *a.head, stats[0], stats[1], counts, part_f, part_i, a.n, a.v, n_chunks, n_blocks, per_split, plane,
        CB=cb, FUSED=splits == 1, num_warps=warps, **shared, **_common.NO_FMA,
    )
    if splits > 1:
        wrap_triton(_chunk_fold_kernel)[(grid,)](
            *a.head, stats[0], stats[1], counts, part_f, part_i, a.n, a.v, n_chunks, splits, plane,
            SPLITS_PAD=triton.next_power_of_2(splits), num_warps=4 if warps > 1 else 1, **shared, **_common.NO_FMA,
        )


def topk_sizes(v: int, top_k: int, device: torch.device, n_rows: int = 1) -> tuple[int, int, int, int]:
    """(K_PAD, BLOCK, CT, R): the buffer size, tokens per block (at least the buffer), chunks per race tile, rows per
    program. Functions of V, k and the device only (batch invariance)."""
    k_pad = max(16, triton.next_power_of_2(top_k))
    n_chunks = triton.cdiv(v, CHUNK)
    if _common.interpreted(device) or _common.FORCE_BLOCK:
        block = max(k_pad, _common.row_block(v, device, multiple=16))
        ct = triton.next_power_of_2(n_chunks)
        return k_pad, block, ct, _common.rows_per_program(max(block, ct * k_pad), n_rows, device)
    block = max(k_pad, min(triton.next_power_of_2(v), 2048 if k_pad <= 256 else 2 * k_pad))
    # race tiles of at most 64 chunks and 4096 (chunk, entry) pairs: 8192 pairs spilled on sm_80 at K_PAD 128, and
    # 128 chunks at K_PAD 16 (gtl_kernels.triton.aot_check)
    return k_pad, block, max(1, min(triton.next_power_of_2(n_chunks), 4096 // k_pad, 64)), 1


def _launch_topk(a: _Args, top_k: int) -> None:
    k_pad, block, ct, rows = topk_sizes(a.v, top_k, a.device, a.n)
    n_blocks = triton.cdiv(a.v, block)
    splits = _common.topk_splits(a.n, n_blocks, k_pad, a.device)
    per_split = triton.cdiv(n_blocks, splits)
    splits = triton.cdiv(n_blocks, per_split)
    warps = _common.num_warps(a.device)
    if splits == 1:
        ws_buf, ws_bad = a.head[6], a.head[6]  # unused
    else:
        ws_buf = torch.empty(a.n * splits * k_pad, dtype=torch.int64, device=a.device)
        ws_bad = torch.empty(a.n * splits, dtype=torch.int32, device=a.device)
    grid = triton.cdiv(a.n, rows)
    wrap_triton(_topk_race_kernel)[(grid, splits)](
        *a.head, ws_buf, ws_bad, a.n, a.v, top_k, n_blocks, per_split,
        R=rows, BLOCK=block, K_PAD=k_pad, CT=ct, FUSED=splits == 1, num_warps=warps, **a.flags, **_common.NO_FMA,
    )
    if splits > 1:
        head = a.head[4:]  # the fold reads no scores
        wrap_triton(_topk_fold_kernel)[(grid,)](
            *head, ws_buf, ws_bad, a.n, a.v, top_k, splits,
            R=rows, SPLITS_PAD=triton.next_power_of_2(splits), K_PAD=k_pad, CT=ct, num_warps=warps,
            maxnreg=_common.TOPK_MERGE_MAXNREG, **_common.NO_FMA,
            HAS_INDEX=a.flags["HAS_INDEX"], MASKED=a.flags["MASKED"], LOGPROB=a.flags["LOGPROB"],
        )


def scores(logits, bias, gamma, temperature, mask_id=-1, index=None):
    """fp32 ``[N, V]`` guided, tempered scores with ``mask_id`` set to ``-inf`` (the kernels' own rounding); with
    ``index`` (int64 ``[N, V]``, the candidate path) the columns whose id is ``mask_id`` instead."""
    n, v = logits.shape
    out = torch.empty((n, v), dtype=torch.float32, device=logits.device)
    block = _common.row_block(v, logits.device, multiple=16)
    masked, has_index = mask_id >= 0, index is not None and mask_id >= 0
    wrap_triton(_scores_kernel)[(n, triton.cdiv(v, block))](
        logits, logits.stride(0), logits if bias is None else bias, 0 if bias is None else bias.stride(0),
        index if has_index else logits, index.stride(0) if has_index else 0, gamma, temperature, out, v, mask_id,
        BLOCK=block, HAS_BIAS=bias is not None, MASKED=masked, HAS_INDEX=has_index,
        num_warps=_common.num_warps(logits.device), **_common.NO_FMA,
    )
    return out


def _draw_large_k(logits, bias, gamma, temperature, top_k, seeds, offset, index, x_t, stay_prob, mask_id, out, lp):
    """``top_k > K_MAX``: the kept set from ``torch.sort`` of the kernel's own scores (ties toward the lower id, NaN
    kept so the row stays invalid), then the chunked race over them at unit temperature (greedy and invalid rows
    keep their temperature's meaning), into ``out`` (and ``lp``: the race's log-probabilities over the kept, already
    tempered scores are those of the top-k restricted distribution, KERNEL_SPEC §2 ``sample``)."""
    s = scores(logits, bias, gamma, temperature, mask_id if x_t is not None else -1, index)
    order = torch.sort(s.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf")), dim=-1,
                       descending=True, stable=True).indices[:, :top_k]
    keep = torch.zeros_like(s, dtype=torch.bool).scatter_(1, order, True) | s.isnan()
    kept = torch.where(keep, s, float("-inf"))
    unit = torch.where(temperature > 0, torch.ones_like(temperature), temperature)
    _launch_chunked(_Args(kept, None, gamma, unit, seeds, offset, index, x_t, stay_prob, mask_id, out, lp))
