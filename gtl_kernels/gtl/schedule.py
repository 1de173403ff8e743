"""Absorbing (masked) diffusion: the log-linear noise schedule, forward masking and MDLM's continuous-time loss.

Notation (MDLM, Sahoo et al. 2024): a clean sequence ``x0`` (int64 ``[B, L]``, tokens in ``[0, V)``) is noised to
``z_t`` by replacing each token independently with ``mask_id`` with probability ``m_t``. The log-linear schedule has
``m_t = (1 - eps) * t`` (``sigma(t) = -log(1 - (1 - eps) t)``), so ``alpha_t = 1 - m_t``.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class LogLinearSchedule:
    """``m_t = (1 - eps) t``: the mask probability at time ``t`` in ``[0, 1]``."""

    eps: float = 1e-3

    def mask_prob(self, t: torch.Tensor | float) -> torch.Tensor | float:
        """``m_t``, same shape/type as ``t``."""
        return (1.0 - self.eps) * t

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """MDLM's weight ``-alpha_t' / (1 - alpha_t) = m_t' / m_t = 1 / t`` of the masked-token cross-entropy."""
        return 1.0 / t

    def stay_prob(self, t: float, s: float) -> float:
        """Probability that a masked position at time ``t`` is still masked at ``s < t``: ``m_s / m_t``."""
        mt = self.mask_prob(t)
        return 0.0 if mt <= 0 else float(self.mask_prob(s) / mt)


def sample_times(batch: int, t_min: float = 1e-3, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Antithetic (stratified) times in ``[t_min, 1]``: float32 ``[batch]``.

    One uniform offset shifted by ``i / batch`` (MDLM's low-discrepancy sampler) lowers the variance of the
    ``1/t``-weighted loss compared with i.i.d. times.
    """
    u0 = torch.rand((), generator=generator)
    u = (u0 + torch.arange(batch) / batch) % 1.0
    return t_min + (1.0 - t_min) * u


def forward_mask(x0: torch.Tensor, mask_prob: torch.Tensor, mask_id: int, *, generator=None) -> torch.Tensor:
    """Noise ``x0`` (int64 ``[B, L]``) with per-sequence mask probabilities ``mask_prob`` (float ``[B]``).

    Returns int64 ``[B, L]``: each token replaced by ``mask_id`` independently with probability ``mask_prob[b]``.
    """
    u = torch.rand(x0.shape, generator=generator).to(x0.device)  # drawn on the CPU generator, used anywhere
    return torch.where(u < mask_prob.to(x0.device).view(-1, 1), torch.full_like(x0, mask_id), x0)


def mdlm_loss(log_probs: torch.Tensor, x0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, mask_id: int,
              schedule: LogLinearSchedule) -> torch.Tensor:
    """MDLM's continuous-time negative ELBO per token (SUBS parameterization), a scalar.

    Args:
        log_probs: float ``[B, L, V]`` denoiser log-probabilities ``log x_theta(z_t)``.
        x0: int64 ``[B, L]`` clean tokens; z_t: int64 ``[B, L]`` the noised input; t: float ``[B]`` times.
    Only masked positions contribute (SUBS copies unmasked ones exactly, so their loss is 0); each sequence is
    weighted by ``1/t``. Dividing by ``L`` gives the bound in nats per token.
    """
    nll = -log_probs.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # [B, L]
    nll = torch.where(z_t == mask_id, nll, torch.zeros_like(nll))
    return (schedule.loss_weight(t) * nll.sum(-1)).mean() / x0.shape[1]
