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
def _merge_hypercube(h, stage: tl.constexpr, order: tl.constexpr, n_dims: tl.constexpr):
    """``stage`` rounds of compare-and-swap on the ``[2] * n_dims`` hypercube ``h``; order 0 ascending,
    1 descending, 2 alternating with period ``2^stage``. Kept in one function: the interpreter pays per call."""
    if order == 2:
        flip = tl.reshape(tl.arange(0, 2), [1] * (n_dims - stage - 1) + [2] + [1] * stage)
    else:
        flip = order
    for i in tl.static_range(stage):
        # round i compares along the (stage - 1 - i)-th innermost axis, i.e. axis n_dims - stage + i
        partner = tl.sum(h, axis=n_dims - stage + i, keep_dims=True) - h
        is_right = tl.reshape(tl.arange(0, 2), [1] * (n_dims - stage + i) + [2] + [1] * (stage - 1 - i))
        h = tl.where((h > partner) != (flip ^ is_right), partner, h)
    return h


@triton.jit
def topk_desc(x, K: tl.constexpr):
    """The ``K`` largest elements of each row of the int64 tensor ``x [R, N]``, sorted descending: ``[R, K]``
    (Batcher's bitonic top-k; the row axis is simply the outermost axes of the hypercube)."""
    R: tl.constexpr = x.shape[0]
    log_r: tl.constexpr = _log2(R)
    log_n: tl.constexpr = _log2(x.shape[1])
    log_k: tl.constexpr = _log2(K)
    h = tl.reshape(x, [2] * (log_r + log_n))
    for i in tl.static_range(1, log_k + 1):
        h = _merge_hypercube(h, i, 2 if i < log_n else 1, log_r + log_n)
    return tl.reshape(_fold_runs(h, log_r, log_n, log_k), [R, K])


@triton.jit
def _fold_runs(h, log_r: tl.constexpr, log_n: tl.constexpr, log_k: tl.constexpr):
    """The second half of Batcher's top-k on the hypercube ``h`` of ``2^log_r`` rows of ``2^log_n`` keys made of runs
    of ``2^log_k`` sorted alternately ascending (even runs) and descending (odd runs): pairs of runs are folded into
    their elementwise maximum (a bitonic run holding the pair's ``2^log_k`` largest) and merged, until one run per
    row is left, descending."""
    for i in tl.static_range(log_k + 1, log_n + 1):
        h = tl.max(h, axis=log_r + log_n - i)  # the larger of each pair of sorted runs: a bitonic run of the K largest
        h = _merge_hypercube(h, log_k, 2 if i < log_n else 1, log_r + log_n - i + log_k)
    return h


@triton.jit
def merge_runs_desc(x, K: tl.constexpr):
    """The ``K`` largest elements of each row of the int64 tensor ``x [R, N]`` whose rows are runs of ``K`` each
    sorted ascending, sorted descending: ``[R, K]``.

    :func:`topk_desc` with its first half (sorting the runs, alternately ascending and descending) cut to its last
    stage: an ascending run is bitonic, so one merge re-sorts every other run descending. That saves
    ``log2(K) * (log2(K) - 1) / 2`` rounds over all ``N`` keys, e.g. 36 of the 81 rounds at ``K = 512``,
    ``N = 8192``, and those on the widest tensor. Split buffers, which are stored sorted, are merged this way
    (``_topk.buffer_merge``)."""
    R: tl.constexpr = x.shape[0]
    log_r: tl.constexpr = _log2(R)
    log_n: tl.constexpr = _log2(x.shape[1])
    log_k: tl.constexpr = _log2(K)
    h = _merge_hypercube(tl.reshape(x, [2] * (log_r + log_n)), log_k, 2 if log_k < log_n else 1, log_r + log_n)
    return tl.reshape(_fold_runs(h, log_r, log_n, log_k), [R, K])


@triton.jit
def merge_sorted(x, DESCENDING: tl.constexpr):
    """Sort each row of a ``[R, N]`` int64 tensor whose rows are bitonic (e.g. ascending, or the elementwise max of an
    ascending and a descending run)."""
    log_r: tl.constexpr = _log2(x.shape[0])
    log_n: tl.constexpr = _log2(x.shape[1])
    h = _merge_hypercube(tl.reshape(x, [2] * (log_r + log_n)), log_n, DESCENDING, log_r + log_n)
    return tl.reshape(h, [x.shape[0], x.shape[1]])
