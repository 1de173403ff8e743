"""``masked_transition``: copy, stay-masked rate, the revealed token's law, rows that must not be read."""

import math

import numpy as np
import pytest
import torch
from helpers import ALPHA, chi_square_pvalue, oracle_probs, random_logits
from scipy import stats

import gtl_kernels

MASK = 9


def _step(backend, x_t, logits, **kwargs):
    kwargs.setdefault("seeds", torch.arange(x_t.numel(), dtype=torch.int64, device=backend.device).view(x_t.shape))
    return gtl_kernels.masked_transition(x_t, logits, mask_id=MASK, backend=backend.name, **kwargs)


def test_unmasked_positions_are_copied_and_not_read(backend):
    """Unmasked rows hold NaN logits (an invalid row if read): they must come back unchanged, never -1."""
    n, v = 300, 40
    logits = random_logits(n, v, torch.float32, backend.device, seed=1)
    x_t = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(1)).to(backend.device)
    x_t[::3] = MASK
    logits[x_t != MASK] = math.nan
    out = _step(backend, x_t, logits, stay_prob=0.25)
    unmasked = x_t != MASK
    assert torch.equal(out[unmasked], x_t[unmasked])
    revealed = (~unmasked) & (out != MASK)
    assert ((out[revealed] >= 0) & (out[revealed] < v)).all()


def test_stay_rate_and_token_law(backend):
    """Masked positions stay with probability stay_prob (binomial test) and reveal tokens from the guided
    distribution without the mask token (chi-square)."""
    n, v = (3_000 if backend.interpreted else 60_000), 30
    row = random_logits(1, v, torch.float32, backend.device, scale=2.0, seed=2)
    row[0, MASK] = row.max() + 3.0  # the mask token must never be drawn, however likely its logit
    bias_row = random_logits(1, v, torch.float32, backend.device, scale=1.0, seed=3)
    x_t = torch.full((n,), MASK, device=backend.device)
    out = _step(backend, x_t, row.expand(n, v), bias=bias_row.expand(n, v), gamma=1.5, stay_prob=0.3)
    stayed = int((out == MASK).sum())
    assert stats.binomtest(stayed, n, 0.3).pvalue > ALPHA
    tokens = out[out != MASK].cpu().numpy()
    probs = oracle_probs(row, bias_row, gamma=1.5, exclude=MASK)[0]
    assert chi_square_pvalue(np.bincount(tokens, minlength=v), probs) > ALPHA


def test_stay_decision_is_independent_of_the_token(backend):
    """The same keys with stay_prob 0 reveal exactly the tokens that stay_prob p reveals where it reveals."""
    n, v = 500, 1500
    logits = random_logits(n, v, torch.float32, backend.device, seed=4)
    x_t = torch.full((n,), MASK, device=backend.device)
    always = _step(backend, x_t, logits, stay_prob=0.0, offset=5)
    some = _step(backend, x_t, logits, stay_prob=0.6, offset=5)
    revealed = some != MASK
    assert torch.equal(some[revealed], always[revealed])
    assert (always != MASK).all()
    assert (_step(backend, x_t, logits, stay_prob=1.0, offset=5) == MASK).all()


def test_staying_rows_are_not_read(backend):
    n, v = 200, 50
    logits = torch.full((n, v), math.nan, device=backend.device)
    x_t = torch.full((n,), MASK, device=backend.device)
    assert (_step(backend, x_t, logits, stay_prob=1.0) == MASK).all()


def test_matches_sample_without_mask_token(backend):
    """A revealed token is the ``sample`` draw with the mask token's score set to -inf (same key and offset)."""
    n, v = 400, 2100
    logits = random_logits(n, v, torch.bfloat16, backend.device, scale=1.0, seed=5)
    keys = torch.arange(n, dtype=torch.int64, device=backend.device) + 1000
    x_t = torch.full((n,), MASK, device=backend.device)
    out = _step(backend, x_t, logits, stay_prob=0.0, seeds=keys, offset=2, top_k=50, temperature=0.9)
    masked_logits = logits.clone()
    masked_logits[:, MASK] = -math.inf
    ref = gtl_kernels.sample(masked_logits, temperature=0.9, top_k=50, seeds=keys, offset=2, backend=backend.name)
    assert torch.equal(out, ref)


def test_greedy_never_picks_the_mask(backend):
    logits = random_logits(20, 100, torch.float32, backend.device, seed=6)
    logits[:, MASK] = 100.0
    x_t = torch.full((20,), MASK, device=backend.device)
    out = _step(backend, x_t, logits, stay_prob=0.0, temperature=0.0)
    masked_logits = logits.clone()
    masked_logits[:, MASK] = -math.inf
    assert torch.equal(out, masked_logits.argmax(-1))


def test_invalid_revealing_rows(backend):
    """A row that must reveal but has nothing allowed (only the mask is finite) or a NaN gives -1."""
    logits = random_logits(4, 64, torch.float32, backend.device, seed=7)
    logits[1] = -math.inf
    logits[1, MASK] = 0.0
    logits[2, 3] = math.nan
    x_t = torch.full((4,), MASK, device=backend.device)
    out = _step(backend, x_t, logits, stay_prob=0.0)
    assert out[1] == -1 and out[2] == -1 and (out[[0, 3]] >= 0).all()


def test_3d_per_row_stay_prob(backend):
    b, l, v = 4, 6, 80
    logits = random_logits(b * l, v, torch.float16, backend.device, seed=8).view(b, l, v)
    x_t = torch.full((b, l), MASK, device=backend.device)
    x_t[:, ::2] = 1
    stay = torch.tensor([0.0, 1.0, 0.0, 1.0], device=backend.device)  # per sequence
    out = gtl_kernels.masked_transition(
        x_t, logits, stay_prob=stay, mask_id=MASK, seeds=torch.arange(b, device=backend.device), backend=backend.name
    )
    assert out.shape == (b, l)
    assert (out[:, ::2] == 1).all()
    assert (out[[1, 3]][:, 1::2] == MASK).all() and (out[[0, 2]][:, 1::2] != MASK).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_backend_identity(backend, dtype):
    if backend.name == "torch":
        pytest.skip("the reference itself")
    n, v = (64, 2000) if backend.interpreted else (2000, 4000)
    logits = random_logits(n, v, dtype, backend.device, scale=2.0, seed=9)
    x_t = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(9)).to(backend.device)
    x_t[: n // 2] = MASK
    kwargs = dict(stay_prob=0.4, mask_id=MASK, seeds=3, offset=11)
    out = gtl_kernels.masked_transition(x_t, logits, backend=backend.name, **kwargs)
    ref = gtl_kernels.masked_transition(x_t, logits, backend="torch", **kwargs)
    assert (out != ref).sum() <= max(1, n // 10_000)


# ---------------------------------------------------------------------------------------------------------------------
# The candidate (sparse) path: index holds the token ids of the columns
# ---------------------------------------------------------------------------------------------------------------------


def _candidates(n, k, v, device, seed):
    """Distinct candidate ids per row (a random subset of the vocabulary), the mask token among them in some rows."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(v, generator=gen)[:k] for _ in range(n)])
    return ids.to(device)


def test_candidate_path_equals_the_dense_step_it_stands_for(backend):
    """index path == sample(index) with the mask candidates' scores set to -inf, where the position reveals; copies
    and stays as the dense path does (same keys and offset)."""
    n, k, v = 300, 40, 5000
    logits = random_logits(n, k, torch.float32, backend.device, seed=11)
    bias = random_logits(n, k, torch.bfloat16, backend.device, scale=1.0, seed=12)
    index = _candidates(n, k, v, backend.device, seed=13)
    index[::4, 7] = MASK
    logits[::4, 7] = 50.0  # the mask candidate would win if it were allowed
    x_t = torch.full((n,), MASK, device=backend.device)
    x_t[::5] = 123
    keys = torch.arange(n, dtype=torch.int64, device=backend.device) * 7 + 1
    kw = dict(gamma=0.7, temperature=0.9, seeds=keys, offset=4)
    out = gtl_kernels.masked_transition(x_t, logits, bias, stay_prob=0.3, mask_id=MASK, index=index,
                                        backend=backend.name, **kw)
    allowed = logits.masked_fill(index == MASK, -math.inf)
    drawn = gtl_kernels.sample(allowed, bias, index=index, backend=backend.name, **kw)
    always = gtl_kernels.masked_transition(x_t, logits, bias, stay_prob=0.0, mask_id=MASK, index=index,
                                           backend=backend.name, **kw)
    copied = x_t != MASK
    assert torch.equal(out[copied], x_t[copied]) and torch.equal(always[copied], x_t[copied])
    revealed = ~copied & (out != MASK)
    assert torch.equal(out[revealed], drawn[revealed])
    assert torch.equal(always[~copied], drawn[~copied])
    assert 0 < int(revealed.sum()) < int((~copied).sum())


def test_candidate_path_token_law(backend):
    """Revealed tokens follow softmax(logits + gamma * bias) over the candidates that are not the mask (chi-square,
    false-failure rate ALPHA = 1e-6), with duplicate ids in the candidate list adding their masses."""
    n = 3_000 if backend.interpreted else 40_000
    k = 12
    row = random_logits(1, k, torch.float32, backend.device, scale=1.5, seed=14)
    bias_row = random_logits(1, k, torch.float32, backend.device, scale=1.0, seed=15)
    ids = torch.tensor([[3, 17, MASK, 4, 3, 30, 31, 8, 2, 17, 11, 0]], device=backend.device)
    x_t = torch.full((n,), MASK, device=backend.device)
    out = gtl_kernels.masked_transition(x_t, row.expand(n, k), bias_row.expand(n, k), 1.3, stay_prob=0.0,
                                        mask_id=MASK, index=ids.expand(n, k), seeds=5, backend=backend.name)
    col_probs = oracle_probs(row, bias_row, gamma=1.3, exclude=2)[0]  # column 2 holds the mask id
    probs = np.zeros(32)
    np.add.at(probs, ids[0].cpu().numpy(), col_probs)
    counts = np.bincount(out.cpu().numpy(), minlength=32)
    assert counts[MASK] == 0
    support = probs > 0
    assert counts[~support].sum() == 0
    assert chi_square_pvalue(counts[support], probs[support]) > ALPHA


def test_candidate_path_mask_id_beyond_the_columns(backend):
    """With index, mask_id is a token id of the full vocabulary: it may exceed the number of columns."""
    n, k, mask = 50, 8, 30521
    logits = random_logits(n, k, torch.float32, backend.device, seed=16)
    index = _candidates(n, k, 30522, backend.device, seed=17)
    x_t = torch.full((n,), mask, device=backend.device)
    out = gtl_kernels.masked_transition(x_t, logits, stay_prob=0.0, mask_id=mask, index=index, seeds=1,
                                        backend=backend.name)
    assert (out.unsqueeze(1) == index).any(1).all()
    with pytest.raises(ValueError, match="mask_id"):
        gtl_kernels.masked_transition(x_t, logits, stay_prob=0.0, mask_id=mask, seeds=1, backend=backend.name)


@pytest.mark.parametrize("top_k", [0, 5, 1100])
def test_candidate_path_cross_backend_identity(backend, top_k):
    """Every path of the draw on the candidate path (the plain race, the top-k buffer, top_k above the Triton
    buffer's 1024, greedy rows) equals the reference: the mask id in several columns (duplicates included), column
    ``mask_id`` itself an ordinary candidate, a row whose only finite candidate is the mask (-1), copied rows, an
    index with a row stride wider than its rows."""
    if backend.name == "torch":
        pytest.skip("the reference itself")
    n, k, mask = (24 if backend.interpreted else 600), 1200, 40_000
    logits = random_logits(n, k, torch.float32, backend.device, scale=2.0, seed=18)
    bias = random_logits(n, k, torch.bfloat16, backend.device, scale=1.0, seed=19)
    wide = _candidates(n, k + 7, 50_000, backend.device, seed=20)
    index = wide[:, 3 : k + 3]  # row stride k + 7
    index[::3, [5, 900]] = mask
    logits[::3, [5, 900]] = 60.0  # the mask candidates would win if allowed
    index[1::3, 17] = 3  # a real token at column 3's id: duplicates keep their own noise
    logits[2] = -math.inf
    index[2, 11] = mask
    logits[2, 11] = 0.0  # only the mask is finite: nothing allowed
    x_t = torch.full((n,), mask, device=backend.device)
    x_t[4::6] = 77
    temperature = torch.full((n,), 0.8, device=backend.device)
    temperature[5::4] = 0.0  # greedy rows
    stay = torch.full((n,), 0.2, device=backend.device)
    stay[2] = 0.0
    kw = dict(gamma=0.6, temperature=temperature, top_k=top_k, stay_prob=stay, mask_id=mask, index=index, seeds=21,
              offset=3)
    out = gtl_kernels.masked_transition(x_t, logits, bias, backend=backend.name, **kw)
    ref = gtl_kernels.masked_transition(x_t, logits, bias, backend="torch", **kw)
    assert out[2] == -1 and ref[2] == -1
    revealed = (x_t == mask) & (out != mask) & (out >= 0)
    assert int(revealed.sum()) > n // 3 and (out[revealed].unsqueeze(1) == index[revealed]).any(1).all()
    assert (out != ref).sum() <= max(1, n // 10_000)
