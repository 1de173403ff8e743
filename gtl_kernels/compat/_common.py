"""Pieces the drop-ins share: per-sequence seeds from the ``seeds=`` / ``generator=`` keywords, and per-sequence
parameters given the way the original codebases hold them (a number, ``[B]`` or ``[B, 1, 1]``)."""

from __future__ import annotations

import numbers

import torch

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def sequence_seeds(batch: int, seeds=None, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """int64 ``[batch]`` per-sequence seeds for the kernels (row ``(b, l)`` then draws with
    ``derive_keys(seeds[b], l)``, so a sequence's draws never depend on its batch).

    ``seeds``: an int (sequence ``b`` gets ``derive_keys(seeds, b)``), an int64 ``[batch]`` tensor, or ``None``;
    ``generator``: a ``torch.Generator`` one seed is drawn from when ``seeds`` is ``None`` (else torch's default).
    """
    from gtl_kernels import derive_keys

    if seeds is not None and generator is not None:
        raise ValueError("pass seeds or generator, not both")
    if seeds is None:
        gen_device = generator.device if generator is not None else "cpu"
        seeds = int(torch.randint(_INT64_MIN, _INT64_MAX, (), generator=generator, device=gen_device))
    if isinstance(seeds, bool) or not isinstance(seeds, (numbers.Integral, torch.Tensor)):
        raise TypeError(f"seeds must be an int or an int64 tensor, got {type(seeds).__name__}")
    if isinstance(seeds, numbers.Integral):
        if not _INT64_MIN <= seeds <= _INT64_MAX:
            raise ValueError(f"seeds must fit in int64, got {seeds}")
        return derive_keys(torch.tensor([int(seeds)], device=device), torch.arange(batch, device=device))
    if seeds.dtype != torch.int64 or tuple(seeds.shape) != (batch,):
        raise ValueError(f"seeds must be an int64 tensor of shape [{batch}], got {seeds.dtype} {tuple(seeds.shape)}")
    return seeds.to(device)


def per_sequence(name: str, value, batch: int, device) -> torch.Tensor:
    """A number or a tensor with ``batch`` elements (``[B]``, ``[B, 1]``, ``[B, 1, 1]``) as float64 ``[B]``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.full((batch,), float(value), dtype=torch.float64, device=device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if value.numel() == 1:
        return value.reshape(()).to(device, torch.float64).expand(batch)
    if value.numel() != batch or value.dim() < 1 or value.shape[0] != batch:
        raise ValueError(f"{name} must be a number or have {batch} elements ([B], [B, 1] or [B, 1, 1]), "
                         f"got shape {tuple(value.shape)}")
    return value.reshape(batch).to(device, torch.float64)
