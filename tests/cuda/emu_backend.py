"""Backend ``emu``: the CUDA kernels (gtl/cuda_ops.cuh) run on the CPU through tests/cuda/cuda_emu.h.

It lets a machine without a GPU run the CUDA backend's kernel code against the float64 reference and the shared test
suite. The argument handling below mirrors the torch glue of csrc/cuda/ (the checks and the launch ending in glue.h,
each op's normalization and outputs in <op>.cpp, the launch plan); keep the two in step. Every buffer handed to the
kernels is a copy that ends against an inaccessible page, so an out-of-bounds access faults here.

Used as a pytest plugin (``-p emu_backend``, see scripts/cuda_host_check.sh): it registers ops ``gtl::<op>_emu`` and
backend ``emu`` and marks it as slow (``backend.interpreted``), so the suite uses its small shapes.

Environment: ``GTL_CUDA_EMU_LIB`` (the shared library built from emu_ops.cpp), ``GTL_CUDA_EMU_SMS`` (multiprocessor
count for the launch plan; 132 by default, an H100; 1 forces the one-block-per-row path wherever it applies).
"""

from __future__ import annotations

import ctypes
import math
import os

import torch

import gtl_kernels  # noqa: F401  (defines the gtl namespace and the registry)
from gtl_kernels import _library, backends, reference

OPS = {"guided_log_softmax": 0, "sample": 1, "masked_transition": 2, "topk_log_softmax": 3, "confidence": 4}
DTYPES = {None: 0, torch.float32: 1, torch.bfloat16: 2, torch.float16: 3, torch.float64: 4}
KINDS = {kind: i for i, kind in enumerate(reference.CONFIDENCE_KINDS)}  # ConfidenceKind: the position
TOPK_MAX = 1024  # kTopkMax in gtl/cuda_problem.h
STATS = {"split": 0, "row": 0}


class Problem(ctypes.Structure):
    _fields_ = [
        ("logits", ctypes.c_void_p),
        ("logits_stride", ctypes.c_int64),
        ("logits_dtype", ctypes.c_int32),
        ("bias", ctypes.c_void_p),
        ("bias_stride", ctypes.c_int64),
        ("bias_dtype", ctypes.c_int32),
        ("gamma", ctypes.c_void_p),
        ("gamma_stride", ctypes.c_int64),
        ("temperature", ctypes.c_void_p),
        ("temperature_stride", ctypes.c_int64),
        ("n", ctypes.c_int64),
        ("v", ctypes.c_int64),
        ("seeds", ctypes.c_void_p),
        ("seeds_stride", ctypes.c_int64),
        ("offset", ctypes.c_void_p),
        ("top_k", ctypes.c_int64),
        ("index", ctypes.c_void_p),
        ("index_stride", ctypes.c_int64),
        ("x_t", ctypes.c_void_p),
        ("x_t_stride", ctypes.c_int64),
        ("stay_prob", ctypes.c_void_p),
        ("stay_prob_stride", ctypes.c_int64),
        ("mask_id", ctypes.c_int64),
        ("k", ctypes.c_int64),
        ("kind", ctypes.c_int32),
        ("out_values", ctypes.c_void_p),
        ("out_ids", ctypes.c_void_p),
        ("out_logprob", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
    ]


def _load():
    path = os.environ.get("GTL_CUDA_EMU_LIB", "/tmp/gtl_cuda_emu/libgtl_cuda_emu.so")
    lib = ctypes.CDLL(path)
    lib.gtl_emu_alloc.restype = ctypes.c_void_p
    lib.gtl_emu_alloc.argtypes = [ctypes.c_size_t, ctypes.c_int]
    lib.gtl_emu_free.argtypes = [ctypes.c_void_p]
    lib.gtl_emu_run.argtypes = [ctypes.c_int, ctypes.POINTER(Problem), ctypes.c_int]
    lib.gtl_emu_problem_layout.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
    offsets = (ctypes.c_int64 * 64)()
    n = lib.gtl_emu_problem_layout(offsets, 64)
    mine = [getattr(Problem, f).offset for f, _ in Problem._fields_] + [ctypes.sizeof(Problem)]
    if list(offsets[:n]) != mine:
        raise RuntimeError(f"Problem layout mismatch: C++ {list(offsets[:n])}, ctypes {mine}")
    return lib


LIB = _load()
BUILD_DESCRIPTION = "CUDA kernels on the host (tests/cuda/cuda_emu.h)"


class _Buffers:
    """Guarded copies of the inputs and guarded outputs of one call."""

    def __init__(self):
        self.ptrs = []

    def alloc(self, nbytes: int, aligned: bool = False) -> int:
        p = LIB.gtl_emu_alloc(nbytes, 1 if aligned else 0)
        if not p and nbytes:
            raise MemoryError("gtl_emu_alloc failed")
        self.ptrs.append(p)
        return p

    def copy_in(self, t: torch.Tensor | None) -> int | None:
        """The tensor's data span (first to last element, strides kept) in guarded memory; its new address."""
        if t is None:
            return None
        if t.numel() == 0:
            return self.alloc(0)
        span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))
        flat = t.as_strided((span,), (1,), t.storage_offset()).contiguous()
        p = self.alloc(span * t.element_size())
        ctypes.memmove(p, flat.data_ptr(), span * t.element_size())
        return p

    def out(self, shape, dtype) -> tuple[torch.Tensor, int]:
        t = torch.empty(shape, dtype=dtype)
        p = self.alloc(t.numel() * t.element_size())
        fill = b"\xff" * (t.numel() * t.element_size())  # NaN / -1: unwritten outputs stay visible
        ctypes.memmove(p, fill, len(fill))
        return t, p

    @staticmethod
    def copy_out(t: torch.Tensor, p: int) -> torch.Tensor:
        ctypes.memmove(t.data_ptr(), p, t.numel() * t.element_size())
        return t

    def free(self):
        for p in self.ptrs:
            LIB.gtl_emu_free(p)
        self.ptrs = []


def _sms() -> int:
    return int(os.environ.get("GTL_CUDA_EMU_SMS", "132"))


def _check_scores(name, logits, bias, gamma, temperature):
    # The glue's checks (csrc/cuda/glue.h scores_problem): normalized arguments only.
    if logits.dim() != 2 or logits.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"{name}: logits must be a 2-D fp32/bf16/fp16 tensor")
    if logits.size(1) > 1 and logits.stride(1) != 1:
        raise ValueError(f"{name}: logits rows must have unit stride")
    if bias is not None and (bias.shape != logits.shape or (bias.size(1) > 1 and bias.stride(1) != 1)):
        raise ValueError(f"{name}: bias must have the shape of logits and unit stride along rows")
    for pname, t in (("gamma", gamma), ("temperature", temperature)):
        if t.dtype != torch.float32 or t.dim() != 1 or t.size(0) != logits.size(0):
            raise ValueError(f"{name}: {pname} must be float32 [N]")


def _problem(buf, logits, bias, gamma, temperature) -> Problem:
    p = Problem()
    p.logits = buf.copy_in(logits)
    p.logits_stride = logits.stride(0) if logits.size(0) > 1 else logits.size(1)
    p.logits_dtype = DTYPES[logits.dtype]
    if bias is not None:
        p.bias = buf.copy_in(bias)
        p.bias_stride = bias.stride(0) if bias.size(0) > 1 else bias.size(1)
        p.bias_dtype = DTYPES[bias.dtype]
    p.gamma, p.gamma_stride = buf.copy_in(gamma), gamma.stride(0)
    p.temperature, p.temperature_stride = buf.copy_in(temperature), temperature.stride(0)
    p.n, p.v = logits.shape
    return p


def _run(op: str, p: Problem):
    split = LIB.gtl_emu_run(OPS[op], ctypes.byref(p), _sms())
    STATS["split" if split else "row"] += 1


def guided_log_softmax(logits, bias, gamma, temperature):
    _check_scores("guided_log_softmax", logits, bias, gamma, temperature)
    buf = _Buffers()
    try:
        p = _problem(buf, logits, bias, gamma, temperature)
        out, p.out_values = buf.out(logits.shape, torch.float32)
        if logits.size(0):
            _run("guided_log_softmax", p)
        return buf.copy_out(out, p.out_values)
    finally:
        buf.free()


def _rng(buf, p, seeds, offset):
    if seeds.dtype != torch.int64 or seeds.dim() != 1 or seeds.size(0) != p.n:
        raise ValueError("seeds must be int64 [N]")
    if offset.dtype != torch.int64 or offset.numel() != 1:
        raise ValueError("offset must be an int64 scalar tensor")
    p.seeds, p.seeds_stride = buf.copy_in(seeds), seeds.stride(0)
    p.offset = buf.copy_in(offset.reshape(()))


def _index(buf, p, name, logits, index):
    """The candidate path's index (the glue's set_index): int64 of the shape of logits, unit stride along rows."""
    if index is None:
        return
    if index.shape != logits.shape or index.dtype != torch.int64 or (index.size(1) > 1 and index.stride(1) != 1):
        raise ValueError(f"{name}: index must be int64 of the shape of logits, unit stride along rows")
    p.index = buf.copy_in(index)
    p.index_stride = index.stride(0) if index.size(0) > 1 else index.size(1)


def sample(logits, bias, gamma, temperature, top_k, seeds, offset, index):
    _check_scores("sample", logits, bias, gamma, temperature)
    if top_k < 0:
        raise ValueError("sample: top_k must be >= 0")
    buf = _Buffers()
    try:
        p = _problem(buf, logits, bias, gamma, temperature)
        _rng(buf, p, seeds, offset)
        p.top_k = 0 if top_k >= logits.size(1) else top_k
        _index(buf, p, "sample", logits, index)
        out, p.out_ids = buf.out((logits.size(0),), torch.int64)
        logprob, p.out_logprob = buf.out((logits.size(0),), torch.float32)
        if logits.size(0):
            _run("sample", p)
        return buf.copy_out(out, p.out_ids), buf.copy_out(logprob, p.out_logprob)
    finally:
        buf.free()


def masked_transition(x_t, logits, bias, gamma, temperature, top_k, stay_prob, mask_id, seeds, offset, index=None):
    _check_scores("masked_transition", logits, bias, gamma, temperature)
    if top_k < 0:
        raise ValueError("masked_transition: top_k must be >= 0")
    # on the candidate path mask_id is a token id of the full vocabulary, not a column
    if mask_id < 0 or (index is None and mask_id >= logits.size(1)):
        raise ValueError("masked_transition: mask_id out of range")
    buf = _Buffers()
    try:
        p = _problem(buf, logits, bias, gamma, temperature)
        _rng(buf, p, seeds, offset)
        p.top_k = 0 if top_k >= logits.size(1) else top_k
        _index(buf, p, "masked_transition", logits, index)
        p.x_t, p.x_t_stride = buf.copy_in(x_t), x_t.stride(0)
        p.stay_prob, p.stay_prob_stride = buf.copy_in(stay_prob), stay_prob.stride(0)
        p.mask_id = mask_id
        out, p.out_ids = buf.out((logits.size(0),), torch.int64)
        if logits.size(0):
            _run("masked_transition", p)
        return buf.copy_out(out, p.out_ids)
    finally:
        buf.free()


def topk_log_softmax(logits, k, bias, gamma, temperature):
    _check_scores("topk_log_softmax", logits, bias, gamma, temperature)
    n, v = logits.shape
    if not 0 <= k <= v:
        raise ValueError("topk_log_softmax: k must be in [0, V]")
    if k == 0 or n == 0:
        return torch.empty(n, k, dtype=torch.float32), torch.empty(n, k, dtype=torch.int64)
    if k > TOPK_MAX:  # the glue's fallback: the op's own log-probabilities, then a stable sort
        logp = guided_log_softmax(logits, bias, gamma, temperature)
        order = torch.sort(logp.nan_to_num(nan=-math.inf), dim=-1, descending=True, stable=True).indices[:, :k]
        ids = order.masked_fill(logp[:, :1].isnan(), -1)
        return logp.gather(1, order), ids
    buf = _Buffers()
    try:
        p = _problem(buf, logits, bias, gamma, temperature)
        p.k = k
        values, p.out_values = buf.out((n, k), torch.float32)
        ids, p.out_ids = buf.out((n, k), torch.int64)
        _run("topk_log_softmax", p)
        return buf.copy_out(values, p.out_values), buf.copy_out(ids, p.out_ids)
    finally:
        buf.free()


def confidence(logits, bias, gamma, temperature, kind):
    _check_scores("confidence", logits, bias, gamma, temperature)
    if kind not in KINDS:
        raise ValueError(f"confidence: kind must be one of {tuple(KINDS)}")
    buf = _Buffers()
    try:
        p = _problem(buf, logits, bias, gamma, temperature)
        p.kind = KINDS[kind]
        n = logits.size(0)
        ids, p.out_ids = buf.out((n,), torch.int64)
        scores, p.out_values = buf.out((n,), torch.float32)
        if n:
            _run("confidence", p)
        return buf.copy_out(ids, p.out_ids), buf.copy_out(scores, p.out_values)
    finally:
        buf.free()


def _philox(key, counter):
    return _library._REFERENCE_IMPLS["philox"](key, counter)  # Philox itself is checked by tests/test_philox.py


_IMPLS = {
    "guided_log_softmax": guided_log_softmax,
    "sample": sample,
    "masked_transition": masked_transition,
    "topk_log_softmax": topk_log_softmax,
    "confidence": confidence,
    "philox": _philox,
}

_LIB = torch.library.Library("gtl", "FRAGMENT")
for _op, _schema in _library.SCHEMAS.items():
    if not hasattr(torch.ops.gtl, _op + "_emu"):
        _LIB.define(f"{_op}_emu{_schema}")
        _LIB.impl(f"{_op}_emu", _IMPLS[_op], "CPU")
_library.register_fakes("_emu")

backends.register_backend("emu", priority=-10, device_types=("cpu",), module=__name__, op_suffix="_emu")


# --- pytest plugin ---------------------------------------------------------------------------------------------------


def pytest_collection_modifyitems(session, config, items):
    """The emulated kernels run fiber by fiber: give them the suite's small (interpreter) shapes."""
    import sys

    conftest = sys.modules.get("conftest")
    for b in getattr(conftest, "BACKENDS", []):
        if b.name == "emu":
            b.interpreted = True


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"cuda emu launches: {STATS['row']} row path, {STATS['split']} split path")
