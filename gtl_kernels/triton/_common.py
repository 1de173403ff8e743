"""Shared pieces of the Triton kernels: Philox draws, 64-bit uniforms, guided scores, sortable keys, launch sizes.

Everything numeric follows KERNEL_SPEC §1 (scores) and §3 (randomness); the float64 oracle is ``reference.py``.
The helpers use only ``tl`` primitives (no libdevice, no inline assembly) so that the same code runs on the GPU and
under ``TRITON_INTERPRET=1`` on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings

import numpy as np
import torch
import triton
import triton.language as tl

from ..reference import CHUNK  # tokens per chunk of the two-level race (KERNEL_SPEC §3, part of the contract)

K_MAX = 1024  # largest top-k served by the one-pass candidate buffer (docs/TRITON_BACKEND.md, "top-k")
# Keys that one program merges from the split buffers of a top-k row, SPLITS_PAD * K_PAD, all in registers: 8192 keys
# compile without spills at 8 warps for sm_80 and sm_90, 16384 spill (gtl_kernels.triton.aot_check).
TOPK_MERGE_KEYS = 8192
# Register limit of the top-k fold (the sampling ops' merge of split buffers). Left to itself, ptxas holds it to 128
# registers (two blocks of 8 warps per SM) and then spills the widest merge (24 B at 64 x 128 keys on sm_90); rows are
# split only when there are too few to fill the GPU, so the occupancy that buys is worth nothing there. (The
# topk_log_softmax write kernel, one program per row at any batch, keeps the default: no spill at 128.) Under
# torch.compile the option is a launch keyword that is not a kernel argument: the traced call drops it as a backend
# option (torch 2.13's triton_kernel_wrap / Inductor keep only the kernel's own arguments), so a compiled graph may
# run the fold at ptxas' default, a cost in that one configuration, not an error.
TOPK_MERGE_MAXNREG = 255

# The same numbers as seen from kernels (Triton reads only constexpr globals).
CHUNK_C = tl.constexpr(CHUNK)
STREAM_TOKEN = tl.constexpr(0)  # counter word 3 (KERNEL_SPEC §3)
STREAM_STAY = tl.constexpr(1)
STREAM_CHUNK = tl.constexpr(2)
INT32_MAX = tl.constexpr(2**31 - 1)


# ---------------------------------------------------------------------------------------------------------------------
# Randomness (KERNEL_SPEC §3)
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def philox_words(seed, a, offset, STREAM: tl.constexpr):
    """The first two Philox4x32-10 output words of counter ``(a, offset_lo, offset_hi, STREAM)`` under the 64-bit
    key ``seed`` (key words: low, high), for every element of ``a``. ``tl.philox`` splits the key the same way."""
    a32 = a.to(tl.uint32)
    zero = a32 * 0
    lo = zero + (offset & 0xFFFFFFFF).to(tl.uint32)
    hi = zero + ((offset >> 32) & 0xFFFFFFFF).to(tl.uint32)
    w0, w1, _, _ = tl.philox(seed, a32, lo, hi, zero + STREAM)
    return w0, w1


@triton.jit
def neg_log1m(c):
    """``-ln(1 - c)`` for ``0 < c <= 1/2`` with a few ulp of relative error, from primitives only.

    ``-log1p(-c) = 2 atanh(t)`` with ``t = c / (2 - c) <= 1/3``; the odd series in ``t`` converges by ``t^2 <= 1/9``
    per term, so nine terms reach float32 precision. (A fast ``log`` near 1 has a fixed *absolute* error, which would
    be a large relative error of ``E`` exactly where the race picks its winners.)
    """
    t = tl.math.div_rn(c, 2.0 - c)
    t2 = t * t
    p = 1.0 / 17.0
    p = p * t2 + 1.0 / 15.0
    p = p * t2 + 1.0 / 13.0
    p = p * t2 + 1.0 / 11.0
    p = p * t2 + 1.0 / 9.0
    p = p * t2 + 1.0 / 7.0
    p = p * t2 + 1.0 / 5.0
    p = p * t2 + 1.0 / 3.0
    p = p * t2 + 1.0
    return 2.0 * t * p


@triton.jit
def exponential64(w0, w1):
    """``E = -ln U`` with ``U = (x + 0.5) / 2^64``, ``x = (w0 << 32) | w1``, in float32 with small relative error over
    the whole range (KERNEL_SPEC §3); never the log of a 24-bit uniform.

    ``U <= 1/2``: ``U`` itself is a normal float32 (at least ``2^-65``), so ``-ln U`` has no cancellation.
    ``U > 1/2``: the complement ``1 - U = (~x + 0.5) / 2^64`` is exact in integers and ``E = -ln(1 - c)``.
    """
    low = w0 < 0x80000000
    # x (U <= 1/2) or ~x (U > 1/2): top bit clear either way, so int64 holds it; f = U or 1 - U, in (2^-65, 1/2].
    hi = tl.where(low, w0, 0xFFFFFFFF - w0).to(tl.int64)
    lo = tl.where(low, w1, 0xFFFFFFFF - w1).to(tl.int64)
    f = (((hi << 32) | lo).to(tl.float32) + 0.5) * 5.421010862427522e-20  # 2^-64
    return tl.where(low, -tl.log(f), neg_log1m(f))


@triton.jit
def uniform64_less(w0, w1, p):
    """``U < p`` for the 64-bit uniform of ``(w0, w1)``; float64 as in the reference, so the decision is the same bit
    for bit (one comparison per row: the stay decision of the masked transition)."""
    # w0 * 2^32 is exact and the sum rounds once: the reference's float64 value of x.
    u = (w0.to(tl.float64) * 4294967296.0 + w1.to(tl.float64) + 0.5) * 5.421010862427522e-20
    return u < p.to(tl.float64)


# ---------------------------------------------------------------------------------------------------------------------
# Scores (KERNEL_SPEC §1)
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def row_params(gamma_ptr, temp_ptr, rows, ok):
    """Per-row ``gamma``, ``1 / T`` and the temperature's mode, for a row index or a vector of them (``ok``: rows that
    exist).

    ``greedy``: ``T == 0`` (scores stay unscaled). ``bad_t``: ``T < 0`` or NaN makes the row invalid (KERNEL_SPEC §4).
    ``1 / T`` is kept at least the smallest normal float so ``T = inf`` leaves ``+-inf`` scores infinite instead of
    turning them into NaN (``inf * 0``); the reference clamps ``T`` the same way.
    """
    gamma = tl.load(gamma_ptr + rows, mask=ok, other=0.0)
    t = tl.load(temp_ptr + rows, mask=ok, other=1.0)
    positive = t > 0.0
    inv_t = tl.where(positive, tl.maximum(tl.math.div_rn(1.0, tl.where(positive, t, 1.0)), 1.1754943508222875e-38), 1.0)
    greedy = t == 0.0
    bad_t = ~(t >= 0.0)
    return gamma, inv_t, greedy, bad_t


@triton.jit
def load_scores(logits_ptr, l_off, bias_ptr, b_off, col, mask, gamma, inv_t, mask_id,
                HAS_BIAS: tl.constexpr, MASKED: tl.constexpr):
    """Scores ``s = (logits + gamma * bias) / T`` in float32 at ``l_off + col`` (``l_off``: 64-bit row offsets, so
    ``N * V >= 2^31`` works; everything broadcasts against ``col``).

    Elements outside ``mask`` and, with ``MASKED``, column ``mask_id`` read as ``-inf``. Inputs are loaded in their own
    dtype. A row with ``gamma == 0`` does not read its bias at all, so a NaN or ``-inf`` bias cannot reach it
    (KERNEL_SPEC §1).
    """
    z = tl.load(logits_ptr + l_off + col, mask=mask, other=float("-inf")).to(tl.float32)
    if HAS_BIAS:
        # (tl.where, not `&`: the interpreter cannot `&` a loaded scalar's comparison with a block)
        b = tl.load(bias_ptr + b_off + col, mask=tl.where(gamma != 0.0, mask, False), other=0.0)
        z = z + gamma * b.to(tl.float32)
    s = z * inv_t
    if MASKED:
        s = tl.where(col == mask_id, float("-inf"), s)
    return s


# ---------------------------------------------------------------------------------------------------------------------
# Sortable (score, token) keys for top-k (ties toward the lower id)
# ---------------------------------------------------------------------------------------------------------------------

KEY_PAD = tl.constexpr(-(2**63))  # below every real key: padding never enters a top-k


@triton.jit
def _ordered_bits(s):
    """float32 -> int32 with the same order (``-0.0`` taken as ``+0.0``, so the two tie as in the reference)."""
    b = tl.where(s == 0.0, 0.0, s).to(tl.int32, bitcast=True)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


@triton.jit
def pack_key(s, col):
    """int64 key ordered by score, then by *lower* column: ``(ordered(s) << 32) | (2^32 - 1 - col)``."""
    return (_ordered_bits(s).to(tl.int64) << 32) | (0xFFFFFFFF - col.to(tl.int64))


@triton.jit
def unpack_key(key):
    """Inverse of :func:`pack_key`: ``(score float32, column int32)``."""
    b = (key >> 32).to(tl.int32)
    s = (b ^ ((b >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
    col = (0xFFFFFFFF - (key & 0xFFFFFFFF)).to(tl.int32)
    return s, col


# ---------------------------------------------------------------------------------------------------------------------
# Row statistics: log-sum-exp, +inf count, first maximum, NaN flag (and, for confidence, entropy and the runner-up)
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _finite_or_zero(m):
    return tl.where(tl.abs(m) < float("inf"), m, 0.0)


@triton.jit
def block_stats(s, col, WANT_ENTROPY: tl.constexpr):
    """Statistics of one block of scores ``s`` (columns ``col``, excluded entries ``-inf``).

    Returns ``(m, S, A, t2, arg, cnt, bad)``: the maximum, ``S = sum exp(s - m)``, ``A = sum exp(s - m) (s - m)``
    (0 unless ``WANT_ENTROPY``), the second-largest score (the maximum again if it occurs twice), the first column of
    the maximum, the number of ``+inf`` scores and a NaN flag. A NaN anywhere makes ``S`` NaN, which is how NaN is
    detected without a second compare per element.
    """
    m = tl.max(s)
    ms = _finite_or_zero(m)
    e = tl.exp(s - ms)
    S = tl.sum(e)
    bad = (S != S).to(tl.int32)
    if WANT_ENTROPY:
        A = tl.sum(tl.where(s > float("-inf"), e * (s - ms), 0.0))
        arg = tl.min(tl.where(s == m, col, 2147483647))
        t2 = tl.max(tl.where(col == arg, float("-inf"), s))
    else:
        A = 0.0
        arg = tl.min(tl.where(s == m, col, 2147483647))
        t2 = m
    cnt = tl.zeros((), tl.int32)
    if m == float("inf"):
        cnt = tl.sum((s == float("inf")).to(tl.int32))
    return m, S, A, t2, arg, cnt, bad


@triton.jit
def stats_combine(m, S, A, t2, arg, cnt, bad, mb, Sb, Ab, t2b, argb, cntb, badb):
    """Fold block statistics into running ones, blocks in column order (ties keep the earlier, lower column).

    The fold is sequential in block order whatever the split of the row, so the result does not depend on it.
    """
    mn = tl.maximum(m, mb)
    ms = _finite_or_zero(mn)
    # exp(-inf) = 0 removes an empty side; its (m - ms) factor is replaced by 0 so that 0 * inf never appears.
    # (+inf rows use the count, not S and A.)
    fa = tl.exp(m - ms)
    fb = tl.exp(mb - ms)
    da = tl.where(m > float("-inf"), m - ms, 0.0)
    db = tl.where(mb > float("-inf"), mb - ms, 0.0)
    S_new = S * fa + Sb * fb
    A_new = fa * (A + da * S) + fb * (Ab + db * Sb)
    t2_new = tl.maximum(tl.minimum(m, mb), tl.maximum(t2, t2b))
    arg_new = tl.where(mb > m, argb, arg)
    return mn, S_new, A_new, t2_new, arg_new, cnt + cntb, bad | badb


# Compiled, a reduction with a combine function (``tl.reduce``) does in one pass what built-in reductions do in two or
# three, one cross-warp exchange each: that kept the log-probability of ``sample`` from adding spills on sm_90. The
# interpreter runs such a combine element by element in Python (a 3000 x 2500 draw took over 15 minutes instead of
# seconds), so there the row helpers below take the built-in reductions. Both forms give the same results; the
# combines are tested on their own in tests/test_triton_backend.py. The switch is Triton's own (``TRITON_INTERPRET``
# as its ``@triton.jit`` reads it).
ONE_PASS_REDUCE = tl.constexpr(not triton.knobs.runtime.interpret)


@triton.jit
def max_sum_exp(m1, s1, m2, s2):
    """Combine of a one-pass ``(max, sum exp(x - max))`` reduction (``tl.reduce``; an element starts as ``(x, 1)``,
    an empty one as ``(-inf, 0)``)."""
    m = tl.maximum(m1, m2)
    ms = tl.where(m > float("-inf"), m, 0.0)
    return m, s1 * tl.exp(m1 - ms) + s2 * tl.exp(m2 - ms)


@triton.jit
def argmax_with_score(k1, c1, s1, k2, c2, s2):
    """Combine of the token race's argmax: the larger key, on a tie the lower column, carrying that column's score."""
    second = (k2 > k1) | ((k2 == k1) & (c2 < c1))
    return tl.where(second, k2, k1), tl.where(second, c2, c1), tl.where(second, s2, s1)


@triton.jit
def row_max_sum_exp(x):
    """Per row of ``x`` (``[R, C]``, -inf for an empty slot): ``(max, sum exp(x - max))``, so that the row's
    log-sum-exp is ``max + ln(sum)``; ``(-inf, 0)`` for a row with nothing in it."""
    if ONE_PASS_REDUCE:
        m, total = tl.reduce((x, (x > float("-inf")).to(tl.float32)), 1, max_sum_exp)
    else:
        m = tl.max(x, axis=1)
        total = tl.sum(tl.exp(x - tl.where(m > float("-inf"), m, 0.0)[:, None]), axis=1)
    return m, total


@triton.jit
def row_argmax_with_score(key, col, score):
    """Per row of ``[R, C]`` keys: the largest key, its column (on a tie the lowest) and that column's score."""
    if ONE_PASS_REDUCE:
        best, won, won_s = tl.reduce((key, col, score), 1, argmax_with_score)
    else:
        best = tl.max(key, axis=1)
        won = tl.min(tl.where(key == best[:, None], col, INT32_MAX), axis=1)
        won_s = tl.max(tl.where(col == won[:, None], score, float("-inf")), axis=1)
    return best, won, won_s


# ---------------------------------------------------------------------------------------------------------------------
# Launch sizes (Python)
# ---------------------------------------------------------------------------------------------------------------------


def interpreted(device: torch.device) -> bool:
    """Kernels on CPU tensors run under the Triton interpreter (``TRITON_INTERPRET=1``)."""
    return device.type != "cuda"


@contextlib.contextmanager
def quiet(device: torch.device):
    """The interpreter evaluates ``log(0)``, ``max`` of a NaN row and friends with numpy, which warns; the kernels
    mean ``-inf`` / NaN there. Nothing to silence on the GPU."""
    if not interpreted(device):
        yield
        return
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


FORCE_BLOCK: int | None = None  # tests set this (with FORCE_SPLITS) to split rows that the interpreter would not


def row_block(v: int, device: torch.device, multiple: int = CHUNK) -> int:
    """Tokens per loop iteration over a row: a power of two, a multiple of ``multiple``, a function of ``V`` and the
    device only (never of ``N``), so every row is reduced in the same tiles whatever the batch (batch invariance).

    The interpreter pays per operation, not per element: it takes whole rows up to 64k tokens.
    ``GTL_TRITON_BLOCK`` overrides the GPU size for tuning.
    """
    need = max(triton.next_power_of_2(v), multiple)
    if FORCE_BLOCK:
        return max(FORCE_BLOCK, multiple)
    if interpreted(device):
        return min(need, 65536)
    return min(need, max(int(os.environ.get("GTL_TRITON_BLOCK", 4096)), multiple))


def rows_per_program(tile: int, n_rows: int, device: torch.device) -> int:
    """Rows per program of the sampling kernels: 1 on the GPU; under the interpreter, whose cost is per operation,
    as many as keep a tile near 2^18 elements, and no more than the batch needs. (numpy reduces each row of a tile
    on its own, so there the grouping of rows cannot change a row's result.)"""
    if not interpreted(device):
        return 1
    return max(1, min(256, (1 << 18) // tile, triton.next_power_of_2(max(n_rows, 1))))


# Launch option of every kernel that computes scores: no multiply-add contraction. A row's scores are computed in
# several places (the maximum, the exponentials, the race keys); with contraction the code generator may form
# z * inv_t - m as one fused multiply-add in one place and round z * inv_t first in another, and where the tempered
# scores are large (1e10: ulp 1024) the two differ by hundreds of units and an exponential overflows. Found on an H200
# (2026-12-04, tests/test_fuzz_regressions.py); the reference, the interpreter and the C++ CPU build never contract.
# torch.compile's traced launch drops backend options such as this one (as it drops ``maxnreg``).
NO_FMA = {"enable_fp_fusion": False}


def num_warps(device: torch.device) -> int:
    return 1 if interpreted(device) else int(os.environ.get("GTL_TRITON_NUM_WARPS", 8))


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


FORCE_SPLITS: int | None = None  # tests set this to check that results do not depend on the split


def num_splits(n_rows: int, n_blocks: int, device: torch.device) -> int:
    """Programs per row: enough rows x splits to fill the GPU twice over, at most one per block.

    Any split gives the same result (each block is reduced alone and the partial results are folded in block order
    or by exact max/min), so this is free to depend on ``N`` and the device. ``GTL_TRITON_SPLITS`` / ``FORCE_SPLITS``
    fix it.
    """
    forced = FORCE_SPLITS or int(os.environ.get("GTL_TRITON_SPLITS", 0))
    if forced:
        return max(1, min(forced, n_blocks))
    if interpreted(device):
        return 1
    target = 2 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return max(1, min(n_blocks, target // max(n_rows, 1)))


def topk_splits(n_rows: int, n_blocks: int, k_pad: int, device: torch.device) -> int:
    """Programs per row of a top-k scan: ``num_splits``, at most ``TOPK_MERGE_KEYS // k_pad`` so that the merge of
    the split buffers (``SPLITS_PAD * K_PAD`` keys, ``k_pad`` a power of two) fits in registers."""
    return min(num_splits(n_rows, n_blocks, device), max(1, TOPK_MERGE_KEYS // k_pad))
