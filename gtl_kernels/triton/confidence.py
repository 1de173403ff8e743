"""``gtl::confidence_triton``: planner scores of the guided distribution ``p`` (KERNEL_SPEC §2 ``confidence``):
the argmax (lowest id on ties) and ``max_prob = p1``, ``margin = p1 - p2`` or ``neg_entropy = sum p log p``.

One read of each row (``_stats.py``): with ``m`` the maximum, ``S = sum e^(s-m)`` and ``A = sum e^(s-m) (s-m)``,
``p1 = 1/S``, ``p2 = e^(t2-m)/S`` for the runner-up score ``t2``, and ``sum p log p = A/S - ln S``.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _common
from ._register import register
from ._common import row_params
from ._stats import RowStats, fold_stats
from ..reference import CONFIDENCE_KINDS

KINDS = CONFIDENCE_KINDS  # the kernel's KIND is the index in this list


@triton.jit(do_not_specialize=["n_blocks", "plane"])
def _confidence_kernel(gamma_ptr, temp_ptr, ws_f_ptr, ws_i_ptr, arg_ptr, score_ptr, n_blocks, plane,
                       KIND: tl.constexpr):
    row = tl.program_id(0)
    gamma, inv_t, greedy, bad_t = row_params(gamma_ptr, temp_ptr, row, True)
    m, S, A, t2, arg, cnt, bad = fold_stats(ws_f_ptr, ws_i_ptr, row, n_blocks, plane)
    invalid = (bad != 0) | bad_t | (m == float("-inf"))
    c = cnt.to(tl.float32)
    if KIND == 0:
        score = tl.where(cnt > 0, 1.0 / c, 1.0 / S)
    elif KIND == 1:
        score = tl.where(cnt > 0, tl.where(cnt == 1, 1.0, 0.0), (1.0 - tl.exp(t2 - m)) / S)
    else:
        score = tl.where(cnt > 0, -tl.log(c), A / S - tl.log(S))
    if greedy:  # T == 0: the point mass at the argmax
        score = tl.full((), 0.0 if KIND == 2 else 1.0, tl.float32)
    tl.store(arg_ptr + row, tl.where(invalid, -1, arg).to(tl.int64))
    tl.store(score_ptr + row, tl.where(invalid, float("nan"), score))


def _confidence(
    logits: torch.Tensor, bias: Optional[torch.Tensor], gamma: torch.Tensor, temperature: torch.Tensor, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    n, v = logits.shape
    arg = torch.empty(n, dtype=torch.int64, device=logits.device)
    score = torch.empty(n, dtype=torch.float32, device=logits.device)
    if n == 0:
        return arg, score
    with _common.quiet(logits.device):
        st = RowStats(logits, bias, gamma, temperature, block=_common.row_block(v, logits.device, multiple=16),
                      confidence=True)
        wrap_triton(_confidence_kernel)[(n,)](
            gamma, temperature, st.ws_f, st.ws_i, arg, score, st.n_blocks, st.plane,
            KIND=KINDS.index(kind), num_warps=1, **_common.NO_FMA,
        )
    return arg, score


confidence_triton = register("confidence", _confidence)
