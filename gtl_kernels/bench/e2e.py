"""End-to-end sampler steps with random-weight models: how much of a step is spent outside model forward passes.

Two steps, each timed for every selected backend and for the PyTorch way (MDLM / GTL authors' style):

* ``ancestral``: one step of the unguided ancestral sampler (``gtl.samplers.AncestralSampler``) mid-trajectory
  (``t = 0.5``, half the positions masked, ``T = 64`` steps): a denoiser pass over ``[B, L]``, then
  ``masked_transition`` over the ``B * L`` rows of ``V + 1`` log-probabilities. The PyTorch way is MDLM's
  ``_ddpm_update``: softmax, scaled copy, noise tensor, race over every row, masked or not.
* ``scheduled``: one step of GTL's scheduled sampler (``gtl.samplers.ScheduledSampler``, max-prob order): a denoiser
  pass, the planner score ``confidence`` over all ``B * L`` rows, the greedy position, ``topk_log_softmax`` of its
  row (``n_ratio`` candidates), the ratio network on the ``B * n_ratio`` one-token substitutions, and the guided draw
  ``sample(..., index=candidates)``. The PyTorch way: full softmax + max, log-softmax + topk, a separate add of the
  ratio scores, softmax, noise, race.

Model sizes (``SIZES``): ``paper`` is GTL's (denoiser ~61M parameters, ratio network ~4.4M, V = 30522, L = 512);
``cpu`` and ``tiny`` are smaller so that a CPU run finishes. The models come from ``gtl_kernels.gtl.nets`` when it is
importable, otherwise from the small stand-in transformers below (labelled ``stand-in`` in the results). On CUDA the
forward passes run under bf16 autocast; their outputs are fp32 as the samplers use them.

Each model call is bracketed by device synchronizations and its time summed; ``outside_share = 1 - forward / step``.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

import gtl_kernels as gk

from .baselines import pytorch_masked_transition, sample_categorical
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


# ---------------------------------------------------------------------------------------------------------------------
# Stand-in models (used only when gtl_kernels.gtl.nets is not importable)
# ---------------------------------------------------------------------------------------------------------------------


class _StandInTrunk(nn.Module):
    """Token + position embedding and a pre-LN ``nn.TransformerEncoder``: int64 ``[B, L]`` -> ``[B, L, d]``."""

    def __init__(self, vocab: int, length: int, d: int, heads: int, layers: int):
        super().__init__()
        self.tok = nn.Embedding(vocab + 1, d)
        self.pos = nn.Parameter(torch.randn(length, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, z):
        return self.enc(self.tok(z) + self.pos[: z.shape[1]])


class StandInDenoiser(nn.Module):
    """Stand-in ``denoiser(z [B, L], t [B]) -> fp32 [B, L, V + 1]`` log-probabilities in SUBS form (no time input)."""

    def __init__(self, vocab: int, length: int, d: int, heads: int, layers: int):
        super().__init__()
        self.mask_id = vocab
        self.trunk = _StandInTrunk(vocab, length, d, heads, layers)
        self.head = nn.Linear(d, vocab + 1)

    def forward(self, z, t):
        logits = self.head(self.trunk(z)).float()
        logits[..., self.mask_id] = -math.inf
        logp = torch.log_softmax(logits, dim=-1)
        copied = torch.full_like(logp, -math.inf).scatter_(-1, z.unsqueeze(-1), 0.0)
        return torch.where((z != self.mask_id).unsqueeze(-1), copied, logp)


class StandInScorer(nn.Module):
    """Stand-in ratio network ``z [B, L] -> fp32 [B]`` (mean pooling, linear head)."""

    def __init__(self, vocab: int, length: int, d: int, heads: int, layers: int):
        super().__init__()
        self.trunk = _StandInTrunk(vocab, length, d, heads, layers)
        self.head = nn.Linear(d, 1)

    def forward(self, z):
        return self.head(self.trunk(z).mean(dim=1)).squeeze(-1).float()


def _substitutions(z, pos, tokens):
    """``z [M, L]`` with position ``pos [M]`` set to each of ``tokens [M, K]``: int64 ``[M, K, L]``."""
    try:
        from gtl_kernels.gtl.samplers import one_token_substitutions
    except ImportError:
        m, k = tokens.shape
        out = z.unsqueeze(1).expand(m, k, z.shape[1]).clone()
        return out.scatter_(2, pos.view(m, 1, 1).expand(m, k, 1), tokens.unsqueeze(-1))
    return one_token_substitutions(z, pos, tokens)


def build_models(size: E2ESize, device: torch.device, seed: int = 0):
    """(denoiser, ratio network, source label); random weights, eval mode, on ``device``."""
    torch.manual_seed(seed)
    try:
        from gtl_kernels.gtl.nets import Denoiser, SequenceScorer, TrunkConfig
    except ImportError:
        den = StandInDenoiser(size.vocab, size.length, *size.den)
        ratio = StandInScorer(size.vocab, size.length, *size.ratio)
        source = "stand-in"
    else:
        def cfg(d_h_l):
            d, h, layers = d_h_l
            return TrunkConfig(vocab=size.vocab, max_len=size.length, d_model=d, n_heads=h, n_layers=layers)

        den, ratio = Denoiser(cfg(size.den)), SequenceScorer(cfg(size.ratio))
        source = "gtl.nets"
    return den.to(device).eval(), ratio.to(device).eval(), source


class _Timed:
    """Calls a model under the device's autocast, bracketed by synchronizations; sums the seconds."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device, self.seconds = model, device, 0.0

    def __call__(self, *args):
        synchronize(self.device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model(*args).float()
        synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        return out


# ---------------------------------------------------------------------------------------------------------------------
# The two steps
# ---------------------------------------------------------------------------------------------------------------------


def _ancestral_step(impl, den, z, seeds, mask_id):
    t, s = 0.5, 0.5 - 1.0 / STEPS
    stay = s / t  # m_s / m_t of the log-linear schedule
    logp = den(z, torch.full((z.shape[0],), t, device=z.device))
    if impl == "pytorch":
        v1 = logp.shape[-1]
        return pytorch_masked_transition(z.reshape(-1), logp.reshape(-1, v1), None, 1.0, 1.0, 0, stay, mask_id)
    return gk.masked_transition(z, logp, stay_prob=stay, mask_id=mask_id, seeds=seeds, offset=STEPS // 2, backend=impl)


def _scheduled_step(impl, den, ratio, z, seeds, mask_id, size: E2ESize):
    bsz = z.shape[0]
    rows = torch.arange(bsz, device=z.device)
    masked = z == mask_id
    logp = den(z, masked.float().mean(1))
    n = min(size.n_ratio, logp.shape[-1] - 1)
    if impl == "pytorch":
        conf = torch.softmax(logp, dim=-1).amax(-1)
        pos = torch.where(masked, conf, -math.inf).argmax(-1)
        cand_logp, cand = torch.log_softmax(logp[rows, pos], dim=-1).topk(n, dim=-1)
    else:
        conf = gk.confidence(logp, kind="max_prob", backend=impl)[1]
        pos_keys = gk.derive_keys(seeds.view(-1, 1), torch.full((bsz, 1), 1 << 40, device=z.device)).reshape(-1)
        pos = gk.sample(torch.where(masked, conf, -math.inf), temperature=0.0, seeds=pos_keys, offset=0, backend=impl)
        cand_logp, cand = gk.topk_log_softmax(logp[rows, pos], n, backend=impl)
    subs = _substitutions(z, pos, cand).reshape(-1, z.shape[1])
    rho = torch.cat([ratio(subs[i : i + size.ratio_chunk]) for i in range(0, subs.shape[0], size.ratio_chunk)])
    rho = torch.where(cand_logp == -math.inf, 0.0, rho.view(bsz, n))
    if impl == "pytorch":
        choice = sample_categorical(torch.softmax((cand_logp + GAMMA * rho).double(), dim=-1))
        tok = cand.gather(1, choice.unsqueeze(-1)).squeeze(-1)
    else:
        keys = gk.derive_keys(seeds.view(-1, 1), pos.view(-1, 1)).reshape(-1)
        tok = gk.sample(cand_logp, rho, GAMMA, 1.0, seeds=keys, offset=0, index=cand, backend=impl)
    z = z.clone()
    z[rows, pos] = tok
    return z


def run_e2e(device, impls: list[str], size_name: str = "paper", *, batch: int | None = None, repeats: int = 3,
            seed: int = 0, progress=None) -> list[dict]:
    """Time one ancestral and one scheduled step for each of ``impls`` (backend names and ``"pytorch"``).

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
    row_keys = gk.derive_keys(seeds.view(-1, 1), torch.arange(size.length, device=device)).reshape(-1)
    steps = {
        "ancestral": lambda impl: _ancestral_step(impl, den_t, z, row_keys.view(z.shape), mask_id),
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
