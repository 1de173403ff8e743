"""``gtl::masked_transition_triton``: one reverse step of absorbing diffusion (KERNEL_SPEC §2 ``masked_transition``).

Unmasked positions are copied without reading their logits row; a masked position stays masked iff
``U(0, stream 1) < stay_prob`` (decided first, and then its row is not read either); otherwise it gets a token drawn as
in ``sample`` from the allowed set without ``mask_id``. With ``index`` (the candidate path) the columns are
candidates, those whose id is ``mask_id`` are excluded, the race's token counter is the column and the result is
``index[r, column]``. The kernels live in ``_race.py``."""

from __future__ import annotations

from typing import Optional

import torch

from . import _race
from ._register import register


def _masked_transition(
    x_t: torch.Tensor,
    logits: torch.Tensor,
    bias: Optional[torch.Tensor],
    gamma: torch.Tensor,
    temperature: torch.Tensor,
    top_k: int,
    stay_prob: torch.Tensor,
    mask_id: int,
    seeds: torch.Tensor,
    offset: torch.Tensor,
    index: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    return _race.draw(
        logits, bias, gamma, temperature, top_k, seeds, offset, index=index, x_t=x_t, stay_prob=stay_prob,
        mask_id=mask_id,
    )


masked_transition_triton = register("masked_transition", _masked_transition)
