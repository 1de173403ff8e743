"""``gtl::topk_log_softmax_triton``: the ``k`` most probable tokens of the guided distribution and their
log-probabilities, sorted descending with ties toward the lower id (KERNEL_SPEC §2, GTL's candidate proposal).

One read of each row: kernel 1 (``_stats.py``) folds the log-sum-exp and keeps the top-k candidate buffer
(``_topk.py``) of each split; the second kernel merges the split buffers and writes ``(s - m) - log S`` for the ``k``
best. ``k > K_MAX`` takes the slow path ``guided_log_softmax`` + ``torch.sort``. Invalid rows get NaN and -1 in all
``k`` places (KERNEL_SPEC §4).

Rows whose distribution is a uniform point set (``T == 0``: the greedy token; ``+inf`` scores: those tokens) list the
set first and then every other token at ``-inf`` in id order, as a stable sort of the log-probabilities does; that
tail comes from a scan over the row which stops once it has the ids it needs (only such rows pay for it).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _common
from ._register import register
from ._common import K_MAX, load_scores, row_params, unpack_key
from ._race import topk_sizes
from ._stats import RowStats, fold_stats
from ._topk import buffer_merge, load_split_buffers


@triton.jit(do_not_specialize=["k", "n_blocks", "plane", "n_splits"])
def _topk_write_kernel(
    logits_ptr, stride_l, bias_ptr, stride_b, gamma_ptr, temp_ptr, ws_f_ptr, ws_i_ptr, ws_buf_ptr, val_ptr, idx_ptr,
    V, k, n_blocks, plane, n_splits,
    BLOCK: tl.constexpr, K_PAD: tl.constexpr, SPLITS_PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    row = tl.program_id(0)
    gamma, inv_t, greedy, bad_t = row_params(gamma_ptr, temp_ptr, row, True)
    m, S, A, t2, arg, cnt, bad = fold_stats(ws_f_ptr, ws_i_ptr, row, n_blocks, plane)
    invalid = (bad != 0) | bad_t | (m == float("-inf"))

    one = row + tl.arange(0, 1)  # the buffers are handled as [rows, ...] tiles of one row
    bufs, _ = load_split_buffers(ws_buf_ptr, ws_i_ptr, one, one >= 0, n_splits, SPLITS_PAD, K_PAD)
    s, col = unpack_key(tl.reshape(buffer_merge(bufs, K_PAD), [K_PAD]))

    # Point-set rows: `n_set` tokens of log-probability -ln(n_set), listed first (they lead the buffer too).
    special = greedy | (cnt > 0)
    n_set = tl.where(greedy, 1, cnt)
    # (s - m) - log S, not s - (m + log S): the shift first keeps log S when it is below ulp(m) of a large maximum
    value = tl.where(special, -tl.log(n_set.to(tl.float32)), (s - m) - tl.log(S))
    pos = tl.arange(0, K_PAD)
    # an invalid row writes all k entries (NaN, -1) here; a valid point-set row only its set (the tail is below)
    head = (pos < k) & tl.where(special & ~invalid, pos < n_set, True)
    base = row.to(tl.int64) * k
    tl.store(val_ptr + base + pos, tl.where(invalid, float("nan"), value), mask=head)
    tl.store(idx_ptr + base + pos, tl.where(invalid, -1, col).to(tl.int64), mask=head)

    if special & ~invalid:
        # The rest, in id order: every token outside the set, at -inf.
        need = k - n_set
        found = tl.full((), 0, tl.int32)
        for blk in range(0, tl.where(need > 0, n_blocks, 0)):
            if found < need:
                c = blk * BLOCK + tl.arange(0, BLOCK)
                if greedy:
                    outside = (c != arg) & (c < V)
                else:
                    sc = load_scores(logits_ptr, row.to(tl.int64) * stride_l, bias_ptr, row.to(tl.int64) * stride_b,
                                     c, c < V, gamma, inv_t, -1, HAS_BIAS, False)
                    outside = (sc != float("inf")) & (c < V)
                rank = found + tl.cumsum(outside.to(tl.int32), 0) - 1
                ok = outside & (rank < need)
                tl.store(val_ptr + base + n_set + rank, tl.full([BLOCK], float("-inf"), tl.float32), mask=ok)
                tl.store(idx_ptr + base + n_set + rank, c.to(tl.int64), mask=ok)
                found += tl.sum(outside.to(tl.int32))


def topk(logits, k, bias, gamma, temperature):
    n, v = logits.shape
    device = logits.device
    values = torch.empty((n, k), dtype=torch.float32, device=device)
    ids = torch.empty((n, k), dtype=torch.int64, device=device)
    if n == 0 or k == 0:
        return values, ids
    if k > K_MAX:
        return _topk_by_sort(logits, k, bias, gamma, temperature)
    k_pad, block, _, _ = topk_sizes(v, k, device)
    if k_pad == K_MAX and block > k_pad and not _common.interpreted(device):
        # kernel 1 keeps the block statistics live beside the buffer: 2048-token blocks spill at K_PAD 1024 on sm_80
        # and sm_90, blocks of K_PAD tokens do not (gtl_kernels.triton.aot_check)
        block = k_pad
    with _common.quiet(device):
        splits = _common.topk_splits(n, triton.cdiv(v, block), k_pad, device)
        st = RowStats(logits, bias, gamma, temperature, block=block, k_pad=k_pad, splits=splits)
        wrap_triton(_topk_write_kernel)[(n,)](
            logits, logits.stride(0), logits if bias is None else bias, 0 if bias is None else bias.stride(0), gamma,
            temperature, st.ws_f, st.ws_i, st.ws_buf, values, ids, v, k, st.n_blocks, st.plane, st.splits,
            BLOCK=block, K_PAD=k_pad, SPLITS_PAD=triton.next_power_of_2(st.splits), HAS_BIAS=bias is not None,
            num_warps=_common.num_warps(device), **_common.NO_FMA,
        )
    return values, ids


def _topk_by_sort(logits, k, bias, gamma, temperature):
    """``k > K_MAX``: the full log-probabilities, then a stable descending sort (as the reference does)."""
    from .guided_log_softmax import log_softmax

    logp = log_softmax(logits, bias, gamma, temperature)
    order = torch.sort(logp.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf")), dim=-1,
                       descending=True, stable=True).indices[:, :k]
    invalid = logp[:, :1].isnan()
    return logp.gather(1, order), torch.where(invalid, -1, order)


def _topk_log_softmax(
    logits: torch.Tensor, k: int, bias: Optional[torch.Tensor], gamma: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return topk(logits, k, bias, gamma, temperature)


topk_log_softmax_triton = register("topk_log_softmax", _topk_log_softmax)
