"""Training loops for the GTL models: denoisers (source, vanilla, fine-tuned), domain classifiers, the ratio network
(the paper's regression recipe or the noisy-classifier estimator) and the planner.

Data sets are int64 tensors ``[N, L]`` of clean tokens in ``[0, V)``; the mask token is ``V``. Every loop is AdamW
with linear warm-up and cosine decay, gradient clipping at 1.0, a fixed number of optimizer steps, and a tqdm bar.
Randomness (batches, times, masks) comes from one ``torch.Generator`` seeded by ``TrainConfig.seed``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

import gtl_kernels as gk

from .progress import bar as progress_bar
from .samplers import one_token_substitutions
from .schedule import LogLinearSchedule, forward_mask, mdlm_loss, sample_times


@dataclasses.dataclass
class TrainConfig:
    """Optimizer settings of one training run."""

    steps: int = 500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    warm = max(1, int(cfg.warmup_frac * cfg.steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, cfg.steps - warm)))

    return f


def fit(model: nn.Module, loss_fn: Callable[[torch.Generator], torch.Tensor], cfg: TrainConfig, *,
        desc: str = "train", progress: bool = True, callback: Callable[[int], None] | None = None,
        loss_value: Callable[[torch.Tensor], float] | None = None) -> list[float]:
    """Run ``cfg.steps`` AdamW steps on ``loss_fn(generator)``; returns the loss history (one float per step).

    ``callback(step)`` runs after every optimizer step (e.g. held-out evaluation), with the model in train mode.
    ``loss_value(loss)`` is what the history records (default the loss itself; a distributed run records the mean
    over ranks)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    history: list[float] = []
    model.train()
    bar = progress_bar(cfg.steps, desc, progress)
    for _ in range(cfg.steps):
        loss = loss_fn(gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        history.append(loss_value(loss) if loss_value is not None else float(loss.detach()))
        if callback is not None:
            callback(len(history))
        if bar is not None:
            bar.update(1)
            if len(history) % 20 == 0:
                bar.set_postfix(loss=f"{sum(history[-20:]) / 20:.4f}")
    if bar is not None:
        bar.close()
    model.eval()
    return history


def _freeze(model) -> None:
    """Put a frozen helper model (a network or an oracle callable) in evaluation mode."""
    if isinstance(model, nn.Module):
        model.eval()


def _batch(data: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` rows of ``data`` drawn uniformly with replacement (small target sets are reused across a batch)."""
    return data[torch.randint(0, data.shape[0], (n,), generator=gen).to(data.device)]


def _noised(x0: torch.Tensor, mask_id: int, schedule: LogLinearSchedule, gen: torch.Generator):
    """``(z_t, t)`` with antithetic ``t`` in ``[1e-3, 1]`` and masks from the forward process."""
    t = sample_times(x0.shape[0], generator=gen).to(x0.device)
    return forward_mask(x0, schedule.mask_prob(t), mask_id, generator=gen), t


# ---------------------------------------------------------------------------------------------------------------------
# Denoisers
# ---------------------------------------------------------------------------------------------------------------------


def train_denoiser(model: nn.Module, data: torch.Tensor, cfg: TrainConfig, *, schedule: LogLinearSchedule | None = None,
                   desc: str = "denoiser", progress: bool = True, callback=None) -> list[float]:
    """Train (or, from a trained model, fine-tune) a :class:`~gtl_kernels.gtl.nets.Denoiser` on ``data`` with MDLM's
    continuous-time loss. Returns the loss history (the negative ELBO in nats per token, per step)."""
    schedule = schedule or LogLinearSchedule()
    mask_id = model.mask_id

    def loss_fn(gen):
        x0 = _batch(data, cfg.batch_size, gen)
        z, t = _noised(x0, mask_id, schedule, gen)
        return mdlm_loss(model(z, t), x0, z, t, mask_id, schedule)

    return fit(model, loss_fn, cfg, desc=desc, progress=progress, callback=callback)


# ---------------------------------------------------------------------------------------------------------------------
# Domain classifiers and the ratio network
# ---------------------------------------------------------------------------------------------------------------------


def _balanced(source: torch.Tensor, target: torch.Tensor, n: int, gen: torch.Generator):
    """Half source, half target; labels 1 = target, 0 = source, so the logit estimates ``log q/p`` (equal class
    priors: no ``log(N_T/N_S)`` offset)."""
    half = n // 2
    x = torch.cat([_batch(source, n - half, gen), _batch(target, half, gen)])
    y = torch.cat([torch.zeros(n - half), torch.ones(half)]).to(x.device)
    return x, y


def train_domain_classifier(model: nn.Module, source: torch.Tensor, target: torch.Tensor, cfg: TrainConfig, *,
                            noisy: bool, mask_id: int, label_smoothing: float = 0.0,
                            schedule: LogLinearSchedule | None = None, desc: str = "classifier",
                            progress: bool = True, callback=None) -> list[float]:
    """Binary source-vs-target classifier (a :class:`~gtl_kernels.gtl.nets.SequenceScorer`), BCE on balanced
    batches. ``noisy=False``: clean sequences, ``d(x0)``; ``noisy=True``: both classes noised by the forward process
    at independent uniform times, ``d_t(z_t)``.

    The Bayes-optimal noisy classifier's logit is ``log q_t(z)/p_t(z) = log E_{p(x0|z)}[q(x0)/p(x0)]`` (the two
    classes share the forward kernel and its time distribution), i.e. exactly the guidance function GTL needs.
    ``label_smoothing`` ``eps`` trains towards ``1 - eps`` / ``eps`` targets (the paper's recipe uses mild
    smoothing); note that it caps the learned log-ratio near ``log((1 - eps) / eps)``.
    """
    schedule = schedule or LogLinearSchedule()

    def loss_fn(gen):
        x, y = _balanced(source, target, cfg.batch_size, gen)
        if noisy:
            x, _ = _noised(x, mask_id, schedule, gen)
        y = y * (1 - label_smoothing) + (1 - y) * label_smoothing
        return F.binary_cross_entropy_with_logits(model(x), y)

    return fit(model, loss_fn, cfg, desc=desc, progress=progress, callback=callback)


def train_ratio_paper(ratio: nn.Module, source: torch.Tensor, target: torch.Tensor, clean_clf: nn.Module,
                      noisy_clf: nn.Module, cfg: TrainConfig, *, mask_id: int, cycle_weight: float = 0.1,
                      schedule: LogLinearSchedule | None = None, desc: str = "ratio (paper)",
                      progress: bool = True, callback=None) -> list[float]:
    """The paper's ratio loss (TGDP-style): ``MSE(r(z_t), d(x0))`` on noised *source* sequences, where ``d`` is the
    clean classifier's log-ratio, plus ``cycle_weight * MSE(r(z_t), d_t(z_t))`` on noised *target* sequences.

    The regression's minimizer is ``E_{p(x0|z)}[log q/p]`` (a Jensen gap below the ``log E[q/p | z]`` the guided
    step needs); it is kept as the reference recipe.
    """
    schedule = schedule or LogLinearSchedule()
    clean_clf.eval()
    noisy_clf.eval()

    def loss_fn(gen):
        xs = _batch(source, cfg.batch_size, gen)
        xt = _batch(target, cfg.batch_size, gen)
        zs, _ = _noised(xs, mask_id, schedule, gen)
        zt, _ = _noised(xt, mask_id, schedule, gen)
        with torch.no_grad():
            ys, yt = clean_clf(xs), noisy_clf(zt)
        return F.mse_loss(ratio(zs), ys) + cycle_weight * F.mse_loss(ratio(zt), yt)

    return fit(ratio, loss_fn, cfg, desc=desc, progress=progress, callback=callback)


def train_ratio_classifier(ratio: nn.Module, source: torch.Tensor, target: torch.Tensor, cfg: TrainConfig, *,
                           mask_id: int, schedule: LogLinearSchedule | None = None,
                           desc: str = "ratio (noisy classifier)", progress: bool = True, callback=None) -> list[float]:
    """The ratio network trained directly as a noise-aware source-vs-target classifier (balanced, no smoothing).

    Its logit's population minimizer is ``log q_t(z)/p_t(z) = log E_{p(x0|z)}[q(x0)/p(x0)]``, the quantity the
    guided reverse step needs, instead of the regression recipe's ``E[log q/p | z]``.
    """
    return train_domain_classifier(ratio, source, target, cfg, noisy=True, mask_id=mask_id, schedule=schedule,
                                   desc=desc, progress=progress, callback=callback)


def _guided_step_inputs(ratio, denoiser, x0: torch.Tensor, gen: torch.Generator, n_candidates: int,
                        schedule: LogLinearSchedule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The guided step at one masked position per noised sequence: candidate log-probabilities
    ``log x_theta(z)_{l,v}`` ``[B, K]``, their ratio scores ``r(z[l<-v])`` ``[B, K]``, and the index of the true
    token among the candidates ``[B]``."""
    mask_id = denoiser.mask_id
    bsz, length = x0.shape
    z, t = _noised(x0, mask_id, schedule, gen)
    rows = torch.arange(bsz, device=x0.device)
    pos = torch.randint(0, length, (bsz,), generator=gen).to(x0.device)
    z[rows, pos] = mask_id  # the position the guided step reveals
    with torch.no_grad():
        logp = denoiser(z, t)[rows, pos, :mask_id].float()  # [B, V]
    true = x0[rows, pos].unsqueeze(1)
    if n_candidates <= 0 or n_candidates >= mask_id:
        cand = torch.arange(mask_id, device=x0.device).expand(bsz, -1)
    else:
        top = logp.topk(n_candidates, dim=-1).indices
        # keep the true token as a candidate: it replaces the last top-n slot when missing
        missing = ~(top == true).any(1, keepdim=True)
        cand = torch.cat([top[:, :-1], torch.where(missing, true, top[:, -1:])], 1)
    by_substitution = getattr(ratio, "score_substitutions", None)  # e.g. a local-attention SequenceScorer
    if by_substitution is not None:
        rho = by_substitution(z, rows, pos, cand)
    else:
        rho = ratio(one_token_substitutions(z, pos, cand).view(-1, length)).view(bsz, -1)
    return logp.gather(1, cand), rho, (cand == true).float().argmax(1)


@torch.no_grad()
def conditional_nll(ratio, denoiser, data: torch.Tensor, *, n_candidates: int = 0, seed: int = 0,
                    batch_size: int = 256, schedule: LogLinearSchedule | None = None) -> float:
    """Mean cross-entropy (nats) of the true token under the guided step on noised ``data`` (int64 ``[N, L]``):
    the held-out version of :func:`train_ratio_conditional`'s loss, usable with any ratio estimator."""
    schedule = schedule or LogLinearSchedule()
    gen = torch.Generator().manual_seed(seed)
    was_training = isinstance(ratio, nn.Module) and ratio.training
    if isinstance(ratio, nn.Module):
        ratio.eval()
    total = 0.0
    for i in range(0, data.shape[0], batch_size):
        logp, rho, label = _guided_step_inputs(ratio, denoiser, data[i : i + batch_size], gen, n_candidates, schedule)
        guided = gk.guided_log_softmax(logp, rho.float(), 1.0)  # the sampler's guided distribution at gamma = 1
        total -= float(guided.gather(1, label.unsqueeze(1)).double().sum())
    if was_training:
        ratio.train()
    return total / data.shape[0]


def train_ratio_conditional(ratio: nn.Module, denoiser: nn.Module, target: torch.Tensor, cfg: TrainConfig, *,
                            n_candidates: int = 0, source: torch.Tensor | None = None, classifier_weight: float = 0.0,
                            schedule: LogLinearSchedule | None = None,
                            desc: str = "ratio (conditional)", progress: bool = True, callback=None) -> list[float]:
    """The ratio network trained through the guided step itself: the cross-entropy of the target's true token under
    the guided conditional ``softmax_v(log x_theta(z)_{l,v} + r(z[l <- v]))`` at a masked position ``l`` of noised
    *target* sequences, with the frozen source denoiser ``x_theta``.

    It is a proper scoring rule for the guided conditional, so its minimizer is
    ``r(z[l <- v]) = log q(v | z) - log x_theta(z)_{l,v} + c(z, l)``; with the exact source denoiser this is
    ``log q_t(z[l<-v]) / p_t(z[l<-v]) + c = log E[q/p | z[l<-v]] + c``, the guidance function (``c`` cancels in the
    guided step), and with a learned denoiser it also absorbs the denoiser's error on the target. Unlike a domain
    classifier it does not saturate when source and target are easy to tell apart: its signal is the target's
    conditional token distribution, not the domain label.

    Args:
        n_candidates: candidates per example: 0 = all ``V`` tokens (exact), else the denoiser's top
            ``n_candidates`` plus the true token (the sampler's top-``n_ratio`` setting).
        source, classifier_weight: optionally add ``classifier_weight`` times the noisy-classifier loss of
            :func:`train_ratio_classifier` on balanced ``source``/``target`` batches (both losses are minimized by
            the same log-ratio, up to the constant).
    """
    schedule = schedule or LogLinearSchedule()
    _freeze(denoiser)
    mask_id = denoiser.mask_id

    def loss_fn(gen):
        x0 = _batch(target, cfg.batch_size, gen)
        logp, rho, label = _guided_step_inputs(ratio, denoiser, x0, gen, n_candidates, schedule)
        loss = F.cross_entropy(logp + rho, label)  # the guided step at gamma = 1, differentiable in rho
        if classifier_weight > 0 and source is not None:
            x, y = _balanced(source, target, cfg.batch_size, gen)
            z, _ = _noised(x, mask_id, schedule, gen)
            loss = loss + classifier_weight * F.binary_cross_entropy_with_logits(ratio(z), y)
        return loss

    return fit(ratio, loss_fn, cfg, desc=desc, progress=progress, callback=callback)


@dataclasses.dataclass
class Selection:
    """What :func:`train_ratio_selected` chose: the optimizer step whose weights were kept (0 = the untrained ratio,
    which guides nothing), its held-out guided NLL, and the curve ``[(step, nll), ...]`` it was chosen from."""

    step: int
    nll: float
    curve: list


def split_holdout(data: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, held_out)``: a seeded random ``fraction`` of the rows of ``data`` held out, at least one row on each
    side. ``data`` int64 ``[N, L]`` with ``N >= 2``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n = data.shape[0]
    if n < 2:
        raise ValueError(f"data must have at least 2 rows to hold one out, got {n}")
    k = min(max(1, round(fraction * n)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(data.device)
    return data[order[k:]], data[order[:k]]


def train_ratio_selected(ratio: nn.Module, denoiser: nn.Module, target: torch.Tensor, cfg: TrainConfig, *,
                         holdout: float = 0.2, evals: int = 20, eval_rows: int = 512, **kw) -> Selection:
    """:func:`train_ratio_conditional` with early stopping on the target set itself: a ``holdout`` fraction of the
    target sequences is kept out of training, the guided NLL on it (:func:`conditional_nll`, the same masks at every
    evaluation) is measured at step 0 and ``evals`` times during training, and the weights of the best evaluation are
    kept (step 0 is the untrained ratio: on a target the source already fits, the selection may keep no guidance).

    With few target sequences the conditional loss can fit their noise (the training NLL falls below the exact
    ratio's while the held-out one rises); with many it is still falling at the end. Choosing the stopping point on
    held-out target sequences needs nothing but the target set. ``eval_rows``: the held-out sequences are repeated
    (each with fresh masks) up to this many rows, so that a small held-out set still gives a steady estimate.
    Other keywords go to :func:`train_ratio_conditional`."""
    train, held = split_holdout(target, holdout, cfg.seed)
    held = held.repeat(max(1, -(-eval_rows // held.shape[0])), 1)
    every = max(1, cfg.steps // max(1, evals))
    n_candidates = kw.get("n_candidates", 0)

    best, state = Selection(0, math.inf, []), {}

    def callback(step: int) -> None:
        if step % every and step != cfg.steps:
            return
        nll = conditional_nll(ratio, denoiser, held, n_candidates=n_candidates, seed=cfg.seed + 1,
                              schedule=kw.get("schedule"))
        best.curve.append((step, nll))
        if nll < best.nll:
            best.step, best.nll = step, nll
            state.update({k: v.detach().clone() for k, v in ratio.state_dict().items()})

    callback(0)  # the untrained ratio
    train_ratio_conditional(ratio, denoiser, train, cfg, callback=callback, **kw)
    ratio.load_state_dict(state)
    ratio.eval()
    return best


# ---------------------------------------------------------------------------------------------------------------------
# Planner
# ---------------------------------------------------------------------------------------------------------------------


def train_planner(planner: nn.Module, denoiser: nn.Module, data: torch.Tensor, cfg: TrainConfig, *,
                  schedule: LogLinearSchedule | None = None, desc: str = "planner", progress: bool = True, callback=None) -> list[float]:
    """Train the planner (a :class:`~gtl_kernels.gtl.nets.Planner`) to predict, at every masked position of a noised
    sequence, whether the frozen denoiser's argmax equals the true token (BCE over masked positions)."""
    schedule = schedule or LogLinearSchedule()
    mask_id = denoiser.mask_id
    _freeze(denoiser)

    def loss_fn(gen):
        x0 = _batch(data, cfg.batch_size, gen)
        z, t = _noised(x0, mask_id, schedule, gen)
        with torch.no_grad():
            right = (denoiser(z, t).argmax(-1) == x0).float()
        masked = z == mask_id
        loss = F.binary_cross_entropy_with_logits(planner(z), right, reduction="none")
        return (loss * masked).sum() / masked.sum().clamp(min=1)

    return fit(planner, loss_fn, cfg, desc=desc, progress=progress, callback=callback)
