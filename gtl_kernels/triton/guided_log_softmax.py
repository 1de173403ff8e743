"""``gtl::guided_log_softmax_triton``: ``log_softmax((logits + gamma * bias) / T)`` as fp32 ``[N, V]``
(KERNEL_SPEC §2).

Two passes: the normalizer must be known before the first output is written, so kernel 1 (``_stats.py``) reads the
row for its statistics and kernel 2 reads it again to write ``(s - m) - log S``. Re-reading the input (2 bytes per bf16
token) costs less than writing unnormalized fp32 scores and fixing them in place (8 bytes per token).
Special rows: ``+inf`` tokens share the mass (``-ln count`` each), ``T == 0`` gives the greedy point mass, an invalid
row (NaN, all ``-inf``, ``T < 0``) is all NaN (KERNEL_SPEC §4).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _common
from ._register import register
from ._common import load_scores, row_params
from ._stats import RowStats, fold_stats


@triton.jit(do_not_specialize=["n_blocks", "blocks_per_split", "plane"])
def _write_kernel(
    logits_ptr, stride_l, bias_ptr, stride_b, gamma_ptr, temp_ptr, ws_f_ptr, ws_i_ptr, out_ptr,
    V, n_blocks, blocks_per_split, plane,
    BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    gamma, inv_t, greedy, bad_t = row_params(gamma_ptr, temp_ptr, row, True)
    m, S, A, t2, arg, cnt, bad = fold_stats(ws_f_ptr, ws_i_ptr, row, n_blocks, plane)
    invalid = (bad != 0) | bad_t | (m == float("-inf"))
    # log p = (s - m) - log S: shift first (exact near the maximum), then subtract log S; m + log S would round log S
    # away below ulp(m) of a large maximum.
    log_s = tl.log(S)
    pinf_value = -tl.log(cnt.to(tl.float32))
    lo = split * blocks_per_split
    hi = tl.minimum(lo + blocks_per_split, n_blocks)
    for blk in range(lo, hi):
        col = blk * BLOCK + tl.arange(0, BLOCK)
        if greedy:
            out = tl.where(col == arg, 0.0, float("-inf"))
        else:
            s = load_scores(logits_ptr, row.to(tl.int64) * stride_l, bias_ptr, row.to(tl.int64) * stride_b, col,
                            col < V, gamma, inv_t, -1, HAS_BIAS, False)
            if cnt > 0:
                out = tl.where(s == float("inf"), pinf_value, float("-inf"))
            else:
                out = (s - m) - log_s
        out = tl.where(invalid, float("nan"), out)
        tl.store(out_ptr + row.to(tl.int64) * V + col, out, mask=col < V)


def log_softmax(logits, bias, gamma, temperature):
    n, v = logits.shape
    out = torch.empty((n, v), dtype=torch.float32, device=logits.device)
    if n == 0:
        return out
    block = _common.row_block(v, logits.device, multiple=16)
    with _common.quiet(logits.device):
        st = RowStats(logits, bias, gamma, temperature, block=block)
        wrap_triton(_write_kernel)[(n, st.splits)](
            logits, logits.stride(0), logits if bias is None else bias, 0 if bias is None else bias.stride(0), gamma,
            temperature, st.ws_f, st.ws_i, out, v, st.n_blocks, st.per_split, st.plane,
            BLOCK=block, HAS_BIAS=bias is not None, num_warps=_common.num_warps(logits.device), **_common.NO_FMA,
        )
    return out


def _guided_log_softmax(
    logits: torch.Tensor, bias: Optional[torch.Tensor], gamma: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    return log_softmax(logits, bias, gamma, temperature)


guided_log_softmax_triton = register("guided_log_softmax", _guided_log_softmax)
