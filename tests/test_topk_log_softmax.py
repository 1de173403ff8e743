"""``topk_log_softmax``: values and ids against float64 PyTorch, ties, invalid rows."""

import math

import pytest
import torch
from helpers import random_logits
from test_guided_log_softmax import ATOL, RTOL, _oracle

import gtl_kernels


@pytest.mark.parametrize("k", [1, 8, 512])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_float64(backend, k, dtype):
    n, v = (3, 5000) if backend.interpreted else (40, 30522)
    logits = random_logits(n, v, dtype, backend.device, scale=3.0, seed=k)
    bias = random_logits(n, v, torch.float32, backend.device, scale=1.0, seed=k + 1)
    values, ids = gtl_kernels.topk_log_softmax(logits, k, bias, gamma=0.5, temperature=1.2, backend=backend.name)
    assert values.shape == ids.shape == (n, k) and values.dtype == torch.float32 and ids.dtype == torch.int64
    logp = _oracle(logits, bias, 0.5, 1.2)
    ref_values = torch.sort(logp, dim=-1, descending=True, stable=True).values[:, :k]
    torch.testing.assert_close(values.double(), ref_values, atol=ATOL, rtol=RTOL)
    assert (values[:, 1:] <= values[:, :-1]).all(), "not sorted descending"
    # ids: distinct, and each id's own log-probability is its value (ties within rounding may swap ids)
    assert all(len(set(row)) == k for row in ids.cpu().tolist())
    torch.testing.assert_close(logp.gather(1, ids), ref_values, atol=ATOL, rtol=RTOL)


def test_ties_go_to_the_lower_id(backend):
    logits = torch.zeros(2, 3000, device=backend.device)
    logits[0, [2999, 1500, 7]] = 1.0
    values, ids = gtl_kernels.topk_log_softmax(logits, 5, backend=backend.name)
    assert ids[0].tolist() == [7, 1500, 2999, 0, 1]
    assert ids[1].tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(values[1], torch.full((5,), -math.log(3000.0), device=backend.device))


def test_fewer_finite_than_k_and_invalid_rows(backend):
    logits = random_logits(3, 100, torch.float32, backend.device, seed=1)
    logits[0, 3:] = -math.inf  # 3 finite tokens, k = 5: the rest are -inf with the lowest remaining ids
    logits[1] = math.nan
    values, ids = gtl_kernels.topk_log_softmax(logits, 5, backend=backend.name)
    assert set(ids[0, :3].tolist()) == {0, 1, 2} and ids[0, 3:].tolist() == [3, 4]
    assert (values[0, 3:] == -math.inf).all()
    assert values[1].isnan().all() and (ids[1] == -1).all()
    assert (ids[2] >= 0).all()


def test_k_equals_v_and_zero(backend):
    logits = random_logits(2, 9, torch.float32, backend.device, seed=2)
    values, ids = gtl_kernels.topk_log_softmax(logits, 9, backend=backend.name)
    assert sorted(ids[0].tolist()) == list(range(9))
    values, ids = gtl_kernels.topk_log_softmax(logits, 0, backend=backend.name)
    assert values.shape == (2, 0) and ids.shape == (2, 0)


@pytest.mark.parametrize("n", [1, 2, 48])
@pytest.mark.parametrize("k", [63, 64, 65, 700, 2500])
def test_heavy_ties_give_the_reference_ids(backend, n, k):
    """Integer logits in a narrow range: thousands of exact ties, so the candidate buffer's cuts and the final
    selection fall inside tie groups. Tied values are exactly equal in every precision and distinct ones differ by
    at least 1, so the ids must equal the reference's stable sort exactly, whatever k and however the row is split
    among threads (n = 1, 2 split rows into parts)."""
    v = 3000 if backend.interpreted else 20_000
    if backend.interpreted and (k > 700 or n > 2):
        pytest.skip("interpreter: one large k and the split rows are enough")
    g = torch.Generator().manual_seed(k * 7 + n)
    logits = torch.randint(0, 6, (n, v), generator=g).float()
    logits[:, ::97] += 20.0  # a sparse top group, ties among themselves
    logits = logits.to(backend.device)
    values, ids = gtl_kernels.topk_log_softmax(logits, k, backend=backend.name)
    logp = _oracle(logits, None, 1.0, 1.0)
    ref = torch.sort(logp, dim=-1, descending=True, stable=True)
    assert torch.equal(ids, ref.indices[:, :k])
    torch.testing.assert_close(values.double(), ref.values[:, :k], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("k", [128, 512, 700])
def test_rows_built_against_the_sampled_threshold(backend, n, k):
    """The CPU backend starts large rows (here, V = 30522, k >= 48) from a threshold read off a strided sample of
    512 tokens (docs/CPU_BACKEND.md, "Top-k"); rows built so that the sample misleads it must still come out exact:
    row 0 is high exactly at the sampled positions, row 1 is finite only there (both: fewer than k tokens above the
    threshold, so the row is scanned again; at k = 700 row 1 has fewer than k finite tokens), rows 2 and later are
    ascending in id (the worst order for a buffer without the threshold). n = 1 splits the row among threads."""
    if backend.interpreted:
        pytest.skip("interpreter: the large rows are slow, and only the CPU backend speculates")
    v = 30522
    stride = v // 512
    sampled = torch.arange(512) * stride + stride // 2
    g = torch.Generator().manual_seed(k + n)
    logits = torch.randn(max(n, 3), v, generator=g, dtype=torch.float64)
    logits[0, sampled] += 8.0
    logits[1] = -math.inf
    logits[1, sampled] = torch.randn(512, generator=g, dtype=torch.float64)
    logits[2:] = torch.sort(logits[2:], dim=-1).values
    logits = logits[:n].float().to(backend.device)
    values, ids = gtl_kernels.topk_log_softmax(logits, k, backend=backend.name)
    logp = _oracle(logits, None, 1.0, 1.0)
    ref = torch.sort(logp, dim=-1, descending=True, stable=True)
    ref_values, ref_ids = ref.values[:, :k], ref.indices[:, :k]
    torch.testing.assert_close(values.double(), ref_values, atol=ATOL, rtol=RTOL)
    # ids: distinct, each one's own log-probability is its value (neighbours equal after fp32 rounding may swap),
    # and the -inf tail is the lowest ids not chosen, in order
    assert all(len(set(row)) == k for row in ids.cpu().tolist())
    torch.testing.assert_close(logp.gather(1, ids), ref_values, atol=ATOL, rtol=RTOL)
    tail = ref_values == -math.inf
    assert torch.equal(ids[tail], ref_ids[tail])
