"""End-to-end sampler steps with random-weight models: how much of a step is spent outside model forward passes.

Three steps, each the package's own sampler step (its public ``step``), timed for every selected backend, beside the
same step computed the original codebases' way (``bench/originals``):

* ``ancestral``: ``AncestralSampler.step`` mid-trajectory (``t = 0.5``, half the positions masked, ``T = 64``):
  a denoiser pass over ``[B, L]``, then ``masked_transition`` over the ``B * L`` rows. The PyTorch way is MDLM's
  ``_ddpm_update``: the model's log-softmax, a scaled copy, a noise tensor, a race over every row.
* ``guided``: ``GuidedAncestralSampler.step`` (top-``n_ratio`` candidates of every masked row, the ratio network on
  the one-token substitutions streamed in chunks, ``masked_transition``'s candidate path, ``K = 8``); the PyTorch way
  is the GTL authors' dense step.
* ``scheduled``: ``ScheduledSampler.step`` (max-prob order): a denoiser pass, the planner score ``confidence`` over all
  ``B * L`` rows, the greedy position, ``topk_log_softmax`` of its row only, the ratio network on the
  ``B * n_ratio`` substitutions and ``sample(..., index=candidates)``. The PyTorch way: full softmax + max,
  log-softmax + topk, a separate add of the ratio scores, softmax, noise, race.

Model sizes (``SIZES``): ``paper`` is GTL's (denoiser ~61M parameters, ratio network ~4.4M, V = 30522, L = 512);
``cpu`` and ``tiny`` are smaller so that a CPU run finishes. On CUDA the forward passes run under bf16 autocast.
The backend of a step is chosen with ``GTL_KERNELS_BACKEND`` for the duration of its timing.

Each model call is bracketed by device synchronizations and its time summed; ``outside_share = 1 - forward / step``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time

import torch
from torch import nn

from .. import backends
from ..gtl.nets import Denoiser, SequenceScorer, TrunkConfig
from ..gtl.samplers import AncestralSampler, GuidedAncestralSampler, ScheduledSampler
from .baselines import sample_categorical
from .originals import gtl as gtl_original
from .originals import mdlm as mdlm_original
from .timing import synchronize


@dataclasses.dataclass(frozen=True)
class E2ESize:
    """Models and batch of the end-to-end steps. ``den``/``ratio``: (d_model, n_heads, n_layers)."""

    vocab: int
    length: int
    batch: int
    den: tuple[int, int, int]
    ratio: tuple[int, int, int]
    n_ratio: int
    ratio_chunk: int


SIZES = {
    "paper": E2ESize(vocab=30522, length=512, batch=16, den=(512, 8, 6), ratio=(128, 4, 2), n_ratio=512,
                     ratio_chunk=1024),
    "cpu": E2ESize(vocab=30522, length=128, batch=2, den=(256, 4, 2), ratio=(64, 2, 1), n_ratio=64, ratio_chunk=128),
    "tiny": E2ESize(vocab=1000, length=16, batch=2, den=(32, 2, 1), ratio=(16, 2, 1), n_ratio=8, ratio_chunk=16),
}
STEPS = 64  # ancestral time grid
GAMMA = 1.0


def build_models(size: E2ESize, device: torch.device, seed: int = 0):
    """(denoiser, ratio network, source label); random weights, eval mode, on ``device``."""
    torch.manual_seed(seed)

    def cfg(d_h_l):
        d, h, layers = d_h_l
        return TrunkConfig(vocab=size.vocab, max_len=size.length, d_model=d, n_heads=h, n_layers=layers)

    den, ratio = Denoiser(cfg(size.den)), SequenceScorer(cfg(size.ratio))
    return den.to(device).eval(), ratio.to(device).eval(), "gtl.nets"


class _Timed:
    """Calls a model (``__call__`` and, for a denoiser, ``scores``) under the device's autocast, bracketed by
    synchronizations; sums the seconds."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device, self.seconds = model, device, 0.0

    def _run(self, fn, *args):
        synchronize(self.device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = fn(*args).float()
        synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        return out

    def __call__(self, *args):
        return self._run(self.model, *args)

    def scores(self, *args):
        return self._run(self.model.scores, *args)


@contextlib.contextmanager
def _backend(impl: str):
    """Every op call of the block goes to backend ``impl`` (the samplers call the ops without ``backend=``)."""
    old = os.environ.get(backends.ENV_VAR)
    os.environ[backends.ENV_VAR] = impl
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(backends.ENV_VAR, None)
        else:
            os.environ[backends.ENV_VAR] = old


# ---------------------------------------------------------------------------------------------------------------------
# The three steps
# ---------------------------------------------------------------------------------------------------------------------


def _ancestral_step(impl, den, z, seeds, mask_id):
    i = STEPS // 2
    if impl == "pytorch":
        t, s = 1.0 - i / STEPS, 1.0 - (i + 1) / STEPS
        logp = den(z, torch.full((z.shape[0],), t, device=z.device))
        return mdlm_original.ddpm_update(logp, z, t, s, mask_id)
    with _backend(impl):
        return AncestralSampler(den, mask_id, STEPS).step(z, i, seeds)[0]


def _guided_step(impl, den, ratio, z, seeds, mask_id, size: E2ESize):
    i = STEPS // 2
    if impl == "pytorch":
        t, s = 1.0 - i / STEPS, 1.0 - (i + 1) / STEPS
        logp = den(z, torch.full((z.shape[0],), t, device=z.device))
        return gtl_original.ratio_guidance_denoise(z, logp, ratio, t, s, mask_id, GAMMA, size.n_ratio, 8,
                                                   size.ratio_chunk)
    sampler = GuidedAncestralSampler(den, ratio, mask_id, STEPS, mode="topn", n_ratio=size.n_ratio, gamma=GAMMA,
                                     top_k=8, ratio_chunk=size.ratio_chunk)
    with _backend(impl):
        return sampler.step(z, i, seeds)[0]


def _scheduled_step(impl, den, ratio, z, seeds, mask_id, size: E2ESize):
    if impl != "pytorch":
        sampler = ScheduledSampler(den, mask_id, ratio, order="max_prob", n_ratio=size.n_ratio, gamma=GAMMA,
                                   ratio_chunk=size.ratio_chunk)
        with _backend(impl):
            return sampler.step(z, 0, seeds)[0]
    bsz = z.shape[0]
    rows = torch.arange(bsz, device=z.device)
    masked = z == mask_id
    logp = den(z, masked.float().mean(1))
    n = min(size.n_ratio, logp.shape[-1] - 1)
    conf = torch.softmax(logp, dim=-1).amax(-1)
    pos = torch.where(masked, conf, -math.inf).argmax(-1)
    cand_logp, cand = torch.log_softmax(logp[rows, pos], dim=-1).topk(n, dim=-1)
    subs = z.unsqueeze(1).expand(bsz, n, z.shape[1]).clone()
    subs.scatter_(2, pos.view(bsz, 1, 1).expand(bsz, n, 1), cand.unsqueeze(-1))
    subs = subs.view(-1, z.shape[1])
    rho = torch.cat([ratio(subs[i : i + size.ratio_chunk]) for i in range(0, subs.shape[0], size.ratio_chunk)])
    rho = torch.where(cand_logp == -math.inf, 0.0, rho.view(bsz, n))
    choice = sample_categorical(torch.softmax((cand_logp + GAMMA * rho).double(), dim=-1))
    z = z.clone()
    z[rows, pos] = cand.gather(1, choice.unsqueeze(-1)).squeeze(-1)
    return z


def run_e2e(device, impls: list[str], size_name: str = "paper", *, batch: int | None = None, repeats: int = 3,
            seed: int = 0, progress=None) -> list[dict]:
    """Time one ancestral, one guided and one scheduled step for each of ``impls`` (backend names and ``"pytorch"``).

    Returns one record per (step, impl): ``step_s`` median step time, ``forward_s`` the forward-pass time of that
    run, ``outside_share = 1 - forward_s / step_s``. ``progress``: an optional callable invoked after each record.
    """
    device = torch.device(device)
    size = SIZES[size_name]
    if batch:
        size = dataclasses.replace(size, batch=batch)
    den, ratio, source = build_models(size, device, seed)
    params = {"denoiser": sum(p.numel() for p in den.parameters()), "ratio": sum(p.numel() for p in ratio.parameters())}
    den_t, ratio_t = _Timed(den, device), _Timed(ratio, device)
    gen = torch.Generator().manual_seed(seed)
    mask_id = size.vocab
    tokens = torch.randint(0, size.vocab, (size.batch, size.length), generator=gen)
    masked = torch.rand(size.batch, size.length, generator=gen) < 0.5
    z = torch.where(masked, mask_id, tokens).to(device)
    seeds = torch.randint(-(2**62), 2**62, (size.batch,), generator=gen).to(device)
    steps = {
        "ancestral": lambda impl: _ancestral_step(impl, den_t, z, seeds, mask_id),
        "guided": lambda impl: _guided_step(impl, den_t, ratio_t, z, seeds, mask_id, size),
        "scheduled": lambda impl: _scheduled_step(impl, den_t, ratio_t, z, seeds, mask_id, size),
    }
    base = {"models": source, "batch": size.batch, "length": size.length, "vocab": size.vocab, "size": size_name,
            "params": params, "n_ratio": size.n_ratio, "device": str(device)}
    out = []
    with torch.inference_mode():
        for step, fn in steps.items():
            for impl in impls:
                rec = base | {"step": step, "impl": impl}
                try:
                    fn(impl)  # warm-up: kernel compilation, allocator, autocast caches
                    runs = []
                    for _ in range(repeats):
                        den_t.seconds = ratio_t.seconds = 0.0
                        synchronize(device)
                        t0 = time.perf_counter()
                        fn(impl)
                        synchronize(device)
                        runs.append((time.perf_counter() - t0, den_t.seconds + ratio_t.seconds))
                except Exception as exc:  # e.g. out of memory at the paper size: recorded, not fatal
                    out.append(rec | {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:200]}"})
                    continue
                finally:
                    if progress is not None:
                        progress()
                step_s, forward_s = sorted(runs)[len(runs) // 2]
                out.append(rec | {"status": "ok", "step_s": step_s, "forward_s": forward_s,
                                  "outside_s": step_s - forward_s, "outside_share": 1.0 - forward_s / step_s,
                                  "runs": repeats, "step_s_all": [r[0] for r in runs]})
    return out
