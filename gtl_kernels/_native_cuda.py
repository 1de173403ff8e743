"""Loads ``gtl_kernels._C_cuda`` (built only against a CUDA build of torch) and checks that it holds the CUDA kernel
of every op; fails with the reason otherwise (reported by the backend registry)."""

import torch

from . import _C, _C_cuda, _library  # noqa: F401  (_library defines the schemas the CUDA kernels implement)

_library.register_fakes("")
BUILD_DESCRIPTION = f"gtl_kernels._C_cuda (CUDA {torch.version.cuda})"

_missing = [op for op in _library.OPS if not torch._C._dispatch_has_kernel_for_dispatch_key(f"gtl::{op}", "CUDA")]
if _missing:
    raise ImportError(f"{BUILD_DESCRIPTION} has no CUDA kernel for {', '.join(_missing)}")
