"""``gtl::philox_triton``: raw Philox4x32-10 words from ``tl.philox``, so tests can check that this backend's
generator is bit-identical to ``reference.philox4x32`` and the C++ one (KERNEL_SPEC §3)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import _common
from ._register import register


@triton.jit
def _philox_kernel(key_ptr, ctr_ptr, out_ptr, M, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < M
    key = tl.load(key_ptr + i, mask=ok, other=0)
    c0 = tl.load(ctr_ptr + 4 * i, mask=ok, other=0).to(tl.uint32)  # low 32 bits of each counter word
    c1 = tl.load(ctr_ptr + 4 * i + 1, mask=ok, other=0).to(tl.uint32)
    c2 = tl.load(ctr_ptr + 4 * i + 2, mask=ok, other=0).to(tl.uint32)
    c3 = tl.load(ctr_ptr + 4 * i + 3, mask=ok, other=0).to(tl.uint32)
    w0, w1, w2, w3 = tl.philox(key, c0, c1, c2, c3)
    tl.store(out_ptr + 4 * i, w0.to(tl.int64), mask=ok)
    tl.store(out_ptr + 4 * i + 1, w1.to(tl.int64), mask=ok)
    tl.store(out_ptr + 4 * i + 2, w2.to(tl.int64), mask=ok)
    tl.store(out_ptr + 4 * i + 3, w3.to(tl.int64), mask=ok)


def _philox(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """Words ``[..., 4]`` (uint32 values in int64) for int64 keys ``[...]`` and counters ``[..., 4]`` (broadcast as
    in the reference)."""
    shape = torch.broadcast_shapes(counter.shape, key.shape + (4,))
    key = key.to(torch.int64).unsqueeze(-1).expand(shape)[..., 0].contiguous()
    counter = counter.to(torch.int64).expand(shape).contiguous()
    out = torch.empty(shape, dtype=torch.int64, device=counter.device)
    m = key.numel()
    if m:
        block = 1024
        wrap_triton(_philox_kernel)[(triton.cdiv(m, block),)](
            key, counter, out, m, BLOCK=block, num_warps=_common.num_warps(counter.device)
        )
    return out


philox_triton = register("philox", _philox)
