"""Registration of the Triton implementations as ``torch.library.triton_op`` s with the shared schemas.

Every backend must expose the same schema (``_library.SCHEMAS``, KERNEL_SPEC §5), whose integer arguments are
``int``. ``triton_op`` infers its schema from type annotations, which turn ``int`` into ``SymInt``, and some torch
versions ignore its ``schema=`` argument; so the schema inference is pointed at the shared string for the duration of
the registration.

Under ``TRITON_INTERPRET=1`` (CPU tensors) a ``triton_op`` cannot be traced: ``wrap_triton`` hands back the plain
interpreted kernel, so tracing (``torch.compile``, ``opcheck``'s AOT check) would run kernels on data-less tensors.
There the ops are opaque ``custom_op`` s instead, with the shared shape-only fakes (``_library.FAKES``).
"""

from __future__ import annotations

import contextlib

import torch
import triton
from torch.library import triton_op

from .._library import FAKES, SCHEMAS


@contextlib.contextmanager
def _schema_from_contract(schema: str):
    module = getattr(torch._library, "triton", None)
    original = getattr(module, "infer_schema", None)
    if original is None:  # a torch whose triton_op honours schema= needs nothing more
        yield
        return
    module.infer_schema = lambda *args, **kwargs: schema
    try:
        yield
    finally:
        module.infer_schema = original


def register(op: str, fn):
    """``fn`` as ``gtl::<op>_triton`` with schema ``SCHEMAS[op]``; ``fn`` also serves as the fake implementation
    (it must trace under fake tensors: no data-dependent host logic)."""
    schema = SCHEMAS[op]
    if triton.knobs.runtime.interpret:
        opaque = torch.library.custom_op(f"gtl::{op}_triton", fn, mutates_args=(), schema=schema)
        opaque.register_fake(FAKES[op])
        return opaque
    with _schema_from_contract(schema):
        return triton_op(f"gtl::{op}_triton", fn, mutates_args=(), schema=schema)
