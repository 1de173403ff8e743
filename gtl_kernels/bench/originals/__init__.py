"""The original sampling formulas of the codebases ``gtl_kernels.compat`` replaces, rendered in plain PyTorch from
their published semantics (written here, not copied), one module per codebase.

They are the other side of every comparison: the equivalence tests (``tests/test_compat_<codebase>.py``) check the
drop-ins against them, and ``gtl_kernels.bench.compat`` times both on the same inputs in the same run. Each module
exposes ``bench_cases(quick: bool, device="cpu") -> list[CompatCase]`` (inputs and model stubs on ``device``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

CODEBASES = ("mdlm", "llada", "fast_dllm", "dream", "gtl")


@dataclasses.dataclass
class CompatCase:
    """One side-by-side benchmark case: the original formula and its drop-in on the same inputs.

    ``make_inputs()`` builds fresh random inputs (never zeros; model stubs included) as a dict; ``original`` and
    ``dropin`` take that dict and run one step (or one generation) outside the model forward where possible;
    ``floor`` is one streaming read of the same logits (``torch.amax`` over the last dim) for the ratio column.
    ``logits_bytes`` is the size of one fp32 ``[B, L, V]`` logits tensor of the case, the unit of peak extra
    memory; ``temporaries`` says how many ``[B, L, V]`` temporaries the original allocates (counted by reading it).
    """

    codebase: str
    name: str
    make_inputs: Callable[[], dict]
    original: Callable[[dict], Any]
    dropin: Callable[[dict], Any]
    floor: Callable[[dict], Any]
    logits_bytes: int
    temporaries: str = ""
