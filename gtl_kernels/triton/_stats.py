"""Row statistics shared by ``guided_log_softmax``, ``confidence`` and ``topk_log_softmax`` (KERNEL_SPEC §2).

Kernel 1 (grid ``(N, splits)``) reads each block of a row once and writes that block's statistics (``block_stats``:
max, sum of exponentials, entropy term, runner-up, first argmax, ``+inf`` count, NaN flag); with ``K_PAD > 0`` it also
keeps the top-k candidate buffer of its split (``_topk.py``). The consumers fold the per-block statistics in block
order (``fold_stats``), so the floating-point result is the same bit for bit whatever the split: the split only
decides which program computes which block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _common
from ._common import KEY_PAD, block_stats, load_scores, pack_key, row_params, stats_combine
from ._topk import buffer_init, buffer_push

N_F, N_I = 4, 3  # float planes (m, S, A, t2) and int planes (arg, cnt, bad) of the per-block workspace


@triton.jit(do_not_specialize=["n_blocks", "blocks_per_split", "plane"])
def _stats_kernel(
    logits_ptr, stride_l, bias_ptr, stride_b, gamma_ptr, temp_ptr, ws_f_ptr, ws_i_ptr, ws_buf_ptr,
    V, n_blocks, blocks_per_split, plane,
    BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, CONFIDENCE: tl.constexpr, K_PAD: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    gamma, inv_t, greedy, bad_t = row_params(gamma_ptr, temp_ptr, row, True)
    lo = split * blocks_per_split
    hi = tl.minimum(lo + blocks_per_split, n_blocks)
    if K_PAD > 0:
        buf = buffer_init(1, K_PAD)
    for blk in range(lo, hi):
        col = blk * BLOCK + tl.arange(0, BLOCK)
        s = load_scores(logits_ptr, row.to(tl.int64) * stride_l, bias_ptr, row.to(tl.int64) * stride_b, col, col < V,
                            gamma, inv_t, -1, HAS_BIAS, False)
        m, S, A, t2, arg, cnt, bad = block_stats(s, col, CONFIDENCE)
        i = row.to(tl.int64) * n_blocks + blk
        tl.store(ws_f_ptr + i, m)
        tl.store(ws_f_ptr + plane + i, S)
        tl.store(ws_f_ptr + 2 * plane + i, A)
        tl.store(ws_f_ptr + 3 * plane + i, t2)
        tl.store(ws_i_ptr + i, arg)
        tl.store(ws_i_ptr + plane + i, cnt)
        tl.store(ws_i_ptr + 2 * plane + i, bad)
        if K_PAD > 0:
            buf = buffer_push(buf, tl.where(col < V, pack_key(s, col), KEY_PAD)[None, :], K_PAD)
    if K_PAD > 0:
        j = row.to(tl.int64) * tl.num_programs(1) + split
        tl.store(ws_buf_ptr + j * K_PAD + tl.arange(0, K_PAD)[None, :], buf)


@triton.jit
def fold_stats(ws_f_ptr, ws_i_ptr, row, n_blocks, plane):
    """The row's statistics from its per-block ones, folded in block order: ``(m, S, A, t2, arg, cnt, bad)``."""
    m = tl.full((), float("-inf"), tl.float32)
    S = tl.full((), 0.0, tl.float32)
    A = tl.full((), 0.0, tl.float32)
    t2 = tl.full((), float("-inf"), tl.float32)
    arg = tl.full((), -1, tl.int32)
    cnt = tl.full((), 0, tl.int32)
    bad = tl.full((), 0, tl.int32)
    for blk in range(0, n_blocks):
        i = row.to(tl.int64) * n_blocks + blk
        m, S, A, t2, arg, cnt, bad = stats_combine(
            m, S, A, t2, arg, cnt, bad,
            tl.load(ws_f_ptr + i), tl.load(ws_f_ptr + plane + i), tl.load(ws_f_ptr + 2 * plane + i),
            tl.load(ws_f_ptr + 3 * plane + i), tl.load(ws_i_ptr + i), tl.load(ws_i_ptr + plane + i),
            tl.load(ws_i_ptr + 2 * plane + i),
        )
    return m, S, A, t2, arg, cnt, bad


class RowStats:
    """Launch kernel 1 for normalized arguments and hold its outputs for the consumer kernel."""

    def __init__(self, logits, bias, gamma, temperature, *, block, confidence=False, k_pad=0, splits=None):
        n, v = logits.shape
        device = logits.device
        self.n_blocks = triton.cdiv(v, block)
        splits = splits or _common.num_splits(n, self.n_blocks, device)
        self.per_split = triton.cdiv(self.n_blocks, splits)
        self.splits = triton.cdiv(self.n_blocks, self.per_split)
        self.plane = n * self.n_blocks
        self.ws_f = torch.empty(N_F * self.plane, dtype=torch.float32, device=device)
        self.ws_i = torch.empty(N_I * self.plane, dtype=torch.int32, device=device)
        self.ws_buf = (
            torch.empty(n * self.splits * k_pad, dtype=torch.int64, device=device) if k_pad else self.ws_i
        )
        wrap_triton(_stats_kernel)[(n, self.splits)](
            logits, logits.stride(0), logits if bias is None else bias, 0 if bias is None else bias.stride(0), gamma,
            temperature, self.ws_f, self.ws_i, self.ws_buf, v, self.n_blocks, self.per_split, self.plane,
            BLOCK=block, HAS_BIAS=bias is not None, CONFIDENCE=confidence, K_PAD=k_pad,
            num_warps=_common.num_warps(device), **_common.NO_FMA,
        )
