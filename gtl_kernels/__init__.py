"""gtl_kernels: exact, fused guided sampling for discrete diffusion models (see README.md and KERNEL_SPEC)."""

from . import _library  # noqa: F401  (registers the torch backend's ops)
from .backends import BackendInfo, available_backends
from .ops import confidence, derive_keys, guided_log_softmax, masked_transition, sample, topk_log_softmax

__all__ = [
    "BackendInfo",
    "available_backends",
    "confidence",
    "derive_keys",
    "guided_log_softmax",
    "masked_transition",
    "sample",
    "topk_log_softmax",
]


def _version() -> str:
    """The installed distribution's version; a source tree on ``sys.path`` that was never installed has none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gtl_kernels")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
