"""Loads ``gtl_kernels._C`` (the C++ extension) and checks that it holds the CPU kernels of every op.

Importing this module fails with the reason when the extension was not built or lacks kernels; the backend registry
reports that reason. The Philox op ``gtl::philox`` is usable as soon as ``_C`` loads.
"""

import torch

from . import _C, _library

_library.register_fakes("")
BUILD_DESCRIPTION = _C.build_info()

_missing = [op for op in _library.OPS if not torch._C._dispatch_has_kernel_for_dispatch_key(f"gtl::{op}", "CPU")]
if _missing:
    raise ImportError(f"{BUILD_DESCRIPTION} has no CPU kernel for {', '.join(_missing)}")
