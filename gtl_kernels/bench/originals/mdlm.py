"""MDLM's sampling step as its code computes it (Sahoo et al. 2024, ``diffusion.py``), in plain PyTorch.

``sample_categorical``: float32-style Gumbel race ``argmax(p / (1e-10 - log(U + 1e-10)))`` with one uniform per
``(b, l, v)``; ``ddpm_update``: ``q_xs = exp(log_p_x0) * (m_t - m_s)`` with the mask column set to ``m_s``, a draw
from ``q_xs`` at every position, masked or not, and the unmasked tokens copied back.
"""

from __future__ import annotations

import math

import torch

from . import CompatCase

# [B, L, V] fp32 temporaries of one ddpm_update, by reading it: exp, the scaled copy q_xs, rand_like, U + 1e-10,
# its log, 1e-10 - log, the division (7; the argmax and copy are [B, L]).
TEMPORARIES = "7 fp32 [B, L, V]: exp, q_xs, rand, U + 1e-10, log, 1e-10 - log, q_xs / noise"


def sample_categorical(categorical_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """MDLM's ``_sample_categorical``: ``[..., V]`` weights -> int64 ``[...]``."""
    u = torch.rand(categorical_probs.shape, dtype=categorical_probs.dtype, device=categorical_probs.device,
                   generator=generator)
    gumbel_norm = 1e-10 - (u + 1e-10).log()
    return (categorical_probs / gumbel_norm).argmax(dim=-1)


def q_xs(log_p_x0: torch.Tensor, move_chance_t, move_chance_s, mask_index: int) -> torch.Tensor:
    """The step's unnormalized transition weights ``[B, L, V]`` (``move_chance_*`` as ``[B, 1, 1]`` or numbers)."""
    q = log_p_x0.exp() * (move_chance_t - move_chance_s)
    q[:, :, mask_index] = (move_chance_s if isinstance(move_chance_s, float) else move_chance_s[:, :, 0])
    return q


def ddpm_update(log_p_x0, x, move_chance_t, move_chance_s, mask_index: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """MDLM's ``_ddpm_update`` after the forward pass: int64 ``[B, L]``."""
    _x = sample_categorical(q_xs(log_p_x0, move_chance_t, move_chance_s, mask_index), generator)
    copy_flag = (x != mask_index).to(x.dtype)
    return copy_flag * x + (1 - copy_flag) * _x


def subs_log_probs(batch: int, length: int, vocab: int, mask_index: int, seed: int, scale: float = 3.0):
    """Random SUBS log-probabilities ``[B, L, V]`` fp32 (mask column ``-inf``), never zeros."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=gen) * scale
    logits[..., mask_index] = -math.inf
    return torch.log_softmax(logits, dim=-1)


def bench_cases(quick: bool, device="cpu") -> list[CompatCase]:
    """MDLM's step at ``[B·L = 1024, V = 50257]`` (half the positions masked), ``quick``: ``[64, 1000]``."""
    from gtl_kernels.compat import mdlm as dropin

    batch, length, vocab = (1, 64, 1000) if quick else (1, 1024, 50257)
    mask = vocab - 1
    mt, ms = 0.5, 0.5 - 1.0 / 64

    def make_inputs():
        gen = torch.Generator().manual_seed(1)
        x = torch.randint(0, mask, (batch, length), generator=gen)
        x[torch.rand(batch, length, generator=gen) < 0.5] = mask
        return {"log_p_x0": subs_log_probs(batch, length, vocab, mask, seed=2).to(device), "x": x.to(device)}

    return [CompatCase(
        codebase="mdlm", name=f"ddpm_update fp32 [{batch * length}, {vocab}]", make_inputs=make_inputs,
        original=lambda d: ddpm_update(d["log_p_x0"], d["x"], torch.full((batch, 1, 1), mt, device=device),
                                       torch.full((batch, 1, 1), ms, device=device), mask),
        dropin=lambda d: dropin.ddpm_update(d["log_p_x0"], d["x"], mt, ms, mask, seeds=3, offset=1),
        floor=lambda d: torch.amax(d["log_p_x0"], dim=-1),
        logits_bytes=batch * length * vocab * 4, temporaries=TEMPORARIES,
    )]
