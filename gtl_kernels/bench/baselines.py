"""Baselines measured in the same run, on the same inputs, as every backend (KERNEL_SPEC §8).

* ``argmax``: ``torch.argmax`` over the same logits, the historical floor of the goals (on the CPU far slower than
  one read: PyTorch's argmax runs a scalar loop, and its bf16 path converts element by element).
* ``amax``: ``torch.amax`` over the same logits, same dtype: a streaming read of the logits (vectorized, no index
  bookkeeping), the true floor of every op that reads them once; the CPU goals are ratios to it.
* ``log_softmax``: ``torch.log_softmax`` of the logits to fp32, the floor of ``guided_log_softmax`` (it writes
  ``[N, V]`` too).
* ``copy``: a copy of the logits into a preallocated tensor; its bandwidth (bytes read + written) is the memory
  ceiling the bandwidth fraction of each case is measured against.
* ``pytorch`` / ``pytorch-fp64``: the PyTorch way, written as MDLM and the GTL authors write it: a separate add for
  the guidance bias, a separate division by the temperature, softmax (log-softmax), a separate noise tensor
  (float32, or float64 as Zheng et al. recommend), the exponential race ``probs / Exp(1)`` then argmax; top-k by a
  separate ``topk`` and mask; the planner's confidence from a full softmax.
* ``multinomial``: ``torch.multinomial`` on the softmax (``sample`` only).
* ``compile``: ``torch.compile`` of the ``pytorch`` step (skipped when compilation fails on the machine).
* ``flashinfer``: FlashInfer's ``sampling_from_logits`` (``top_k_sampling_from_probs`` with top-k), CUDA only,
  skipped when FlashInfer cannot be imported. It has no bias input, so the guided case adds the bias first.

Each baseline returns the output structure of the op it stands in for, so deterministic ones are checked against
the reference like a backend; samplers with their own randomness are checked for valid tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from .cases import SAMPLING_OPS, Case, Inputs, OPS


class Unavailable(Exception):
    """The baseline cannot run this case here (the message says why); the case records it as skipped."""


# ---------------------------------------------------------------------------------------------------------------------
# The PyTorch way (MDLM / GTL authors' style): one full-size temporary per stage
# ---------------------------------------------------------------------------------------------------------------------


def guided_scores(logits, bias, gamma: float, temperature: float) -> torch.Tensor:
    """``(logits + gamma * bias) / T`` in fp32 as separate tensor ops (``[N, V]``)."""
    s = logits.float()
    if bias is not None:
        s = s + gamma * bias.float()
    if temperature != 1.0:
        s = s / temperature
    return s


def top_k_filter(s: torch.Tensor, top_k: int) -> torch.Tensor:
    """Scores below the ``top_k``-th largest set to ``-inf`` (a separate ``topk`` pass and a masked copy)."""
    if top_k <= 0 or top_k >= s.shape[-1]:
        return s
    kth = torch.topk(s, top_k, dim=-1).values[:, -1:]
    return s.masked_fill(s < kth, -math.inf)


def sample_categorical(probs: torch.Tensor) -> torch.Tensor:
    """MDLM's ``_sample_categorical``: the exponential race ``argmax(probs / E)`` with ``E = -log(U)`` from a noise
    tensor of the probabilities' dtype (``1e-10`` guards as in MDLM)."""
    noise = 1e-10 - (torch.rand_like(probs) + 1e-10).log()
    return (probs / noise).argmax(dim=-1)


def pytorch_sample(logits, bias, gamma, temperature, top_k: int, noise_dtype=torch.float32) -> torch.Tensor:
    """int64 ``[N]``: softmax of the guided scores in ``noise_dtype``, then the race."""
    s = top_k_filter(guided_scores(logits, bias, gamma, temperature), top_k)
    return sample_categorical(torch.softmax(s.to(noise_dtype), dim=-1))


def pytorch_masked_transition(
    x_t, logits, bias, gamma, temperature, top_k: int, stay_prob: float, mask_id: int, noise_dtype=torch.float32
) -> torch.Tensor:
    """MDLM's ``_ddpm_update`` over rows: ``q = p_x0 * (1 - stay)``, ``q[mask] = stay``, race, copy unmasked.

    As in MDLM, the logits' mask column is taken as already excluded by the model (SUBS); writing ``q[:, mask]``
    overwrites it. Every row is sampled, masked or not, and the unmasked ones are thrown away.
    """
    s = top_k_filter(guided_scores(logits, bias, gamma, temperature), top_k)
    q = torch.softmax(s.to(noise_dtype), dim=-1) * (1.0 - stay_prob)
    q[:, mask_id] = stay_prob
    drawn = sample_categorical(q)
    return torch.where(x_t != mask_id, x_t, drawn)


def pytorch_guided_log_softmax(logits, bias, gamma, temperature) -> torch.Tensor:
    return torch.log_softmax(guided_scores(logits, bias, gamma, temperature), dim=-1)


def pytorch_topk_log_softmax(logits, k: int, bias, gamma, temperature):
    return torch.log_softmax(guided_scores(logits, bias, gamma, temperature), dim=-1).topk(k, dim=-1)


def pytorch_confidence(logits, bias, gamma, temperature, kind: str):
    """LLaDA / Fast-dLLM style planner scores from a full softmax: (argmax int64 ``[N]``, score fp32 ``[N]``)."""
    s = guided_scores(logits, bias, gamma, temperature)
    if kind == "neg_entropy":
        logp = torch.log_softmax(s, dim=-1)
        return s.argmax(dim=-1), (logp.exp() * logp).sum(dim=-1)
    p = torch.softmax(s, dim=-1)
    if kind == "max_prob":
        score, idx = p.max(dim=-1)
        return idx, score
    top2 = p.topk(min(2, p.shape[-1]), dim=-1)
    second = top2.values[:, 1] if p.shape[-1] > 1 else 0.0
    return top2.indices[:, 0], top2.values[:, 0] - second


def pytorch_step(case: Case, noise_dtype=torch.float32) -> Callable:
    """The PyTorch way of ``case.op`` as a function of the case's tensors (what ``compile`` compiles)."""
    op = case.op
    if op == "sample":
        return lambda lg, b, g, t, x_t, stay, mask_id: pytorch_sample(lg, b, g, t, case.top_k, noise_dtype)
    if op == "masked_transition":
        return lambda lg, b, g, t, x_t, stay, mask_id: pytorch_masked_transition(
            x_t, lg, b, g, t, case.top_k, stay, mask_id, noise_dtype
        )
    if op == "guided_log_softmax":
        return lambda lg, b, g, t, x_t, stay, mask_id: pytorch_guided_log_softmax(lg, b, g, t)
    if op == "topk_log_softmax":
        k = min(case.k, case.v)
        return lambda lg, b, g, t, x_t, stay, mask_id: tuple(pytorch_topk_log_softmax(lg, k, b, g, t))
    return lambda lg, b, g, t, x_t, stay, mask_id: pytorch_confidence(lg, b, g, t, case.kind)


def _bind(step: Callable, inp: Inputs) -> Callable[[], object]:
    return lambda: step(inp.logits, inp.bias, inp.gamma, inp.temperature, inp.x_t, inp.stay_prob, inp.mask_id)


# ---------------------------------------------------------------------------------------------------------------------
# Builders: (case, inputs) -> zero-argument callable
# ---------------------------------------------------------------------------------------------------------------------


def _argmax(case: Case, inp: Inputs):
    return lambda: torch.argmax(inp.logits, dim=-1)


def _amax(case: Case, inp: Inputs):
    return lambda: torch.amax(inp.logits, dim=-1)


def _log_softmax(case: Case, inp: Inputs):
    return lambda: torch.log_softmax(inp.logits, dim=-1, dtype=torch.float32)


def _copy(case: Case, inp: Inputs):
    dst = torch.empty_like(inp.logits)
    return lambda: dst.copy_(inp.logits)


def _pytorch(case: Case, inp: Inputs):
    return _bind(pytorch_step(case, torch.float32), inp)


def _pytorch_fp64(case: Case, inp: Inputs):
    return _bind(pytorch_step(case, torch.float64), inp)


def _multinomial(case: Case, inp: Inputs):
    def run():
        s = top_k_filter(guided_scores(inp.logits, inp.bias, inp.gamma, inp.temperature), case.top_k)
        return torch.multinomial(torch.softmax(s, dim=-1), 1).squeeze(-1)

    return run


_COMPILED: dict[tuple, Callable] = {}


def _compile(case: Case, inp: Inputs):
    # One compiled function per op variant, dtype and bias presence: each sees few shapes, so dynamo's recompile
    # limit is never reached (past it, dynamo would silently run the eager code and the timing would lie).
    key = (case.op, case.kind, case.top_k, min(case.k, case.v), case.dtype, case.bias, inp.logits.device.type)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(pytorch_step(case, torch.float32))
    return _bind(_COMPILED[key], inp)


def _flashinfer(case: Case, inp: Inputs):
    if inp.logits.device.type != "cuda":
        raise Unavailable("FlashInfer runs on CUDA only")
    try:
        import flashinfer.sampling as fs
    except Exception as exc:
        raise Unavailable(f"FlashInfer not importable ({type(exc).__name__}: {exc})") from None

    def scores():
        if inp.bias is None and inp.temperature == 1.0:
            return inp.logits
        return guided_scores(inp.logits, inp.bias, inp.gamma, inp.temperature)

    if case.top_k:
        return lambda: fs.top_k_sampling_from_probs(torch.softmax(scores().float(), dim=-1), case.top_k)
    cast = {"needed": False}

    def run():
        # FlashInfer versions differ in the logits dtypes they accept; a rejected dtype is copied to fp32, as a user
        # would, and that copy is part of the measured time.
        s = scores()
        if not cast["needed"]:
            try:
                return fs.sampling_from_logits(s)
            except (RuntimeError, TypeError, ValueError):
                cast["needed"] = True
        return fs.sampling_from_logits(s.float())

    return run


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A baseline implementation.

    ``check``: ``"reference"`` (same function as the op: compared with the reference), ``"tokens"`` (its own
    randomness: valid tokens only) or ``None`` (a different function: the floor, a copy). ``optional``: a failure
    at its first call is a skip, not an error. ``warm_call``: its first call does one-time work (compilation) and
    is kept out of the timing. ``temp_bytes``: bytes of temporaries per logits element, for the memory guard.
    """

    name: str
    ops: tuple[str, ...]
    build: Callable[[Case, Inputs], Callable[[], object]]
    check: str | None
    devices: tuple[str, ...] = ("cpu", "cuda")
    optional: bool = False
    warm_call: bool = False
    temp_bytes: float = 0.0


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("argmax", OPS, _argmax, None),
        Baseline("amax", OPS, _amax, None),
        Baseline("log_softmax", ("guided_log_softmax",), _log_softmax, None, temp_bytes=4),
        Baseline("copy", OPS, _copy, None, temp_bytes=4),
        Baseline("pytorch", OPS, _pytorch, "reference", temp_bytes=24),
        Baseline("pytorch-fp64", SAMPLING_OPS, _pytorch_fp64, "tokens", temp_bytes=48),
        Baseline("multinomial", ("sample",), _multinomial, "tokens", temp_bytes=12),
        Baseline("compile", OPS, _compile, "reference", optional=True, warm_call=True, temp_bytes=12),
        Baseline("flashinfer", ("sample",), _flashinfer, "tokens", devices=("cuda",), optional=True, temp_bytes=8),
    )
}
# The pytorch baselines of the sampling ops draw their own noise: token-level validity only.
SAMPLING_CHECK = {"pytorch": "tokens", "compile": "tokens"}
# torch.compile by default only of the PyTorch *sampling step* (each compiled variant costs seconds to tens of
# seconds; --compile-ops all extends it to every op).
DEFAULT_COMPILE_OPS = SAMPLING_OPS


def check_mode(name: str, case: Case) -> str | None:
    """How the output of baseline ``name`` is checked for ``case``."""
    if case.op in SAMPLING_OPS and name in SAMPLING_CHECK:
        return SAMPLING_CHECK[name]
    return BASELINES[name].check


def applies(name: str, case: Case, device_type: str, compile_ops=DEFAULT_COMPILE_OPS) -> bool:
    """Whether baseline ``name`` is measured for ``case`` on ``device_type``."""
    b = BASELINES[name]
    if case.op not in b.ops or device_type not in b.devices:
        return False
    return name != "compile" or case.op in compile_ops


def build(name: str, case: Case, inp: Inputs) -> Callable[[], object]:
    """The callable of baseline ``name`` for ``case`` (raises :class:`Unavailable`)."""
    return BASELINES[name].build(case, inp)
