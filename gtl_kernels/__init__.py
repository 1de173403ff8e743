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
__version__ = "0.1.0"
