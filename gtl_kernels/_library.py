"""The ``torch.library`` contract: one schema per op, shared by every backend (KERNEL_SPEC §5).

Every backend registers the same schemas, defined here and nowhere else (the C++ extensions register kernels
only), under its own name in namespace ``gtl``:

    backend ``torch``   gtl::<op>_torch    this module (reference.py behind ``CompositeExplicitAutograd``)
    backend ``cpu``     gtl::<op>          C++ kernels in ``gtl_kernels._C``, CPU dispatch key
    backend ``cuda``    gtl::<op>          C++ kernels in ``gtl_kernels._C_cuda``, CUDA dispatch key
    backend ``triton``  gtl::<op>_triton   ``torch.library.triton_op`` in ``gtl_kernels/triton/``

Arguments are the normalized ones (see ``reference.py``): 2-D rows with unit stride along the vocabulary, per-row
float32 ``gamma``/``temperature``/``stay_prob``, int64 row keys ``seeds`` and an int64 scalar tensor ``offset``.
``philox`` exposes each backend's generator so tests can check that all produce bit-identical words.
"""

from __future__ import annotations

import torch

from . import reference

SCHEMAS = {
    "guided_log_softmax": "(Tensor logits, Tensor? bias, Tensor gamma, Tensor temperature) -> Tensor",
    "sample": (
        "(Tensor logits, Tensor? bias, Tensor gamma, Tensor temperature, int top_k, Tensor seeds, Tensor offset,"
        " Tensor? index) -> (Tensor, Tensor)"
    ),
    "masked_transition": (
        "(Tensor x_t, Tensor logits, Tensor? bias, Tensor gamma, Tensor temperature, int top_k, Tensor stay_prob,"
        " int mask_id, Tensor seeds, Tensor offset, Tensor? index=None) -> Tensor"
    ),
    "topk_log_softmax": "(Tensor logits, int k, Tensor? bias, Tensor gamma, Tensor temperature) -> (Tensor, Tensor)",
    "confidence": "(Tensor logits, Tensor? bias, Tensor gamma, Tensor temperature, str kind) -> (Tensor, Tensor)",
    "philox": "(Tensor key, Tensor counter) -> Tensor",
}
OPS = ("guided_log_softmax", "sample", "masked_transition", "topk_log_softmax", "confidence")


# Fake (meta) implementations: output shapes and dtypes only, shared by every backend's registration.
def _fake_guided_log_softmax(logits, bias, gamma, temperature):
    return logits.new_empty(logits.shape, dtype=torch.float32)


def _fake_sample(logits, bias, gamma, temperature, top_k, seeds, offset, index):
    n = logits.shape[:1]
    return logits.new_empty(n, dtype=torch.int64), logits.new_empty(n, dtype=torch.float32)


def _fake_masked_transition(x_t, logits, bias, gamma, temperature, top_k, stay_prob, mask_id, seeds, offset, index=None):
    return x_t.new_empty(x_t.shape, dtype=torch.int64)


def _fake_topk_log_softmax(logits, k, bias, gamma, temperature):
    n = logits.shape[0]
    return logits.new_empty((n, k), dtype=torch.float32), logits.new_empty((n, k), dtype=torch.int64)


def _fake_confidence(logits, bias, gamma, temperature, kind):
    n = logits.shape[0]
    return logits.new_empty((n,), dtype=torch.int64), logits.new_empty((n,), dtype=torch.float32)


def _fake_philox(key, counter):
    return counter.new_empty(torch.broadcast_shapes(counter.shape, key.shape + (4,)), dtype=torch.int64)


FAKES = {
    "guided_log_softmax": _fake_guided_log_softmax,
    "sample": _fake_sample,
    "masked_transition": _fake_masked_transition,
    "topk_log_softmax": _fake_topk_log_softmax,
    "confidence": _fake_confidence,
    "philox": _fake_philox,
}


_FAKES_REGISTERED: set[str] = set()


def register_fakes(suffix: str) -> None:
    """Register the fake implementation of every existing op ``gtl::<op><suffix>`` (idempotent)."""
    for op, fake in FAKES.items():
        qualname = f"gtl::{op}{suffix}"
        if qualname not in _FAKES_REGISTERED and hasattr(torch.ops.gtl, op + suffix):
            torch.library.register_fake(qualname, fake, lib=_LIB)
            _FAKES_REGISTERED.add(qualname)


def _reference_philox(key, counter):
    return reference.philox4x32(key, counter)


_REFERENCE_IMPLS = {
    "guided_log_softmax": reference.guided_log_softmax,
    "sample": reference.sample,
    "masked_transition": reference.masked_transition,
    "topk_log_softmax": reference.topk_log_softmax,
    "confidence": reference.confidence,
    "philox": _reference_philox,
}

# The only definition of the schemas: ``gtl::<op>`` (implemented by the native extensions, which register kernels
# only) and ``gtl::<op>_torch`` (the reference).
_LIB = torch.library.Library("gtl", "FRAGMENT")
for _op, _schema in SCHEMAS.items():
    _LIB.define(f"{_op}{_schema}")
    _LIB.define(f"{_op}_torch{_schema}")
    _LIB.impl(f"{_op}_torch", _REFERENCE_IMPLS[_op], "CompositeExplicitAutograd")
register_fakes("_torch")
