"""Backend registry and selection (KERNEL_SPEC §5).

A backend is a set of registered ``torch.library`` ops (see ``_library.py``) plus the facts needed to choose it:
which device types it runs on and how much ``auto`` prefers it. Backends load lazily: importing ``gtl_kernels``
never fails because an extension or Triton is missing; the reason is kept and reported instead.

Selection, per call: the ``backend=`` argument, else the ``GTL_KERNELS_BACKEND`` environment variable, else
``"auto"``. An explicit choice that cannot run the call raises ``RuntimeError`` naming the reason. ``auto`` takes the
backend that ``auto_table.json`` names for the call's device type, op and row class when it can run (the table is
made from benchmark runs by ``gtl_kernels.bench.auto_table``, never by hand), else the highest-priority backend that
can; the ``torch`` reference always can.

Self-check: the first time ``auto`` would pick a backend registered with ``self_check=True`` (the native GPU backends
``cuda`` and ``triton``) on a device, it runs each op once on a small fixed input against the reference
(``self_check.py``, milliseconds after compilation), caches the verdict for the process and device, and, if the check
fails, warns once naming the op and the mismatch and takes the next backend. ``GTL_KERNELS_SELF_CHECK=0`` disables
it. An explicitly requested backend is never self-checked.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import torch

from . import _library

ENV_VAR = "GTL_KERNELS_BACKEND"
SELF_CHECK_ENV_VAR = "GTL_KERNELS_SELF_CHECK"
AUTO_TABLE = Path(__file__).with_name("auto_table.json")
SMALL_ROWS = 64  # at most this many rows: latency-bound launches (split rows on the GPU backends)


def row_class(rows) -> str:
    """The row class of a call with ``rows`` rows (``None``: unknown), the granularity of the measured choices."""
    if rows is None:
        return "any"
    return f"n<={SMALL_ROWS}" if rows <= SMALL_ROWS else f"n>{SMALL_ROWS}"


@functools.cache
def _auto_choices() -> dict:
    """``{device_type: {op: {row_class: backend}}}`` from ``auto_table.json``; empty when it is missing or unreadable
    (``auto`` then follows the priorities)."""
    try:
        return json.loads(AUTO_TABLE.read_text()).get("choices", {})
    except (OSError, ValueError):
        return {}


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """What :func:`available_backends` reports for one backend."""

    name: str
    available: bool
    reason: str  # why it is unavailable, or what it was built from
    device_types: tuple[str, ...]  # empty: any device


@dataclasses.dataclass
class _Backend:
    name: str
    priority: int  # auto prefers higher
    device_types: tuple[str, ...]
    module: str  # importing it registers the ops (or raises with the reason)
    op_suffix: str  # the op `x` of this backend is torch.ops.gtl.<x><op_suffix>
    dispatch_key: Callable[[str], str | None] = lambda device_type: None  # native ops: kernel must exist for key
    self_check: bool = False  # auto checks it against the reference once per process and device before using it
    _status: tuple[bool, str] | None = None

    def status(self) -> tuple[bool, str]:
        if self._status is None:
            try:
                mod = importlib.import_module(self.module)
                missing = [op for op in _library.SCHEMAS if not hasattr(torch.ops.gtl, op + self.op_suffix)]
                if missing:
                    raise ImportError(f"{self.module} does not register {', '.join(missing)}")
                self._status = (True, getattr(mod, "BUILD_DESCRIPTION", self.module))
            except Exception as exc:  # any failure to load is a reason, never an import error of gtl_kernels
                self._status = (False, f"{type(exc).__name__}: {exc}")
        return self._status

    def cannot_run(self, op: str, device: torch.device) -> str | None:
        """``None`` if this backend can run ``op`` on ``device``, else the reason."""
        ok, reason = self.status()
        if not ok:
            return f"backend {self.name!r} is not available ({reason})"
        if self.device_types and device.type not in self.device_types:
            return f"backend {self.name!r} runs on {'/'.join(self.device_types)} tensors, not {device.type}"
        if not hasattr(torch.ops.gtl, op + self.op_suffix):
            return f"backend {self.name!r} does not implement {op!r}"
        key = self.dispatch_key(device.type)
        if key is not None and not torch._C._dispatch_has_kernel_for_dispatch_key(f"gtl::{op}", key):
            return f"backend {self.name!r} has no {key} kernel for {op!r}"
        return None

    def op(self, op: str):
        return getattr(torch.ops.gtl, op + self.op_suffix)


def _triton_device_types() -> tuple[str, ...]:
    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    return ("cuda", "cpu") if interpreted else ("cuda",)


_REGISTRY: dict[str, _Backend] = {}


def register_backend(
    name: str,
    *,
    priority: int,
    device_types: tuple[str, ...],
    module: str,
    op_suffix: str,
    dispatch_key: Callable[[str], str | None] | None = None,
    self_check: bool = False,
) -> None:
    """Add a backend to the registry (a later registration under the same name replaces the earlier one and its
    cached self-check verdicts)."""
    kwargs = {} if dispatch_key is None else {"dispatch_key": dispatch_key}
    _REGISTRY[name] = _Backend(name, priority, device_types, module, op_suffix, self_check=self_check, **kwargs)
    for key in [k for k in _SELF_CHECK_VERDICTS if k[0] == name]:
        del _SELF_CHECK_VERDICTS[key]


def unregister_backend(name: str) -> None:
    """Remove a backend from the registry (tests that inject a backend clean up with it)."""
    _REGISTRY.pop(name, None)
    for key in [k for k in _SELF_CHECK_VERDICTS if k[0] == name]:
        del _SELF_CHECK_VERDICTS[key]


# (backend name, device) -> None when the self-check passed, else the failure; one entry per process and device
_SELF_CHECK_VERDICTS: dict[tuple[str, str], str | None] = {}


def self_check_failure(name: str, device: torch.device) -> str | None:
    """The cached self-check verdict of backend ``name`` on ``device`` (running the check the first time): ``None``
    when it passed, was disabled (``GTL_KERNELS_SELF_CHECK=0``) or does not apply to the backend, else the first
    mismatch. A failure warns once, when it is found."""
    backend = _REGISTRY[name]
    if not backend.self_check or os.environ.get(SELF_CHECK_ENV_VAR, "1") == "0":
        return None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (name, str(device))
    if key not in _SELF_CHECK_VERDICTS:
        from . import self_check

        failure = self_check.run(backend.op, device)
        _SELF_CHECK_VERDICTS[key] = failure
        if failure is not None:
            warnings.warn(
                f"gtl_kernels: backend {name!r} failed its self-check on {device} ({failure}); 'auto' uses the next "
                f"backend on this device. Set {SELF_CHECK_ENV_VAR}=0 to skip the check.",
                RuntimeWarning,
                stacklevel=2,
            )
    return _SELF_CHECK_VERDICTS[key]


register_backend("torch", priority=0, device_types=(), module="gtl_kernels._library", op_suffix="_torch")
register_backend(
    "cpu",
    priority=20,
    device_types=("cpu",),
    module="gtl_kernels._native",
    op_suffix="",
    dispatch_key=lambda device_type: "CPU",
)
register_backend(
    "triton",
    priority=10,
    device_types=_triton_device_types(),
    module="gtl_kernels.triton",
    op_suffix="_triton",
    self_check=True,
)
register_backend(
    "cuda",
    priority=20,
    device_types=("cuda",),
    module="gtl_kernels._native_cuda",
    op_suffix="",
    dispatch_key=lambda device_type: "CUDA",
    self_check=True,
)


def native_philox(device: torch.device):
    """The native ``gtl::philox`` of ``device`` (``cpu`` / ``cuda`` backend) when it is built, else the reference's;
    all are bit-identical (tests/test_philox.py). Used for key derivation, which runs outside ``auto``'s choice
    (and its GPU self-check), so no backend but the device's native one is ever asked."""
    native = {"cpu": "cpu", "cuda": "cuda"}.get(device.type)
    if native is not None and _REGISTRY[native].status()[0]:
        return getattr(torch.ops.gtl, "philox" + _REGISTRY[native].op_suffix)
    return reference_philox


def reference_philox(key, counter):
    from .reference import philox4x32

    return philox4x32(key, counter)


def available_backends() -> dict[str, BackendInfo]:
    """Every known backend, whether it can run here, and why not (or what it was built from)."""
    infos = {}
    for b in sorted(_REGISTRY.values(), key=lambda b: -b.priority):
        ok, reason = b.status()
        infos[b.name] = BackendInfo(b.name, ok, reason, b.device_types)
    return infos


def select(op: str, device: torch.device, requested: str | None = None, rows=None):
    """The registered op that runs ``op`` on ``device`` for the requested backend name (or ``auto``); ``rows``, the
    call's row count, picks the measured choice of its row class.

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when an explicitly requested backend cannot run.
    """
    index = -1 if device.index is None else device.index
    name = _choose(op, device.type, requested or os.environ.get(ENV_VAR) or "auto", row_class(rows), index)
    return _REGISTRY[name].op(op)


def _usable(b: _Backend, op: str, device: torch.device) -> bool:
    """``auto``'s test: the backend can run the call and passed its self-check on the device (if it has one)."""
    return b.cannot_run(op, device) is None and self_check_failure(b.name, device) is None


@torch.compiler.assume_constant_result
def _choose(op: str, device_type: str, name: str, rows_class: str = "any", device_index: int = -1) -> str:
    """The backend name for ``op`` on ``device_type`` (device ``device_index``, -1: unspecified). Under
    ``torch.compile`` it runs once at trace time and its result is a constant of the graph (the checks call into the
    dispatcher, which cannot be traced)."""
    device = torch.device(device_type) if device_index < 0 else torch.device(device_type, device_index)
    if name != "auto":
        if name not in _REGISTRY:
            raise ValueError(f"backend must be 'auto' or one of {sorted(_REGISTRY)}, got {name!r}")
        reason = _REGISTRY[name].cannot_run(op, device)
        if reason is not None:
            raise RuntimeError(f"cannot run gtl_kernels.{op}: {reason}")
        return name
    measured = _auto_choices().get(device_type, {}).get(op, {}).get(rows_class)
    if measured in _REGISTRY and _usable(_REGISTRY[measured], op, device):
        return measured
    for b in sorted(_REGISTRY.values(), key=lambda b: -b.priority):
        if _usable(b, op, device):
            return b.name
    raise RuntimeError(f"no backend can run gtl_kernels.{op} on {device}")  # unreachable: torch runs anywhere
