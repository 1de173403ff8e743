"""What is measured: benchmark cases, their inputs, the bytes they must move, and correctness checks.

A :class:`Case` is one op at one shape ``[N, V]``, one logits dtype, with or without a dense guidance bias (same
shape and dtype as the logits). Inputs are random (normal logits scaled to a language model's spread, never zeros:
zeros hide unwritten outputs and can run faster than real data). Every op and baseline of a case sees the same
tensors.

Correctness is checked once per case, before timing, against the ``torch`` reference backend on the first
``CHECK_ROWS`` rows (the ops are row-wise and batch invariant by contract, so a row's result does not depend on the
others; this keeps the float64 reference affordable at the largest shapes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import torch

import gtl_kernels as gk
from gtl_kernels import _library, reference

OPS = _library.OPS
SAMPLING_OPS = ("sample", "masked_transition")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CONFIDENCE_KINDS = reference.CONFIDENCE_KINDS
LOGIT_SCALE = 3.0  # std of the random logits: a language model's spread, so softmax mass is neither flat nor one-hot
CHECK_ROWS = 256
MIN_AGREEMENT = 0.99  # sampled tokens vs the reference: near-ties within fp32 rounding may differ


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement: ``op`` on logits ``[n, v]`` of ``dtype`` (``"fp32"``, ``"bf16"``, ``"fp16"``).

    ``bias``: a dense guidance tensor of the same shape and dtype (``gamma = 1``). Op parameters: ``k`` for
    ``topk_log_softmax`` (capped at ``v``), ``kind`` for ``confidence``, ``top_k`` for the sampling ops.
    ``masked_transition`` runs with every position masked and ``stay_prob = 0``, so every row is read and sampled
    (the case comparable with one read of the logits).
    """

    op: str
    n: int
    v: int
    dtype: str = "fp32"
    bias: bool = False
    k: int = 512
    kind: str = "max_prob"
    top_k: int = 0

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.kind not in CONFIDENCE_KINDS:
            raise ValueError(f"kind must be one of {CONFIDENCE_KINDS}, got {self.kind!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def variant(self) -> str:
        """The op parameter that distinguishes cases of one shape ("" if none)."""
        if self.op == "topk_log_softmax":
            return f"k={min(self.k, self.v)}"
        if self.op == "confidence":
            return self.kind
        if self.op in SAMPLING_OPS and self.top_k:
            return f"top_k={self.top_k}"
        return ""

    @property
    def label(self) -> str:
        """Human-readable and unique within a run; also the pytest-benchmark group, so implementations line up."""
        parts = [self.op, f"N={self.n}", f"V={self.v}", self.dtype, "+bias" if self.bias else "no-bias"]
        return " ".join(parts + ([self.variant] if self.variant else []))

    @property
    def test_id(self) -> str:
        """Compact id for pytest parametrization."""
        parts = [f"{self.n}x{self.v}", self.dtype, "bias" if self.bias else "nobias"]
        return "-".join(parts + ([self.variant.replace("=", "")] if self.variant else []))

    def bytes_moved(self) -> int:
        """The fewest bytes the op must move: each input element read once, each output element written once.

        Logits (and bias) ``N * V`` elements in their dtype; outputs: fp32 ``[N, V]`` for ``guided_log_softmax``,
        ``[N, k]`` fp32 + int64 for ``topk_log_softmax``, ``[N]`` int64 (+ fp32) for the others; the per-row
        inputs (int64 keys, ``x_t``) count too. This is the numerator of the effective bandwidth (GB/s).
        """
        elt = self.torch_dtype.itemsize
        total = self.n * self.v * elt * (2 if self.bias else 1)
        rows = self.n
        if self.op == "guided_log_softmax":
            total += self.n * self.v * 4
        elif self.op == "sample":
            total += rows * (8 + 8)  # keys in, tokens out
        elif self.op == "masked_transition":
            total += rows * (8 + 8 + 8)  # x_t and keys in, tokens out
        elif self.op == "topk_log_softmax":
            total += rows * min(self.k, self.v) * (4 + 8)
        else:
            total += rows * (8 + 4)
        return total

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"label": self.label, "bytes": self.bytes_moved()}


# ---------------------------------------------------------------------------------------------------------------------
# Case sets
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CaseSet:
    """The product ops x shapes x dtypes x bias (x kinds for ``confidence``), ordered so that cases sharing inputs
    (same shape and dtype) are adjacent. Guided ``confidence`` cases use the first kind only: the bias costs the
    same for every kind."""

    shapes: tuple[tuple[int, int], ...]
    dtypes: tuple[str, ...] = ("fp32",)
    bias: tuple[bool, ...] = (False, True)
    ops: tuple[str, ...] = OPS
    kinds: tuple[str, ...] = ("max_prob",)
    k: int = 512
    top_k: int = 0

    def cases(self) -> list[Case]:
        out = []
        for n, v in self.shapes:
            for dtype in self.dtypes:
                for op in self.ops:
                    for bias in self.bias:
                        kinds = self.kinds if op == "confidence" else ("max_prob",)
                        for kind in kinds[:1] if bias else kinds:
                            out.append(Case(op, n, v, dtype, bias, k=self.k, kind=kind, top_k=self.top_k))
        return out


PRESETS: dict[str, dict[str, CaseSet]] = {
    # Issue 3's shapes and goals on the 2-core CPU machine: the default CPU run stays under 10 minutes with the
    # float64 reference (seconds per call at these shapes) and the PyTorch-way baselines.
    "cpu": {
        "default": CaseSet(shapes=((1024, 30522), (256, 128256)), dtypes=("fp32", "bf16"), kinds=CONFIDENCE_KINDS),
        "quick": CaseSet(shapes=((64, 4096), (8, 30522)), dtypes=("fp32",)),
        "smoke": CaseSet(shapes=((37, 2100), (3, 5000)), dtypes=("fp32", "bf16")),
    },
    # Issue 4's shapes on a GPU: N = B * L in {8 * 1024, 64 * 1024} rows, V in {30522, 50257, 128256}, and one
    # position per sequence (N = 1, 8) as in GTL's scheduled sampler; bf16 logits and bias.
    "cuda": {
        "default": CaseSet(
            shapes=tuple((n, v) for n in (8192, 65536) for v in (30522, 50257, 128256)) + ((1, 128256), (8, 128256)),
            dtypes=("bf16",),
        ),
        "quick": CaseSet(shapes=((8192, 30522), (1, 128256)), dtypes=("bf16",)),
        "smoke": CaseSet(shapes=((37, 2100), (3, 5000)), dtypes=("fp32", "bf16")),
    },
}


def preset(name: str, device_type: str) -> CaseSet:
    """A copy of the named case set (``default``, ``quick`` or ``smoke``) for ``device_type`` (``cpu``/``cuda``)."""
    sets = PRESETS["cuda" if device_type == "cuda" else "cpu"]
    if name not in sets:
        raise ValueError(f"case set must be one of {tuple(sets)}, got {name!r}")
    return dataclasses.replace(sets[name])


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``"1024x30522,1x128256"`` -> ``((1024, 30522), (1, 128256))``."""
    shapes = []
    for item in text.split(","):
        try:
            n, v = (int(x) for x in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape must look like NxV (e.g. 1024x30522), got {item!r}") from None
        if n < 1 or v < 2:
            raise ValueError(f"shape needs N >= 1 and V >= 2, got {item!r}")
        shapes.append((n, v))
    return tuple(shapes)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Inputs:
    """The tensors of a case, in the normalized form every backend receives.

    ``logits``/``bias`` ``[N, V]`` in the case dtype; ``seeds`` int64 ``[N]`` row keys and ``offset`` an int64
    scalar tensor (device tensors, as a CUDA-graph sampling loop passes them); ``x_t`` int64 ``[N]`` all equal to
    ``mask_id = V - 1``.
    """

    logits: torch.Tensor
    bias: torch.Tensor | None
    seeds: torch.Tensor
    offset: torch.Tensor
    x_t: torch.Tensor
    mask_id: int
    gamma: float = 1.0
    temperature: float = 1.0
    stay_prob: float = 0.0

    def rows(self, r: int) -> "Inputs":
        """The first ``r`` rows (views)."""
        return dataclasses.replace(
            self,
            logits=self.logits[:r],
            bias=None if self.bias is None else self.bias[:r],
            seeds=self.seeds[:r],
            x_t=self.x_t[:r],
        )


def random_matrix(n: int, v: int, dtype: torch.dtype, device, seed: int, scale: float = LOGIT_SCALE) -> torch.Tensor:
    """Normal(0, scale) ``[n, v]`` in ``dtype``, drawn on ``device`` in row blocks so that the float32 temporary stays
    small next to the result (a 64k x 128k bf16 tensor is 16 GiB; its fp32 draw would be 32 GiB)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(n, v, dtype=dtype, device=device)
    block = max(1, (1 << 26) // v)
    for start in range(0, n, block):
        rows = out[start : start + block]
        rows.copy_(torch.randn(rows.shape, generator=gen, device=device, dtype=torch.float32).mul_(scale))
    return out


def make_inputs(
    n: int, v: int, dtype: str, device, *, bias: bool, seed: int = 0, logits: torch.Tensor | None = None
) -> Inputs:
    """Random inputs of a shape; pass ``logits`` to reuse them (cases of one shape share logits and keys)."""
    device = torch.device(device)
    if logits is None:
        logits = random_matrix(n, v, DTYPES[dtype], device, seed)
    bias_t = random_matrix(n, v, DTYPES[dtype], device, seed + 1, scale=1.0) if bias else None
    gen = torch.Generator(device="cpu").manual_seed(seed + 2)
    seeds = torch.randint(-(2**63), 2**63 - 1, (n,), generator=gen, dtype=torch.int64).to(device)
    mask_id = v - 1
    x_t = torch.full((n,), mask_id, dtype=torch.int64, device=device)
    offset = torch.tensor(7, dtype=torch.int64, device=device)
    return Inputs(logits, bias_t, seeds, offset, x_t, mask_id)


# ---------------------------------------------------------------------------------------------------------------------
# The op under test, through the public API
# ---------------------------------------------------------------------------------------------------------------------


def op_call(case: Case, inp: Inputs, backend: str):
    """A zero-argument callable that runs ``case.op`` on ``inp`` through the public API with ``backend``."""
    lg, b, g, t = inp.logits, inp.bias, inp.gamma, inp.temperature
    if case.op == "guided_log_softmax":
        return lambda: gk.guided_log_softmax(lg, b, g, t, backend=backend)
    if case.op == "sample":
        return lambda: gk.sample(lg, b, g, t, case.top_k, seeds=inp.seeds, offset=inp.offset, backend=backend)
    if case.op == "masked_transition":
        return lambda: gk.masked_transition(
            inp.x_t, lg, b, g, t, case.top_k, stay_prob=inp.stay_prob, mask_id=inp.mask_id, seeds=inp.seeds,
            offset=inp.offset, backend=backend,
        )
    if case.op == "topk_log_softmax":
        k = min(case.k, case.v)
        return lambda: gk.topk_log_softmax(lg, k, b, g, t, backend=backend)
    return lambda: gk.confidence(lg, b, g, t, kind=case.kind, backend=backend)


def reference_output(case: Case, inp: Inputs, rows: int = CHECK_ROWS):
    """The ``torch`` reference backend's output on the first ``rows`` rows."""
    return op_call(case, inp.rows(min(rows, case.n)), "torch")()


# ---------------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------------


class CheckFailed(AssertionError):
    """An output disagrees with the reference (or is not a valid result)."""


def _head(x, rows):
    return tuple(t[:rows] for t in x) if isinstance(x, tuple) else x[:rows]


def _agreement(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    """Fraction of equal elements; fails if more than ``1 - MIN_AGREEMENT`` differ (any, for fewer than 100)."""
    equal = (a.cpu() == b.cpu()).double()
    rate = float(equal.mean()) if equal.numel() else 1.0
    allowed = math.floor((1.0 - MIN_AGREEMENT) * equal.numel())
    if equal.numel() - int(equal.sum()) > allowed:
        raise CheckFailed(f"{what}: agreement with the reference {rate:.4f} over {equal.numel()} elements")
    return rate


def _close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float, rtol: float = 1e-4) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    if a.shape != b.shape:
        raise CheckFailed(f"{what}: shape {tuple(a.shape)} vs reference {tuple(b.shape)}")
    if a.isnan().any():
        raise CheckFailed(f"{what}: NaN in the output")
    err = (a - b).abs()
    bad = err > atol + rtol * b.abs()
    if bad.any():
        raise CheckFailed(f"{what}: {int(bad.sum())} elements off (max abs error {float(err.max()):.3g})")
    return float(err.max()) if err.numel() else 0.0


def _guided_scores(inp: Inputs, rows: int) -> torch.Tensor:
    """The reference's float64 ``logits + gamma * bias`` of the first ``rows`` rows (on the CPU)."""
    bias = None if inp.bias is None else inp.bias[:rows].cpu()
    gamma = torch.full((rows,), inp.gamma, dtype=torch.float32)
    return reference.guided_scores(inp.logits[:rows].cpu(), bias, gamma)


def _ids_agreement(ids: torch.Tensor, ref_ids: torch.Tensor, z: torch.Tensor, what: str) -> float:
    """Like :func:`_agreement` for token ids chosen by score, counting an id as agreeing when its guided score
    equals the reference id's within fp32 rounding: exact ties (frequent in bf16) may be ordered either way."""
    ids, ref_ids = ids.cpu().reshape(z.shape[0], -1), ref_ids.cpu().reshape(z.shape[0], -1)
    if ids.shape != ref_ids.shape:
        raise CheckFailed(f"{what}: shape {tuple(ids.shape)} vs reference {tuple(ref_ids.shape)}")
    if bool(((ids < 0) | (ids >= z.shape[1])).any()):
        raise CheckFailed(f"{what}: id out of range")
    a, b = z.gather(1, ids), z.gather(1, ref_ids)
    tie = (a - b).abs() <= 1e-5 * (1.0 + b.abs())
    return _agreement((ids == ref_ids) | tie, torch.ones_like(tie), what)


def check_against_reference(case: Case, inp: Inputs, out, ref) -> str:
    """Compare an implementation's output (full batch) with the reference on the rows the reference covers.

    Deterministic ops: fp32 results within ``1e-3 + 1e-4 |ref|`` (the input is the same tensor, so the dtype does
    not enter; only fp32 vs float64 arithmetic does); ids chosen by score may differ at ties (>= 99% agreement).
    Sampling ops: the same tokens for the same keys and offset (>= 99% agreement: near-ties of the perturbed scores
    within fp32 rounding may differ). Returns a short summary.
    """
    rows = (ref[0] if isinstance(ref, tuple) else ref).shape[0]
    out = _head(out, rows)
    if case.op == "guided_log_softmax":
        return f"max abs err {_close(out, ref, 'log-probabilities', atol=1e-3):.2g}"
    if case.op in SAMPLING_OPS:
        return f"token agreement {_agreement(out, ref, 'tokens'):.4f}"
    z = _guided_scores(inp, rows)
    if case.op == "topk_log_softmax":
        err = _close(out[0], ref[0], "top-k log-probabilities", atol=1e-3)
        rate = _ids_agreement(out[1], ref[1], z, "top-k ids")
        return f"max abs err {err:.2g}, id agreement {rate:.4f}"
    atol = 1e-3 if case.kind == "neg_entropy" else 1e-4
    rate = _ids_agreement(out[0], ref[0], z, "argmax")
    return f"argmax agreement {rate:.4f}, max abs err {_close(out[1], ref[1], case.kind, atol=atol):.2g}"


def check_tokens_valid(case: Case, inp: Inputs, tokens: torch.Tensor) -> str:
    """Sanity of tokens drawn by a sampler with its own randomness (no seed-for-seed comparison possible): one per
    row, in range, of finite score, never the mask token."""
    tokens = tokens.reshape(-1).long()  # FlashInfer returns int32
    if tokens.shape[0] != case.n:
        raise CheckFailed(f"expected {case.n} tokens, got {tokens.shape[0]}")
    if bool(((tokens < 0) | (tokens >= case.v)).any()):
        raise CheckFailed("token id out of range")
    picked = inp.logits.gather(1, tokens.view(-1, 1)).float()
    if not bool(picked.isfinite().all()):
        raise CheckFailed("a token of score -inf was drawn")
    if case.op == "masked_transition" and bool((tokens == inp.mask_id).any()):
        raise CheckFailed("the mask token was drawn although stay_prob = 0")
    return "valid tokens"


def grouped(cases: Iterable[Case]) -> dict[tuple[int, int, str], list[Case]]:
    """Cases by (N, V, dtype): the cases that share one logits tensor."""
    out: dict[tuple[int, int, str], list[Case]] = {}
    for c in cases:
        out.setdefault((c.n, c.v, c.dtype), []).append(c)
    return out
