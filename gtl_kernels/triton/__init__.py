"""Backend ``triton``: the five ops (and the Philox generator) as ``torch.library.triton_op`` s named
``gtl::<op>_triton``, with the schemas of ``gtl_kernels._library.SCHEMAS`` (KERNEL_SPEC §5).

Importing this package registers the ops; it raises ``ImportError`` with the reason when Triton is missing, which the
backend registry reports. On CPU tensors the kernels run under ``TRITON_INTERPRET=1`` (set before this import).
Design notes: docs/TRITON_BACKEND.md.
"""

try:
    import triton
    import triton.language  # noqa: F401
except ImportError as exc:  # the registry turns this into "backend 'triton' is not available (...)"
    raise ImportError(f"the triton backend needs the 'triton' package, which cannot be imported: {exc}") from exc

from . import confidence, guided_log_softmax, masked_transition, philox, sample, topk_log_softmax  # noqa: F401,E402

BUILD_DESCRIPTION = f"triton {triton.__version__}"
