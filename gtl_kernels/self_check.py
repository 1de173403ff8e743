"""A backend's self-check: each op once on a small fixed input, against the float64 reference (KERNEL_SPEC §5).

``auto`` runs it the first time it would pick a self-checked backend (the native GPU ones, ``cuda`` and ``triton``)
on a device, caches the verdict for the process and device, and falls back to the next backend with one warning
naming the op and the mismatch when it fails (see ``backends.py``; ``GTL_KERNELS_SELF_CHECK=0`` turns it off).

The input is fixed and has no near-ties: the best and second-best race keys of every draw are more than
``MIN_RACE_GAP`` apart (tests/test_self_check.py checks this), so every correct backend returns exactly the
reference's tokens, and a single wrong token is a failure.
"""

from __future__ import annotations

import math

import torch

from . import reference

N, V, K = 4, 2500, 6  # three 1024-token chunks, the last one partial
MASK_ID = 7
MIN_RACE_GAP = 1e-3
ATOL, RTOL = 1e-4, 1e-5


def fixed_inputs(device) -> dict:
    """The fixed input on ``device``: normalized arguments as the backends receive them."""
    g = torch.Generator().manual_seed(20240611)
    logits = torch.randn(N, V, generator=g) * 2.0
    logits[1, 1500:] = -math.inf  # an excluded block
    logits[2, 2049] = logits[2].max() + 1.5  # the head in the last, partial chunk
    bias = torch.randn(N, V, generator=g)
    to = dict(device=device)
    return dict(
        logits=logits.to(**to),
        bias=bias.to(**to),
        gamma=torch.tensor([0.0, 0.5, 1.0, 2.0], **to),
        temperature=torch.tensor([1.0, 0.7, 1.3, 0.0], **to),
        seeds=torch.tensor([11, -(2**62), 2**40 + 3, 123456789], dtype=torch.int64, **to),
        offset=torch.tensor(5, dtype=torch.int64, **to),
        x_t=torch.tensor([MASK_ID, MASK_ID, 3, MASK_ID], dtype=torch.int64, **to),
        stay_prob=torch.tensor([0.0, 0.3, 0.5, 0.0], **to),
        index=torch.randint(0, 50_000, (N, V), generator=g).to(**to),
    )


def calls(x: dict) -> dict:
    """``{name: (op, args)}``: every op, in the modes the samplers use."""
    common = (x["logits"], x["bias"], x["gamma"], x["temperature"])
    return {
        "guided_log_softmax": ("guided_log_softmax", common),
        "sample": ("sample", (*common, 0, x["seeds"], x["offset"], None)),
        "sample(top_k)": ("sample", (*common, K, x["seeds"], x["offset"], None)),
        "sample(index)": ("sample", (*common, 0, x["seeds"], x["offset"], x["index"])),
        "masked_transition": ("masked_transition", (x["x_t"], *common, K, x["stay_prob"], MASK_ID, x["seeds"],
                                                    x["offset"])),
        "topk_log_softmax": ("topk_log_softmax", (x["logits"], K, *common[1:])),
        **{f"confidence({kind})": ("confidence", (*common, kind)) for kind in reference.CONFIDENCE_KINDS},
    }


def _mismatch(got, ref) -> str | None:
    """A description of the first difference between two results (tensors or tuples of tensors), else ``None``."""
    if isinstance(ref, (tuple, list)):
        for i, (a, b) in enumerate(zip(got, ref)):
            why = _mismatch(a, b)
            if why:
                return f"output {i}: {why}"
        return None
    got = got.detach().cpu()
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return f"shape/dtype {tuple(got.shape)}/{got.dtype}, expected {tuple(ref.shape)}/{ref.dtype}"
    if ref.is_floating_point():
        g, r = got.double(), ref.double()
        same = (g == r) | (g.isnan() & r.isnan()) | ((g - r).abs() <= ATOL + RTOL * r.abs())
    else:
        same = got == ref
    if same.all():
        return None
    i = tuple(int(j) for j in (~same).nonzero()[0])
    return f"{int((~same).sum())} of {same.numel()} values differ, first at {i}: {got[i].item()} vs {ref[i].item()}"


def run(backend_op, device) -> str | None:
    """Run every call with ``backend_op(op_name)`` on ``device`` and compare with the reference on the CPU.

    Returns ``None`` when all agree, else ``"<call>: <mismatch>"`` for the first that does not (an exception counts
    as a mismatch)."""
    on_device, on_cpu = calls(fixed_inputs(device)), calls(fixed_inputs("cpu"))
    for name, (op, args) in on_device.items():
        ref = getattr(torch.ops.gtl, op + "_torch")(*on_cpu[name][1])
        try:
            got = backend_op(op)(*args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as exc:  # a crash of the backend is a failed check, reported, never raised
            return f"{name}: raised {type(exc).__name__}: {exc}"
        why = _mismatch(got, ref)
        if why:
            return f"{name}: {why}"
    return None

