"""``gtl::sample_triton``: one exact draw per row from the guided, tempered, top-k restricted distribution
(KERNEL_SPEC §2 ``sample``, §3 randomness). The kernels live in ``_race.py``; with ``index`` the columns are
candidates, the race's token counter is the column and the result is ``index[r, column]``."""

from __future__ import annotations

from typing import Optional

import torch

from . import _race
from ._register import register


def _sample(
    logits: torch.Tensor,
    bias: Optional[torch.Tensor],
    gamma: torch.Tensor,
    temperature: torch.Tensor,
    top_k: int,
    seeds: torch.Tensor,
    offset: torch.Tensor,
    index: Optional[torch.Tensor],
) -> torch.Tensor:
    return _race.draw(logits, bias, gamma, temperature, top_k, seeds, offset, index=index)


sample_triton = register("sample", _sample)
