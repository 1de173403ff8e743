"""Drop-in for MDLM's sampling step (Sahoo et al. 2024, ``diffusion.py``): ``sample_categorical``, ``ddpm_update``
and ``ddpm_caching_update``, with MDLM's argument names, shapes and meaning.

MDLM's step builds ``q_xs = p_x0 * (m_t - m_s)`` with the mask column set to ``m_s``, draws from it with float32
Gumbel-style noise over every ``(b, l, v)`` and copies the unmasked tokens back: about eight ``[B, L, V]``
temporaries. Under the SUBS parameterization (``p_x0`` has no mass on the mask token) that is exactly: stay masked
with probability ``m_s / m_t``, else draw a token from ``p_x0``; here it is one call of ``masked_transition``, which
reads only the masked rows, draws exactly (64-bit Philox race) and allocates nothing of size ``[B, L, V]``.

Randomness: ``seeds=`` (an int, or int64 ``[B]`` per-sequence seeds) or ``generator=`` (one seed drawn from it per
call). With fixed ``seeds`` pass the step index as ``offset`` so that steps draw independently.
"""

from __future__ import annotations

import torch

import gtl_kernels as gk

from ._common import per_sequence, sequence_seeds

_BLOCK_ELEMENTS = 1 << 22  # elements of log-probabilities materialized at a time by sample_categorical


def sample_categorical(categorical_probs: torch.Tensor, *, seeds=None, generator: torch.Generator | None = None,
                       offset: int = 0) -> torch.Tensor:
    """One draw per row from (unnormalized) probabilities, MDLM's ``_sample_categorical``.

    Args:
        categorical_probs: float ``[..., V]`` non-negative weights (rows need not sum to 1), e.g. ``[B, L, V]``.
        seeds, generator, offset: see the module docstring; the leading dimension is the sequence.
    Returns:
        int64 ``[...]`` drawn indices (exact: a weight ``w`` is drawn with probability ``w / sum``; -1 for a row
        without positive weight or with a NaN).

    The kernels take log-weights; they are computed in blocks of rows (at most ``2**22`` elements at a time), so
    the extra memory stays small whatever the size of the input.
    """
    if not isinstance(categorical_probs, torch.Tensor) or not categorical_probs.is_floating_point():
        raise TypeError("categorical_probs must be a float tensor")
    if categorical_probs.dim() < 1 or categorical_probs.shape[-1] < 1:
        raise ValueError(f"categorical_probs must be [..., V] with V >= 1, got {tuple(categorical_probs.shape)}")
    lead, v = categorical_probs.shape[:-1], categorical_probs.shape[-1]
    probs = categorical_probs.reshape(-1, v) if len(lead) else categorical_probs.reshape(1, v)
    n = probs.shape[0]
    batch = lead[0] if len(lead) else 1
    seq = sequence_seeds(batch, seeds, generator, probs.device)
    per_seq = n // max(batch, 1)
    keys = gk.derive_keys(seq.view(-1, 1), torch.arange(per_seq, device=probs.device)).reshape(-1)
    out = torch.empty(n, dtype=torch.int64, device=probs.device)
    rows = max(1, _BLOCK_ELEMENTS // v)
    for i in range(0, n, rows):
        block = probs[i : i + rows]
        log_w = (block if block.dtype == torch.float64 else block.float()).log().float()
        out[i : i + rows] = gk.sample(log_w, seeds=keys[i : i + rows], offset=offset)
    return out.view(lead)


def ddpm_update(log_p_x0: torch.Tensor, x: torch.Tensor, move_chance_t, move_chance_s, mask_index: int, *,
                seeds=None, generator: torch.Generator | None = None, offset: int = 0) -> torch.Tensor:
    """One reverse step of MDLM's absorbing diffusion (``_ddpm_update`` after its ``forward``).

    Args:
        log_p_x0: fp32/bf16/fp16 ``[B, L, V]`` the denoiser's log-probabilities of the clean token in SUBS form
            (the mask column ``-inf``; MDLM's ``forward`` output). Unmasked rows are not read.
        x: int64 ``[B, L]`` current tokens; ``mask_index`` marks masked positions.
        move_chance_t, move_chance_s: the mask probabilities ``m_t > m_s`` at the step's two times: numbers or
            tensors with ``B`` elements (MDLM holds them as ``[B, 1, 1]``).
        mask_index: the mask token id.
        seeds, generator, offset: see the module docstring.
    Returns:
        int64 ``[B, L]``: unmasked tokens copied; a masked token stays masked with probability ``m_s / m_t``,
        else takes a token drawn from ``p_x0`` (never the mask).
    """
    stay = _stay_prob(x, move_chance_t, move_chance_s, log_p_x0)
    return gk.masked_transition(x, log_p_x0, stay_prob=stay, mask_id=mask_index,
                                seeds=sequence_seeds(x.shape[0], seeds, generator, x.device), offset=offset)


def ddpm_caching_update(log_p_x0: torch.Tensor, x: torch.Tensor, move_chance_t, move_chance_s, mask_index: int, *,
                        seeds=None, generator: torch.Generator | None = None,
                        offset: int = 0) -> tuple[torch.Tensor, bool]:
    """MDLM's ``_ddpm_caching_update``: :func:`ddpm_update` plus whether any token changed.

    MDLM re-runs its denoiser only when the tokens changed (the posterior of the clean sequence depends on ``x``
    alone); keep ``log_p_x0`` and pass it again while ``changed`` is ``False``.

    Returns:
        (int64 ``[B, L]`` next tokens, ``changed``: a Python bool).
    """
    x_next = ddpm_update(log_p_x0, x, move_chance_t, move_chance_s, mask_index, seeds=seeds, generator=generator,
                         offset=offset)
    return x_next, bool((x_next != x).any())


def _stay_prob(x, move_chance_t, move_chance_s, log_p_x0) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be an int64 [B, L] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(log_p_x0, torch.Tensor) or tuple(log_p_x0.shape[:-1]) != tuple(x.shape):
        raise ValueError(f"log_p_x0 must be [B, L, V] with [B, L] = {tuple(x.shape)}, "
                         f"got {tuple(getattr(log_p_x0, 'shape', ()))}")
    mt = per_sequence("move_chance_t", move_chance_t, x.shape[0], x.device)
    ms = per_sequence("move_chance_s", move_chance_s, x.shape[0], x.device)
    if bool(((mt <= 0) | (ms < 0) | (ms > mt)).any()):
        raise ValueError("move_chance_t and move_chance_s must satisfy 0 <= move_chance_s <= move_chance_t, "
                         "move_chance_t > 0")
    return (ms / mt).float()
