"""Bitonic top-k and merge of int64 keys, as in ``triton.language.standard`` but with the partner element found by a
``tl.sum`` over the hypercube axis instead of ``xor_sum``.

Why: the Triton interpreter runs reductions with a custom combine function (``xor_sum``, hence ``tl.sort``,
``tl.topk``, ``tl.flip``) one element at a time in Python, minutes per row; ``tl.sum`` runs as one numpy call. On the
GPU both are the same reduction over an axis of length 2. Integer sums wrap, so ``(a + b) - a == b`` exactly: only
integer keys are sorted here (``_common.pack_key``).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.jit import constexpr_function


@constexpr_function
def _log2(n):
    log = 0
    while (1 << log) < n:
        log += 1
    assert (1 << log) == n, f"bitonic sizes must be powers of two, got {n}"
    return log


@triton.jit
def _indicator(n_dims: tl.constexpr, j: tl.constexpr):
    ar = tl.arange(0, 2)
    return tl.reshape(ar, [1] * (n_dims - j - 1) + [2] + [1] * j)


@triton.jit
def _compare_and_swap(x, flip, i: tl.constexpr):
    # compare-and-swap along the i-th innermost axis of the [2, 2, ..., 2] hypercube
    n_dims: tl.constexpr = _log2(x.numel)
    y = tl.sum(x, axis=n_dims - 1 - i, keep_dims=True) - x  # the partner element
    is_right = _indicator(n_dims, i)
    return tl.where((x > y) != (flip ^ is_right), y, x)


@triton.jit
def _merge_hypercube(x, stage: tl.constexpr, order: tl.constexpr):
    # order: 0 ascending, 1 descending, 2 alternating with period 2^stage
    if order == 2:
        flip = _indicator(_log2(x.numel), stage)
    else:
        flip = order
    for i in tl.static_range(stage):
        x = _compare_and_swap(x, flip, stage - 1 - i)
    return x


@triton.jit
def topk_desc(x, K: tl.constexpr):
    """The ``K`` largest elements of the 1-D int64 tensor ``x``, sorted descending (Batcher's bitonic top-k)."""
    log_n: tl.constexpr = _log2(x.numel)
    log_k: tl.constexpr = _log2(K)
    h = tl.reshape(x, [2] * log_n)
    for i in tl.static_range(1, log_k + 1):
        h = _merge_hypercube(h, i, 2 if i < log_n else 1)
    for i in tl.static_range(log_k + 1, log_n + 1):
        h = tl.max(h, axis=log_n - i)  # the larger of each pair of sorted runs: a bitonic run of the K largest
        h = _merge_hypercube(h, log_k, 2 if i < log_n else 1)
    return tl.reshape(h, [K])


@triton.jit
def merge_sorted(x, DESCENDING: tl.constexpr):
    """Sort a bitonic 1-D int64 tensor (e.g. an ascending one, or the elementwise max of an ascending and a
    descending one)."""
    n_dims: tl.constexpr = _log2(x.numel)
    h = _merge_hypercube(tl.reshape(x, [2] * n_dims), n_dims, DESCENDING)
    return tl.reshape(h, [x.numel])
