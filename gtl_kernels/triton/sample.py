"""``gtl::sample_triton``: one exact draw per row from the guided, tempered, top-k restricted distribution
(KERNEL_SPEC §2 ``sample``, §3 randomness). The kernels live in ``_race.py``; with ``index`` the columns are
candidates, the race's token counter is the column and the result is ``index[r, column]``. The op also returns the
log-probability of each drawn token under the distribution it was drawn from, computed by the race from the same
read (``LOGPROB`` in ``_race.py``)."""

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
) -> tuple[torch.Tensor, torch.Tensor]:
    return _race.draw(logits, bias, gamma, temperature, top_k, seeds, offset, index=index, logprob=True)


sample_triton = register("sample", _sample)
