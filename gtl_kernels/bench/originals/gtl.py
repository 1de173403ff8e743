"""The GTL authors' guided reverse step as their released code computes it, in plain PyTorch, operation by operation
(``_ratio_guidance_denoise``; see the package's notes on it): dense ``[B, L, V]`` buffers with the finite filler
``-1e6``, the ratio scores scattered into a buffer and log-softmaxed over ``V``, top-``n`` filter of the denoiser,
posterior, guidance, top-``K`` filter keeping the mask column, mask-mass preservation, softmax and MDLM's float32
race. The per-step logging passes of the released code are left out, and the candidate sequences are built with one
vectorized scatter (the released code loops over candidates in Python): the rendering is faster than the original,
so the measured gain of the drop-in is a lower bound.
"""

from __future__ import annotations

import math

import torch

from . import CompatCase
from .mdlm import sample_categorical, subs_log_probs

NEG = -1e6  # the released code's "impossible"
TEMPORARIES = ("~12 fp32 [B, L, V] (ratio buffer and its log-softmax, top-n keep mask and filtered copy, posterior, "
               "guided, top-K keep mask and filtered copy, mask-mass shift, softmax, race noise) and all "
               "M * n_ratio candidate sequences at once")


def guided_probs(xt, log_x_theta, ratio_model, move_chance_t: float, move_chance_s: float, mask_index: int,
                 gamma: float = 1.0, n_ratio: int = 512, top_k: int = 8, ratio_bs: int = 1024) -> torch.Tensor:
    """The probabilities ``[B, L, V]`` the authors' step draws from (unmasked rows: a point mass on the token)."""
    bsz, length, vocab = log_x_theta.shape
    masked = xt == mask_index
    seq, pos = masked.nonzero(as_tuple=True)
    m = len(seq)
    # 2-3. candidates and the ratio network on every one-token substitution
    cand = log_x_theta[masked].topk(n_ratio, dim=-1).indices  # [M, n]
    subs = xt[seq].unsqueeze(1).expand(m, n_ratio, length).clone()
    subs.scatter_(2, pos.view(m, 1, 1).expand(m, n_ratio, 1), cand.unsqueeze(-1))
    flat = subs.view(-1, length)
    scores = torch.cat([ratio_model(flat[i : i + ratio_bs]) for i in range(0, flat.shape[0], ratio_bs)])
    ratio_log = torch.full((bsz, length, vocab), NEG, device=log_x_theta.device)
    rows = torch.full((m, vocab), NEG, device=log_x_theta.device)
    ratio_log[masked] = rows.scatter(1, cand, scores.view(m, n_ratio).float())
    ratio_log = ratio_log.log_softmax(dim=-1)
    # 4. top-n filter of the denoiser
    keep = torch.zeros(bsz, length, vocab, dtype=torch.bool, device=log_x_theta.device)
    keep[masked] = torch.zeros(m, vocab, dtype=torch.bool, device=log_x_theta.device).scatter(1, cand, True)
    log_x = torch.where(keep | ~masked.unsqueeze(-1), log_x_theta, NEG)
    # 5-6. posterior and guidance; unmasked rows copy their token
    post = log_x + math.log1p(-move_chance_s / move_chance_t)
    post[..., mask_index] = math.log(move_chance_s / move_chance_t) if move_chance_s > 0 else -math.inf
    ratio_log[..., mask_index] = 0.0
    guided = gamma * ratio_log + post
    copy = ~masked
    guided[copy] = NEG
    guided[copy, xt[copy]] = 0.0
    # 8. top-K filter of masked rows, the mask column always kept
    if 0 < top_k < vocab:
        keep_k = torch.zeros_like(guided, dtype=torch.bool)
        top = guided[masked].topk(top_k, dim=-1).indices
        rows = torch.zeros(m, vocab, dtype=torch.bool, device=log_x_theta.device).scatter(1, top, True)
        rows[:, mask_index] = True
        keep_k[masked] = rows
        keep_k[copy] = True
        guided = torch.where(keep_k, guided, NEG)
    # 9. mask-mass preservation: the mask keeps log(m_s/m_t), the other columns share 1 - m_s/m_t
    mask_logit = post[..., mask_index].clone()
    others = guided.clone()
    others[..., mask_index] = -math.inf
    shifted = others - torch.logsumexp(others, dim=-1, keepdim=True) + torch.log1p(-mask_logit.exp()).unsqueeze(-1)
    guided = torch.where(masked.unsqueeze(-1), shifted, guided)
    guided[..., mask_index] = torch.where(masked, mask_logit, guided[..., mask_index])
    return guided.softmax(dim=-1)


def ratio_guidance_denoise(xt, log_x_theta, ratio_model, move_chance_t, move_chance_s, mask_index, gamma=1.0,
                           n_ratio=512, top_k=8, ratio_bs=1024, generator=None) -> torch.Tensor:
    """One guided step as the authors compute it: int64 ``[B, L]``."""
    probs = guided_probs(xt, log_x_theta, ratio_model, move_chance_t, move_chance_s, mask_index, gamma, n_ratio,
                         top_k, ratio_bs)
    return torch.where(xt != mask_index, xt, sample_categorical(probs, generator))


class StubRatio:
    """A cheap stand-in ratio network: the mean of a fixed random score per token, ``z [n, L] -> fp32 [n]``."""

    def __init__(self, vocab: int, seed: int = 5, device="cpu"):
        self.table = torch.randn(vocab, generator=torch.Generator().manual_seed(seed)).to(device)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.table[z].mean(dim=1)


class SubstitutionStubRatio(StubRatio):
    """The same stub, also scoring one-token substitutions directly (``RatioScorer``'s substitution-aware
    protocol): ``(sum of the sequence's scores - the replaced token's + the candidate's) / L``, ``O(M * K)``."""

    def score_substitutions(self, z, seq, pos, cand):
        base = self.table[z].sum(dim=1)[seq] - self.table[z[seq, pos]]  # [M]
        return (base[:, None] + self.table[cand]) / z.shape[1]


def bench_cases(quick: bool, device="cpu") -> list[CompatCase]:
    """The guided step at ``[B·L = 1024, V = 30522]`` (``B = 2, L = 512``, every position masked, ``K = 8``) with
    ``n_ratio`` 8 / 64 / 512 and a stub ratio network; ``quick``: ``[32, 500]``, ``n_ratio`` 8."""
    from gtl_kernels.compat import gtl as dropin

    from ..compat import ModelClock

    batch, length, vocab = (2, 16, 500) if quick else (2, 512, 30522)
    mask = vocab - 1
    mt, ms = 0.5, 0.5 - 1.0 / 64

    def make_inputs(ratio):
        return lambda: {"log_p": subs_log_probs(batch, length, vocab, mask, seed=6).to(device),
                        "x": torch.full((batch, length), mask, dtype=torch.int64, device=device),
                        "model_clock": ModelClock(ratio)}

    cases = []
    # whole-sequence ratio network (the drop-in builds every substituted sequence, in chunks), then one that scores
    # substitutions itself (the original cannot use that and builds them all, as before)
    settings = [(n, StubRatio(vocab, device=device), "") for n in ((8,) if quick else (8, 64, 512))]
    settings += [(n, SubstitutionStubRatio(vocab, device=device), ", substitution-aware ratio")
                 for n in ((8,) if quick else (64, 512))]
    for n, ratio, label in settings:
        cases.append(CompatCase(
            codebase="gtl", name=f"guided step n_ratio={n} fp32 [{batch * length}, {vocab}]{label}",
            make_inputs=make_inputs(ratio),
            original=lambda d, n=n: ratio_guidance_denoise(d["x"], d["log_p"], d["model_clock"], mt, ms, mask, 1.0,
                                                           n, 8),
            dropin=lambda d, n=n: dropin.ratio_guidance_denoise(d["x"], d["log_p"], d["model_clock"], mt, ms,
                                                                 mask_index=mask,
                                                                 compute_top_k_ratio=n, top_k_sampling=8, seeds=1)[0],
            floor=lambda d: torch.amax(d["log_p"], dim=-1),
            logits_bytes=batch * length * vocab * 4, temporaries=TEMPORARIES,
        ))
    # the package's own sampler on the same inputs: GuidedAncestralSampler.step with the denoiser's output given, at
    # step 32 of 64 (t = 1/2, s = 1/2 - 1/64: the times above)
    for n in (8,) if quick else (8, 64, 512):
        cases.append(CompatCase(
            codebase="gtl", name=f"GuidedAncestralSampler.step n_ratio={n} fp32 [{batch * length}, {vocab}]",
            make_inputs=make_inputs(StubRatio(vocab, device=device)),
            original=lambda d, n=n: ratio_guidance_denoise(d["x"], d["log_p"], d["model_clock"], mt, ms, mask, 1.0,
                                                           n, 8),
            dropin=lambda d, n=n: _sampler_step(d, mask, n, device),
            floor=lambda d: torch.amax(d["log_p"], dim=-1),
            logits_bytes=batch * length * vocab * 4, temporaries=TEMPORARIES,
        ))
    return cases


def _sampler_step(d: dict, mask: int, n_ratio: int, device) -> torch.Tensor:
    from gtl_kernels.gtl.samplers import GuidedAncestralSampler

    def no_denoiser(*args):
        raise AssertionError("the step was given the denoiser's output")

    sampler = GuidedAncestralSampler(no_denoiser, d["model_clock"], mask, 64, mode="topn", n_ratio=n_ratio, gamma=1.0,
                                     top_k=8, ratio_chunk=1024, device=device)
    seeds = torch.arange(d["x"].shape[0], device=d["x"].device)
    return sampler.step(d["x"], 32, seeds, logits=d["log_p"])[0]


def planner_probs(xt, pos, log_x_theta, ratio_model, mask_index: int, gamma: float = 1.0, n_ratio: int = 512,
                  top_k: int = 8) -> torch.Tensor:
    """The probabilities ``[B, V]`` of the authors' planner step (``ratio_guided_step_at_position``) at positions
    ``pos [B]``: ``log x_theta + gamma * log_softmax(ratio buffer)`` over the top-``n`` candidates, top-``K`` with
    the mask column kept, the mask keeping its (SUBS: zero) probability, softmax."""
    bsz, length, vocab = log_x_theta.shape
    rows = torch.arange(bsz, device=log_x_theta.device)
    v = log_x_theta[rows, pos].float()
    cand = v.topk(n_ratio, dim=-1).indices
    subs = xt.unsqueeze(1).expand(bsz, n_ratio, length).clone()
    subs.scatter_(2, pos.view(bsz, 1, 1).expand(bsz, n_ratio, 1), cand.unsqueeze(-1))
    scores = ratio_model(subs.view(-1, length)).view(bsz, n_ratio).float()
    r = torch.full((bsz, vocab), NEG, device=log_x_theta.device).scatter(1, cand, scores).log_softmax(dim=-1)
    r[:, mask_index] = 0.0
    guided = v + gamma * r
    if 0 < top_k < vocab:
        keep = torch.zeros_like(guided, dtype=torch.bool).scatter(1, guided.topk(top_k, dim=-1).indices, True)
        keep[:, mask_index] = True
        guided = torch.where(keep, guided, NEG)
    return guided.softmax(dim=-1)
