"""Drop-in for the GTL authors' guided reverse step and planner step (Guided Transfer Learning for discrete
diffusion; the released code is an MDLM fork), with their argument names and meaning.

Their guided step (``_ratio_guidance_denoise``): at every masked position the denoiser's top-``n_ratio`` tokens
are candidates; the ratio network scores each one-token substitution of ``xt``; the guided scores are
``log x_theta(v) + log(1 - m_s/m_t) + gamma * log_softmax_candidates(ratio)(v)`` beside the mask column's
``log(m_s/m_t)``; the top-``K`` columns are kept (the mask column counts among them and is always kept); the mask
keeps probability ``m_s/m_t``; one draw; unmasked tokens are copied. They build that in about 35 fp32 ``[B, L, V]``
temporaries. Here it is sparse: candidates are read from the masked rows only (``topk_log_softmax``), candidate
sequences are built ``batch_size_ratio`` at a time, and the draw is ``masked_transition``'s candidate path over
``[M, n_ratio]`` scores: nothing of size ``[B, L, V]`` is allocated.

The top-``K`` rule, exactly: the mask column's score ``log(m_s/m_t)`` takes part in the top-``K`` selection, so a
row keeps ``K - 1`` tokens when fewer than ``K`` tokens score above it and ``K`` otherwise (ties aside); a row that
keeps no token stays masked.

``ratio_model``: a callable ``z [n, L] int64 -> [n]`` log-ratio scores (wrap a model that takes more arguments,
e.g. ``lambda z: ratio(z, sigma)``). A model that can score the one-token substitutions itself may also have
``score_substitutions(z, seq, pos, cand) -> [M, K]`` (:class:`~gtl_kernels.gtl.samplers.RatioScorer`); then no
candidate sequence is built. Randomness: ``seeds=`` / ``generator=`` / ``offset`` as in
:mod:`gtl_kernels.compat.mdlm`.
"""

from __future__ import annotations

import dataclasses
import math

import torch

import gtl_kernels as gk
from gtl_kernels.gtl.samplers import RatioScorer, SamplerStats, _impossible_stay_impossible, topn_candidates

from ._common import per_sequence, sequence_seeds


@dataclasses.dataclass
class GuidanceCache:
    """The step's reusable part for an unchanged ``xt`` (the authors' ``cache``), sparse: per masked position
    (row-major order of ``xt == mask_index``) its candidates int64 ``[M, n]``, their log-probabilities and ratio
    scores fp32 ``[M, n]``."""

    xt: torch.Tensor
    cand: torch.Tensor
    cand_logp: torch.Tensor
    rho: torch.Tensor


def ratio_guidance_denoise(xt: torch.Tensor, log_x_theta: torch.Tensor | None, ratio_model, move_chance_t,
                           move_chance_s, *, mask_index: int, gamma=1.0, compute_top_k_ratio: int = 512,
                           top_k_sampling: int = 8, batch_size_ratio: int = 1024, cache: GuidanceCache | None = None,
                           seeds=None, generator: torch.Generator | None = None,
                           offset: int = 0) -> tuple[torch.Tensor, GuidanceCache]:
    """One guided reverse step of absorbing diffusion from ``t`` to ``s``.

    Args:
        xt: int64 ``[B, L]`` current tokens.
        log_x_theta: fp32/bf16/fp16 ``[B, L, V]`` denoiser log-probabilities (or unnormalized scores); only the
            masked rows are read. May be ``None`` when ``cache`` holds this ``xt``.
        ratio_model: ``z [n, L] -> [n]`` log-ratio scores, called on at most ``batch_size_ratio`` sequences (one
            reused buffer whose rows keep their sequence between calls: the model must not keep its input after
            the call).
        move_chance_t, move_chance_s: ``m_t > m_s``, numbers or ``B``-element tensors (``[B, 1, 1]`` as theirs).
        mask_index: the mask token id. gamma: guidance strength (a number or ``[B]``).
        compute_top_k_ratio: candidates per masked position (0: every token but the mask).
        top_k_sampling: ``K`` of the top-``K`` filter (0: none).
        cache: the :class:`GuidanceCache` of a previous call; reused when its ``xt`` equals ``xt``.
    Returns:
        (int64 ``[B, L]`` next tokens, the :class:`GuidanceCache` of this ``xt``).
    """
    bsz, length = xt.shape
    device = xt.device
    masked = xt == mask_index
    seq, pos = masked.nonzero(as_tuple=True)
    if cache is None or cache.xt.shape != xt.shape or not torch.equal(cache.xt, xt):
        if log_x_theta is None or tuple(log_x_theta.shape[:-1]) != (bsz, length):
            raise ValueError(f"log_x_theta must be [B, L, V] with [B, L] = {(bsz, length)}, "
                             f"got {None if log_x_theta is None else tuple(log_x_theta.shape)}")
        vocab = log_x_theta.shape[-1]
        n = compute_top_k_ratio if 0 < compute_top_k_ratio < vocab else vocab - 1
        rows = log_x_theta.reshape(-1, vocab)
        cand_logp, cand = topn_candidates(rows, seq * length + pos, n)
        rho = RatioScorer(ratio_model, batch_size_ratio, SamplerStats())(xt, seq, pos, cand)
        cache = GuidanceCache(xt.clone(), cand, cand_logp, _impossible_stay_impossible(rho, cand_logp))
    out = xt.clone()
    if not len(seq):
        return out, cache
    mt = per_sequence("move_chance_t", move_chance_t, bsz, device)[seq]
    ms = per_sequence("move_chance_s", move_chance_s, bsz, device)[seq]
    g = per_sequence("gamma", gamma, bsz, device)[seq]
    stay = (ms / mt).clamp(0.0, 1.0)
    keep = _tokens_kept(cache, g, stay, top_k_sampling)
    keys = gk.derive_keys(sequence_seeds(bsz, seeds, generator, device)[seq], pos)
    n = cache.cand.shape[1]
    masks = torch.full_like(seq, mask_index)
    drawn = masks  # rows whose top-K filter kept only the mask stay masked
    for k in keep.unique().tolist():  # one call per number of kept tokens (at most two values)
        if k == 0:
            continue
        # every row goes to every call, and the rows of other kinds are marked unmasked: masked_transition copies
        # those without reading them, so no [M, n] gathers; a row's draw depends only on its own key
        this = keep == k
        x = torch.where(this, masks, masks.new_tensor(0 if mask_index else 1))
        tokens = gk.masked_transition(x, cache.cand_logp, cache.rho, g.float(), 1.0, k if k < n else 0,
                                      stay_prob=stay.float(), mask_id=mask_index, seeds=keys, offset=offset,
                                      index=cache.cand)
        drawn = torch.where(this, tokens, drawn)
    out[seq, pos] = drawn
    return out, cache


def _tokens_kept(cache: GuidanceCache, gamma: torch.Tensor, stay: torch.Tensor, top_k: int) -> torch.Tensor:
    """Tokens each masked row keeps after the authors' top-``K`` filter, in which the mask column (score
    ``log(m_s/m_t)``) takes part: ``K - 1`` when fewer than ``K`` tokens score above it, else ``K``. int64 ``[M]``."""
    m, n = cache.cand.shape
    if top_k <= 0:
        return torch.full((m,), n, dtype=torch.int64, device=cache.cand.device)
    # token score > mask score  <=>  log x_theta + gamma * ratio_log > log(m_s/m_t) - log(1 - m_s/m_t); in float32
    # (as the original) and in place: one [M, n] temporary.
    score = cache.rho - torch.logsumexp(cache.rho, dim=1, keepdim=True)
    score.mul_(gamma.float().unsqueeze(1)).add_(cache.cand_logp)
    threshold = (torch.log(stay) - torch.log1p(-stay)).float().unsqueeze(1)
    above = (score > threshold).sum(1)
    return torch.where(above >= top_k, top_k, top_k - 1).clamp(max=n)


def ratio_guided_step_at_position(xt: torch.Tensor, next_pos, log_x_theta: torch.Tensor, ratio_model, *,
                                  mask_index: int, gamma=1.0, compute_top_k_ratio: int = 512,
                                  top_k_sampling: int = 8, batch_size_ratio: int = 1024, seeds=None,
                                  generator: torch.Generator | None = None, offset: int = 0) -> torch.Tensor:
    """The authors' planner step: reveal position ``next_pos[b]`` of every sequence whose token there is masked.

    Candidates are the denoiser's top-``compute_top_k_ratio`` tokens at that position (only those ``B`` rows are
    read and normalized), scored by ``ratio_model`` on the one-token substitutions; the token is drawn from
    ``log x_theta(v) + gamma * ratio(v)`` over the candidates, top-``top_k_sampling`` restricted.

    Args:
        xt: int64 ``[B, L]``. next_pos: an int, or ``[B]`` / ``[B, 1]`` positions.
        log_x_theta: ``[B, L, V]`` denoiser log-probabilities (or scores), e.g. the planner step's forward pass.
        The rest as in :func:`ratio_guidance_denoise`.
    Returns:
        int64 ``[B, L]``.
    """
    bsz, length = xt.shape
    device = xt.device
    if isinstance(next_pos, int):
        pos = torch.full((bsz,), next_pos, dtype=torch.int64, device=device)
    else:
        pos = torch.as_tensor(next_pos, device=device).long().reshape(-1)
        pos = pos.expand(bsz) if pos.numel() == 1 else pos
        if pos.numel() != bsz:
            raise ValueError(f"next_pos must be an int or have shape [B] / [B, 1] with B = {bsz}, "
                             f"got {tuple(torch.as_tensor(next_pos).shape)}")
    if bool(((pos < 0) | (pos >= length)).any()):
        raise ValueError(f"next_pos must lie in [0, {length})")
    rows = torch.arange(bsz, device=device)
    seq = rows[xt[rows, pos] == mask_index]
    out = xt.clone()
    if not len(seq):
        return out
    pos = pos[seq]
    row = log_x_theta[seq, pos]
    vocab = row.shape[-1]
    n = compute_top_k_ratio if 0 < compute_top_k_ratio < vocab else vocab - 1
    cand_logp, cand = gk.topk_log_softmax(row, n)
    rho = _impossible_stay_impossible(RatioScorer(ratio_model, batch_size_ratio, SamplerStats())(xt, seq, pos, cand),
                                      cand_logp)
    cand_logp = cand_logp.masked_fill(cand == mask_index, -math.inf)  # the mask never is a token to reveal
    keys = gk.derive_keys(sequence_seeds(bsz, seeds, generator, device)[seq], pos)
    g = per_sequence("gamma", gamma, bsz, device)[seq].float()
    top_k = top_k_sampling if 0 < top_k_sampling < n else 0
    out[seq, pos] = gk.sample(cand_logp, rho, g, 1.0, top_k, seeds=keys, offset=offset, index=cand)
    return out
