"""Tests specific to the Triton backend (docs/TRITON_BACKEND.md): generator bit identity, the exponential's accuracy,
split invariance, strides, the large-k paths, registration, and compilation for the GPU without a GPU.

On a machine without CUDA the kernels run under the Triton interpreter (``conftest.py`` sets ``TRITON_INTERPRET``).
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gtl_kernels
from gtl_kernels import _library, reference

triton = pytest.importorskip("triton")
if not gtl_kernels.available_backends()["triton"].available:
    pytest.skip("backend triton is not available", allow_module_level=True)

import triton.language as tl  # noqa: E402

from gtl_kernels.triton import _common  # noqa: E402
from gtl_kernels.triton._bitonic import merge_runs_desc, topk_desc  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
INF, NAN = math.inf, math.nan


def _inputs(n, v, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, v, generator=g, dtype=torch.float64) * 3).to(dtype)
    bias = torch.randn(n, v, generator=g)
    gamma = torch.rand(n, generator=g) + 0.25
    temperature = torch.rand(n, generator=g) + 0.5
    seeds = torch.randint(-(2**62), 2**62, (n,), generator=g)
    to = lambda t: t.to(DEVICE)  # noqa: E731
    return to(logits), to(bias), to(gamma), to(temperature), to(seeds), torch.tensor(77, device=DEVICE)


@pytest.fixture
def forced_split(request):
    """Run with a small block and a given number of programs per row, then restore the defaults."""

    def set_(block, splits):
        _common.FORCE_BLOCK, _common.FORCE_SPLITS = block, splits

    yield set_
    _common.FORCE_BLOCK, _common.FORCE_SPLITS = None, None


# ---------------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------------


def test_schemas_are_the_contract():
    for op, schema in _library.SCHEMAS.items():
        assert str(getattr(torch.ops.gtl, op + "_triton").default._schema) == f"gtl::{op}_triton{schema}"


def test_import_error_names_triton_when_missing():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "try:\n    import gtl_kernels.triton\nexcept ImportError as e:\n    print('IMPORT-ERROR', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "IMPORT-ERROR" in out.stdout and "triton" in out.stdout, out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Randomness (KERNEL_SPEC §3)
# ---------------------------------------------------------------------------------------------------------------------


def test_philox_bit_identical_to_reference():
    g = torch.Generator().manual_seed(1)
    key = torch.randint(-(2**63), 2**63 - 1, (2048,), generator=g)
    counter = torch.randint(0, 2**32, (2048, 4), generator=g)
    key[:4] = torch.tensor([0, -1, 2**32 - 1, -(2**63)])
    counter[:4] = torch.tensor([[0, 0, 0, 0], [2**32 - 1] * 4, [1, 2, 3, 4], [2**32 - 1, 0, 2**32 - 1, 0]])
    got = torch.ops.gtl.philox_triton(key.to(DEVICE), counter.to(DEVICE)).cpu()
    assert torch.equal(got, reference.philox4x32(key, counter))
    # broadcasting a scalar key, as the reference does
    got = torch.ops.gtl.philox_triton(key[5].to(DEVICE), counter.to(DEVICE)).cpu()
    assert torch.equal(got, reference.philox4x32(key[5], counter))


@triton.jit
def _row_reduce_probe(x_ptr, col_ptr, out_f_ptr, out_i_ptr, R: tl.constexpr, C: tl.constexpr):
    """Each row reduction both ways: through the combine functions (``tl.reduce``) and through the row helpers,
    which take the built-in reductions under the interpreter (there the two forms meet) and the combines when
    compiled."""
    r = tl.arange(0, R)[:, None]
    c = tl.arange(0, C)[None, :]
    x = tl.load(x_ptr + r * C + c)
    col = tl.load(col_ptr + r * C + c)
    score = x * 0.5 - 1.0
    m1, s1 = tl.reduce((x, (x > float("-inf")).to(tl.float32)), 1, _common.max_sum_exp)
    k1, w1, ws1 = tl.reduce((x, col, score), 1, _common.argmax_with_score)
    m2, s2 = _common.row_max_sum_exp(x)
    k2, w2, ws2 = _common.row_argmax_with_score(x, col, score)
    i = tl.arange(0, R)
    tl.store(out_f_ptr + i * 8 + 0, m1)
    tl.store(out_f_ptr + i * 8 + 1, s1)
    tl.store(out_f_ptr + i * 8 + 2, k1)
    tl.store(out_f_ptr + i * 8 + 3, ws1)
    tl.store(out_f_ptr + i * 8 + 4, m2)
    tl.store(out_f_ptr + i * 8 + 5, s2)
    tl.store(out_f_ptr + i * 8 + 6, k2)
    tl.store(out_f_ptr + i * 8 + 7, ws2)
    tl.store(out_i_ptr + i * 2 + 0, w1)
    tl.store(out_i_ptr + i * 2 + 1, w2)


def test_one_pass_row_reductions_equal_the_built_in_ones():
    """The one-pass combines (compiled kernels) and the built-in reductions (interpreter) agree, with ties broken
    toward the lower column and empty rows giving (-inf, 0), and both match float64."""
    g = torch.Generator().manual_seed(5)
    r, c = 8, 32
    x = torch.randn(r, c, generator=g) * 4
    x[1, [3, 17, 29]] = x[1].max() + 1.0  # a three-way tie: the lowest of their column ids wins
    x[2] = -INF  # an empty row
    x[3, ::2] = -INF
    x[4, 5] = 80.0  # far above the rest
    col = torch.randperm(c, generator=g).to(torch.int32).expand(r, c).contiguous()
    out_f = torch.full((r, 8), NAN)
    out_i = torch.full((r, 2), -7, dtype=torch.int32)
    x_d, col_d, out_f, out_i = x.to(DEVICE), col.to(DEVICE), out_f.to(DEVICE), out_i.to(DEVICE)
    _row_reduce_probe[(1,)](x_d, col_d, out_f, out_i, R=r, C=c)
    out_f, out_i = out_f.cpu(), out_i.cpu()
    one, two = out_f[:, :4], out_f[:, 4:]
    torch.testing.assert_close(one, two, rtol=1e-6, atol=0, equal_nan=True)
    assert torch.equal(out_i[:, 0], out_i[:, 1])
    x64 = x.double()
    lse = torch.logsumexp(x64, 1)
    got_lse = out_f[:, 0].double() + out_f[:, 1].double().log()
    torch.testing.assert_close(got_lse, lse, rtol=1e-6, atol=0)
    best = x64.max(1).values
    winners = torch.where(x64 == best[:, None], col.long(), 2**31 - 1).min(1).values
    assert torch.equal(out_i[:, 0].long(), winners)
    assert out_i[1, 0] == min(col[1, 3], col[1, 17], col[1, 29])
    won_col = (col.long() == winners[:, None]).float().argmax(1)
    torch.testing.assert_close(out_f[:, 3], (x * 0.5 - 1.0).gather(1, won_col[:, None])[:, 0])
    assert out_f[2, 0] == -INF and out_f[2, 1] == 0


@triton.jit
def _merge_probe(x_ptr, out_ptr, R: tl.constexpr, S: tl.constexpr, K: tl.constexpr, RUNS: tl.constexpr):
    r = tl.arange(0, R)[:, None]
    c = tl.arange(0, S * K)[None, :]
    x = tl.load(x_ptr + r * (S * K) + c)
    best = merge_runs_desc(x, K) if RUNS else topk_desc(x, K)
    tl.store(out_ptr + r * K + tl.arange(0, K)[None, :], best)


@pytest.mark.parametrize("s,k", [(1, 16), (2, 16), (8, 16), (4, 64), (16, 4)])
def test_merge_of_sorted_runs_is_the_top_k(s, k):
    """``_bitonic.merge_runs_desc`` (the fold of sorted split buffers) gives the ``k`` largest keys of ``s`` runs of
    ``k`` sorted ascending, descending: equal to ``torch.topk`` and to ``topk_desc`` on the same unsorted keys. Runs
    of unequal content: one holds the largest keys, one is all padding (as a padded split is), ties across runs."""
    g = torch.Generator().manual_seed(11 + s * k)
    r = 2
    keys = torch.randint(-(2**40), 2**40, (r, s, k), generator=g)
    keys[0, 0] = torch.arange(k) + 2**41  # row 0: every winner in its first run
    keys[1, -1] = torch.iinfo(torch.int64).min  # row 1: its last run is padding
    keys[1, 0, : k // 2] = 12345  # equal keys, in the first run and, for s > 1, in another
    if s > 1:
        keys[1, 1, : k // 2] = 12345
    runs = keys.sort(dim=-1).values.reshape(r, s * k)
    want = runs.topk(k, dim=1).values  # sorted descending
    for use_runs, x in ((True, runs), (False, runs[:, torch.randperm(s * k, generator=g)].contiguous())):
        out = torch.full((r, k), -7, dtype=torch.int64, device=DEVICE)
        _merge_probe[(1,)](x.to(DEVICE), out, R=r, S=s, K=k, RUNS=use_runs)
        assert torch.equal(out.cpu(), want), use_runs


@triton.jit
def _exponential_probe(w0_ptr, w1_ptr, out_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    w0 = tl.load(w0_ptr + i).to(tl.uint32)
    w1 = tl.load(w1_ptr + i).to(tl.uint32)
    tl.store(out_ptr + i, _common.exponential64(w0, w1))


def test_exponential64_relative_error_over_the_whole_range():
    words = [(0, 0), (0, 1), (0, 2**32 - 1), (1, 0), (2**31 - 1, 2**32 - 1), (2**31, 0), (2**31, 1),
             (3 * 2**30, 5), (2**32 - 1, 2**32 - 1), (2**32 - 1, 2**32 - 4096), (2**32 - 4096, 0), (2**30, 7)]
    g = torch.Generator().manual_seed(2)
    rnd = torch.randint(0, 2**32, (4096 - len(words), 2), generator=g)
    w = torch.cat([torch.tensor(words), rnd])
    out = torch.empty(len(w), dtype=torch.float32, device=DEVICE)
    with _common.quiet(DEVICE):
        _exponential_probe[(1,)](w[:, 0].contiguous().to(DEVICE), w[:, 1].contiguous().to(DEVICE), out, N=len(w))
    # float64 reference (reference.exponential64's formula on the same words)
    x = w[:, 0].double() * 2.0**32 + w[:, 1].double() + 0.5
    xc = (2**32 - 1 - w[:, 0]).double() * 2.0**32 + (2**32 - 1 - w[:, 1]).double() + 0.5
    exact = torch.where(w[:, 0] < 2**31, 64 * math.log(2) - torch.log(x), -torch.log1p(-xc * 2.0**-64))
    rel = ((out.cpu().double() - exact) / exact).abs()
    assert rel.max().item() < 1e-6, (rel.max().item(), w[rel.argmax()].tolist())
    assert out.min().item() > 0 and out.max().item() < 45.06


# ---------------------------------------------------------------------------------------------------------------------
# Invariance to the split of a row and to strides
# ---------------------------------------------------------------------------------------------------------------------


def _all_ops(logits, bias, gamma, temperature, seeds, offset):
    n, v = logits.shape
    x_t = torch.full((n,), 3, dtype=torch.int64, device=DEVICE)
    x_t[1] = 5
    stay = torch.full((n,), 0.2, device=DEVICE)
    # candidate path: ids that are not the columns, the mask id (3) in a few columns, its highest-scoring one included
    index = torch.arange(v, 0, -1, device=DEVICE).expand(n, v).clone() + 100
    index[:, 5::700] = 3
    index[torch.arange(n, device=DEVICE), logits.float().nan_to_num(-INF).argmax(1)] = 3
    out = {
        "lsm": torch.ops.gtl.guided_log_softmax_triton(logits, bias, gamma, temperature),
        "sample": torch.ops.gtl.sample_triton(logits, bias, gamma, temperature, 0, seeds, offset, None),
        "sample_k": torch.ops.gtl.sample_triton(logits, bias, gamma, temperature, 7, seeds, offset, None),
        "masked": torch.ops.gtl.masked_transition_triton(x_t, logits, bias, gamma, temperature, 0, stay, 3, seeds,
                                                         offset),
        "masked_index": torch.ops.gtl.masked_transition_triton(x_t, logits, bias, gamma, temperature, 0, stay, 3,
                                                               seeds, offset, index),
        "masked_index_k": torch.ops.gtl.masked_transition_triton(x_t, logits, bias, gamma, temperature, 7, stay, 3,
                                                                 seeds, offset, index),
        "topk": torch.ops.gtl.topk_log_softmax_triton(logits, 5, bias, gamma, temperature),
    }
    for kind in ("max_prob", "margin", "neg_entropy"):
        out[kind] = torch.ops.gtl.confidence_triton(logits, bias, gamma, temperature, kind)
    return out


def _assert_same(a, b):
    for key in a:
        x, y = (a[key], b[key]) if isinstance(a[key], tuple) else ((a[key],), (b[key],))
        for p, q in zip(x, y):
            assert torch.equal(p.nan_to_num(-1.5), q.nan_to_num(-1.5)), key


def test_results_do_not_depend_on_the_split(forced_split):
    logits, bias, gamma, temperature, seeds, offset = _inputs(4, 3500)
    logits[1, 3400] = INF  # +inf in the last block
    temperature[2] = 0.0  # greedy
    forced_split(1024, 1)
    one = _all_ops(logits, bias, gamma, temperature, seeds, offset)
    for splits in (3,):
        forced_split(1024, splits)
        _assert_same(one, _all_ops(logits, bias, gamma, temperature, seeds, offset))


def test_rows_do_not_depend_on_the_batch():
    logits, bias, gamma, temperature, seeds, offset = _inputs(6, 3000, torch.bfloat16)
    full = _all_ops(logits, bias, gamma, temperature, seeds, offset)
    perm = torch.tensor([4, 2, 5, 1, 0, 3], device=DEVICE)  # row 1 lands at position 3 (masked rows stay masked)
    shuffled = _all_ops(logits[perm], bias[perm], gamma[perm], temperature[perm], seeds[perm], offset)
    inv = torch.argsort(perm)
    for key in full:
        if key.startswith("masked"):
            continue  # x_t and the candidates' mask columns are positional in _all_ops
        x, y = (full[key], shuffled[key]) if isinstance(full[key], tuple) else ((full[key],), (shuffled[key],))
        for p, q in zip(x, y):
            assert torch.equal(p.nan_to_num(-1.5), q[inv].nan_to_num(-1.5)), key


def test_row_stride_larger_than_vocabulary():
    logits, bias, gamma, temperature, seeds, offset = _inputs(5, 1500, torch.float16)
    wide_l = torch.full((5, 1600), NAN, dtype=logits.dtype, device=DEVICE)
    wide_b = torch.full((5, 2048), NAN, dtype=bias.dtype, device=DEVICE)
    wide_l[:, 50:1550] = logits
    wide_b[:, :1500] = bias
    padded_l, padded_b = wide_l[:, 50:1550], wide_b[:, :1500]
    assert padded_l.stride(0) == 1600 and padded_b.stride(0) == 2048
    _assert_same(_all_ops(logits, bias, gamma, temperature, seeds, offset),
                 _all_ops(padded_l, padded_b, gamma, temperature, seeds, offset))


def test_gamma_zero_never_reads_the_bias():
    logits, bias, gamma, temperature, seeds, offset = _inputs(3, 2000)
    gamma.zero_()
    bad_bias = torch.full_like(bias, NAN)
    _assert_same(_all_ops(logits, None, gamma, temperature, seeds, offset),
                 _all_ops(logits, bad_bias, gamma, temperature, seeds, offset))


# ---------------------------------------------------------------------------------------------------------------------
# Paths the shared suite reaches only with large shapes
# ---------------------------------------------------------------------------------------------------------------------


def test_top_k_above_the_buffer_matches_the_reference():
    logits, bias, gamma, temperature, seeds, offset = _inputs(3, 3000)
    logits[0, 17] = NAN
    temperature[1] = 0.0
    k = _common.K_MAX + 300
    got, got_lp = torch.ops.gtl.sample_triton(logits, bias, gamma, temperature, k, seeds, offset, None)
    want, want_lp = reference.sample(logits.cpu(), bias.cpu(), gamma.cpu(), temperature.cpu(), k, seeds.cpu(),
                                     offset.cpu())
    assert torch.equal(got.cpu(), want)
    torch.testing.assert_close(got_lp.cpu(), want_lp, atol=2e-5, rtol=1e-5, equal_nan=True)  # NaN, 0 (greedy), lp
    vals, ids = torch.ops.gtl.topk_log_softmax_triton(logits, k, bias, gamma, temperature)
    rv, ri = reference.topk_log_softmax(logits.cpu(), k, bias.cpu(), gamma.cpu(), temperature.cpu())
    assert torch.equal(ids.cpu()[1:], ri[1:]) and (ids[0] == -1).all()
    torch.testing.assert_close(vals.cpu(), rv, atol=2e-5, rtol=2e-5, equal_nan=True)


def test_point_set_rows_list_the_rest_in_id_order():
    v = 3000
    logits = torch.randn(2, v, device=DEVICE)
    logits[0, [2500, 7, 1200]] = INF  # three +inf tokens
    ones, zero_t = torch.ones(2, device=DEVICE), torch.tensor([1.0, 0.0], device=DEVICE)
    vals, ids = torch.ops.gtl.topk_log_softmax_triton(logits, 6, None, ones, zero_t)
    assert ids[0].tolist() == [7, 1200, 2500, 0, 1, 2]
    torch.testing.assert_close(vals[0, :3].cpu(), torch.full((3,), -math.log(3)))
    assert torch.isinf(vals[0, 3:]).all() and torch.isinf(vals[1, 1:]).all() and vals[1, 0].item() == 0
    g = int(logits[1].argmax())
    assert ids[1].tolist() == [g] + [i for i in range(6) if i != g][:5]
