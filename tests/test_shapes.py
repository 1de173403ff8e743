"""Shapes of KERNEL_SPEC §7: vocabulary sizes, batch sizes, 2-D/3-D, non-contiguous inputs, 64-bit offsets."""

import pytest
import torch
from helpers import random_logits

import gtl_kernels

VOCABS = [1, 7, 30522, 50257, 128256]


def _rows_for(backend, v):
    if backend.interpreted:
        return [0, 1, 3]
    return [0, 1, 3, 257] if v < 50_000 else [0, 1, 3, 64]


@pytest.mark.parametrize("v", VOCABS)
def test_all_ops_on_every_shape(backend, v):
    """Every op runs on every (N, V), returns the documented shapes and agrees with the reference."""
    if backend.interpreted and v > 30522:
        pytest.skip("the interpreter covers the largest rows in test_large_rows_interpreted")
    for n in _rows_for(backend, v):
        logits = random_logits(n, v, torch.bfloat16, backend.device, seed=n + v)
        bias = random_logits(n, v, torch.float32, backend.device, seed=n + v + 1)
        kw = dict(bias=bias, gamma=0.5, backend=backend.name)
        tokens = gtl_kernels.sample(logits, seeds=3, **kw)
        assert tokens.shape == (n,) and ((tokens >= 0) & (tokens < v)).all()
        logp = gtl_kernels.guided_log_softmax(logits, **kw)
        assert logp.shape == (n, v)
        k = min(v, 5)
        values, ids = gtl_kernels.topk_log_softmax(logits, k, **kw)
        assert values.shape == ids.shape == (n, k)
        argmax, score = gtl_kernels.confidence(logits, kind="neg_entropy", **kw)
        assert argmax.shape == score.shape == (n,)
        if backend.name != "torch":  # the reference agrees with itself: compare other backends to it
            ref = dict(bias=bias, gamma=0.5, backend="torch")
            assert (tokens != gtl_kernels.sample(logits, seeds=3, **ref)).sum() <= n // 100  # near-ties only
            torch.testing.assert_close(logp, gtl_kernels.guided_log_softmax(logits, **ref), atol=5e-5, rtol=5e-6)
            torch.testing.assert_close(ids, gtl_kernels.topk_log_softmax(logits, k, **ref)[1])
            assert torch.equal(argmax, gtl_kernels.confidence(logits, kind="neg_entropy", **ref)[0])


def test_large_rows_interpreted(backend):
    if not backend.interpreted:
        pytest.skip("covered by test_all_ops_on_every_shape")
    logits = random_logits(2, 128256, torch.bfloat16, backend.device, seed=1)
    tokens = gtl_kernels.sample(logits, seeds=5, backend=backend.name)
    assert torch.equal(tokens, gtl_kernels.sample(logits, seeds=5, backend="torch"))


def test_3d_matches_2d_for_every_op(backend):
    b, l, v = 2, 3, 1500
    logits = random_logits(b * l, v, torch.float16, backend.device, seed=2)
    cube = logits.view(b, l, v)
    kw = dict(backend=backend.name)
    assert torch.equal(gtl_kernels.guided_log_softmax(cube, **kw).view(-1, v), gtl_kernels.guided_log_softmax(logits, **kw))
    v3, i3 = gtl_kernels.topk_log_softmax(cube, 4, **kw)
    v2, i2 = gtl_kernels.topk_log_softmax(logits, 4, **kw)
    assert v3.shape == (b, l, 4) and torch.equal(i3.view(-1, 4), i2) and torch.equal(v3.view(-1, 4), v2)
    a3, s3 = gtl_kernels.confidence(cube, kind="margin", **kw)
    a2, s2 = gtl_kernels.confidence(logits, kind="margin", **kw)
    assert a3.shape == (b, l) and torch.equal(a3.view(-1), a2) and torch.equal(s3.view(-1), s2)


def test_non_contiguous_inputs(backend):
    """Transposed, strided and sliced inputs give the results of their contiguous copies."""
    base = random_logits(600, 64, torch.float32, backend.device, seed=3)
    logits = base.t()  # [64, 600], column-major
    bias = random_logits(64, 1200, torch.float32, backend.device, seed=4)[:, ::2]  # stride 2 along V
    gamma = torch.rand(128, device=backend.device)[::2]
    x_t = torch.full((64, 2), 5, device=backend.device)[:, 0]
    kw = dict(gamma=gamma, backend=backend.name)
    assert torch.equal(
        gtl_kernels.sample(logits, bias, seeds=1, top_k=9, **kw),
        gtl_kernels.sample(logits.contiguous(), bias.contiguous(), seeds=1, top_k=9, **kw),
    )
    assert torch.equal(
        gtl_kernels.masked_transition(x_t, logits, bias, stay_prob=0.5, mask_id=5, seeds=2, **kw),
        gtl_kernels.masked_transition(x_t.contiguous(), logits.contiguous(), bias.contiguous(), stay_prob=0.5, mask_id=5, seeds=2, **kw),
    )
    assert torch.equal(
        gtl_kernels.guided_log_softmax(logits, bias, **kw),
        gtl_kernels.guided_log_softmax(logits.contiguous(), bias.contiguous(), **kw),
    )


def test_large_offsets_and_seeds(backend):
    """The 64-bit offset and key words are all used: offsets 2**32 apart and keys 2**32 apart draw differently."""
    logits = random_logits(200, 1000, torch.float32, backend.device, scale=0.01, seed=5)
    a = gtl_kernels.sample(logits, seeds=1, offset=5, backend=backend.name)
    b = gtl_kernels.sample(logits, seeds=1, offset=5 + 2**32, backend=backend.name)
    c = gtl_kernels.sample(logits, seeds=1, offset=2**64 - 1, backend=backend.name)
    assert (a != b).float().mean() > 0.9 and (a != c).float().mean() > 0.9
    ref = gtl_kernels.sample(logits, seeds=1, offset=2**64 - 1, backend="torch")
    assert torch.equal(c, ref)
    dev_offset = torch.tensor(5 + 2**32, device=backend.device)
    assert torch.equal(gtl_kernels.sample(logits, seeds=1, offset=dev_offset, backend=backend.name), b)


@pytest.mark.slow
def test_more_than_2_to_31_elements(backend):
    """N * V >= 2**31: 64-bit offsets everywhere (the last rows are right)."""
    if backend.name == "torch" or backend.interpreted:
        pytest.skip("too large for the float64 reference and the interpreter")
    n, v, period = 16_800, 128256, 61  # 2.15e9 bf16 elements = 4.3 GB
    # The rows cycle through 61 random rows (a prime, so a row offset wrapped at 32 bits lands on another row's data
    # or mid-row): copying them costs a tenth of drawing 2e9 normals, and every row is still random.
    block = random_logits(period, v, torch.bfloat16, backend.device, seed=31)
    logits = torch.empty(n, v, dtype=torch.bfloat16, device=backend.device)
    for start in range(0, n, period):
        rows = logits[start:start + period]
        rows.copy_(block[: rows.shape[0]])
    tail = logits[-4:]
    tokens = gtl_kernels.sample(logits, temperature=0.0, seeds=1, backend=backend.name)
    assert torch.equal(tokens[-4:], tail.float().argmax(-1))
    keys = gtl_kernels.derive_keys(torch.tensor(1, device=backend.device), torch.arange(n - 4, n, device=backend.device))
    sampled = gtl_kernels.sample(logits, seeds=1, backend=backend.name)[-4:]
    assert torch.equal(sampled, gtl_kernels.sample(tail, seeds=keys, backend="torch"))
