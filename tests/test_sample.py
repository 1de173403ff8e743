"""``sample``: exactness (chi-square, tail hits), support, determinism, batch invariance, cross-backend identity.

Statistical assertions use a fixed seed and a false-failure rate of ``helpers.ALPHA`` (1e-6) each.
"""

import math

import numpy as np
import pytest
import torch
from helpers import (
    ALPHA,
    DEEP_TAIL_DRAWS,
    DEEP_TAIL_V,
    chi_square_pvalue,
    deep_tail_row,
    draw_many,
    oracle_probs,
    poisson_interval,
    random_logits,
)

import gtl_kernels


def _draws(backend, full=60_000):
    """Draws per law check: fewer where each draw is slow (the interpreter; the float64 reference, whose law the
    compiled backends reproduce bit for bit and check with the full count)."""
    return 3_000 if backend.interpreted else min(full, 15_000) if backend.name == "torch" else full


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_chi_square_guided(backend, dtype):
    """Draws follow softmax((logits + gamma * bias) / T) over 50 tokens, in every input dtype."""
    logits = random_logits(1, 50, dtype, backend.device, scale=2.0, seed=1)
    bias = random_logits(1, 50, dtype, backend.device, scale=1.0, seed=2)
    tokens = draw_many(backend, logits, _draws(backend), bias, gamma=0.7, temperature=1.3)
    counts = np.bincount(tokens.cpu().numpy(), minlength=50)
    probs = oracle_probs(logits, bias, gamma=0.7, temperature=1.3)[0]
    assert chi_square_pvalue(counts, probs) > ALPHA


def test_chi_square_across_chunks(backend):
    """A row spanning several 1024-token chunks, mass spread over chunks: the two-level race is exact."""
    v = 2500
    logits = torch.full((1, v), -math.inf)
    hot = torch.tensor([3, 700, 1023, 1024, 1500, 2047, 2048, 2499])
    logits[0, hot] = torch.tensor([0.0, 1.0, -0.5, 0.3, 2.0, -1.0, 0.5, 1.5])
    # the reference at 5,000 draws: its two-level race is the compiled backends' bit for bit, checked with 40,000
    draws = 5_000 if backend.name == "torch" else _draws(backend, 40_000)
    tokens = draw_many(backend, logits.to(backend.device), draws)
    counts = np.bincount(tokens.cpu().numpy(), minlength=v)
    probs = oracle_probs(logits)[0]
    assert counts[probs == 0].sum() == 0
    assert chi_square_pvalue(counts[hot.numpy()], probs[hot.numpy()]) > ALPHA


def test_chi_square_top_k(backend):
    """With top_k the draws follow the renormalized top-k distribution; ties at the k-th score go to lower ids."""
    logits = random_logits(1, 40, torch.float32, backend.device, scale=1.5, seed=3)
    logits[0, 10] = logits[0, 11] = logits[0].max() + 0.25  # a tie inside the kept set
    tokens = draw_many(backend, logits, _draws(backend, 40_000), top_k=6)
    counts = np.bincount(tokens.cpu().numpy(), minlength=40)
    probs = oracle_probs(logits, top_k=6)[0]
    assert counts[probs == 0].sum() == 0, "a token outside the top-k was drawn"
    assert chi_square_pvalue(counts, probs) > ALPHA


def test_top_k_ties_toward_lower_id(backend):
    logits = torch.zeros(1, 8, device=backend.device)
    logits[0, 5] = 1.0
    tokens = draw_many(backend, logits, 2_000, top_k=3)  # token 5, then ties 0 and 1 fill the places
    assert set(tokens.cpu().tolist()) == {0, 1, 5}


def test_tail_hits(backend):
    """Tokens 12 nats below the head, 1023 of them: the tail is drawn at its rate (Poisson bounds)."""
    draws = 4_000 if backend.interpreted else 10_000 if backend.name == "torch" else 40_000
    logits = torch.full((1, 1024), -12.0)
    logits[0, 0] = 0.0
    tokens = draw_many(backend, logits.to(backend.device), draws)
    tail_mass = oracle_probs(logits)[0, 1:].sum()
    lo, hi = poisson_interval(draws * tail_mass)
    hits = int((tokens != 0).sum())
    assert lo <= hits <= hi, f"{hits} tail hits, expected {draws * tail_mass:.1f} (bounds [{lo}, {hi}])"


@pytest.mark.slow
def test_deep_tail_hits(backend):
    """Tokens 18 nats below the head (p ~ 1.5e-8 each, beyond float32 uniforms): drawn at their rate over 800k draws
    of a stride-0 row (expected ~50 hits; test_negative_controls shows float32 uniforms fail this check)."""
    if backend.name == "torch" or backend.interpreted:
        pytest.skip("3e9 score reads: too slow for the float64 reference and the interpreter")
    row = deep_tail_row(backend.device)
    logits = row.expand(DEEP_TAIL_DRAWS, DEEP_TAIL_V)  # stride 0: no copy
    keys = torch.arange(DEEP_TAIL_DRAWS, dtype=torch.int64, device=backend.device)
    tokens = gtl_kernels.sample(logits, seeds=keys, backend=backend.name)
    expected = DEEP_TAIL_DRAWS * oracle_probs(row)[0, 1:].sum()
    lo, hi = poisson_interval(expected)
    hits = int((tokens != 0).sum())
    assert lo <= hits <= hi, f"{hits} deep-tail hits, expected {expected:.1f} (bounds [{lo}, {hi}])"


def test_near_one_hot(backend):
    """A row whose mass is almost all on one token: it is drawn nearly always, never a -inf token."""
    logits = torch.full((1, 3000), -math.inf)
    logits[0, 2100] = 0.0
    logits[0, 7] = -30.0
    tokens = draw_many(backend, logits.to(backend.device), 2_000)
    assert set(tokens.cpu().tolist()) <= {7, 2100}
    assert (tokens == 2100).sum() >= 1_999


def test_support_excludes_minus_inf(backend):
    logits = random_logits(64, 700, torch.float32, backend.device, seed=4)
    banned = torch.rand(64, 700, generator=torch.Generator().manual_seed(5)) < 0.9
    logits[banned.to(backend.device)] = -math.inf
    tokens = gtl_kernels.sample(logits, seeds=11, backend=backend.name)
    assert not banned.gather(1, tokens.cpu().unsqueeze(-1)).any()


def test_plus_inf_tokens_share_the_mass(backend):
    logits = random_logits(1, 30, torch.float32, backend.device, seed=6)
    logits[0, [4, 20]] = math.inf
    tokens = draw_many(backend, logits, 4_000)
    counts = np.bincount(tokens.cpu().numpy(), minlength=30)
    assert counts.sum() == counts[4] + counts[20]
    probs = np.zeros(30)
    probs[[4, 20]] = 0.5
    assert chi_square_pvalue(counts, probs) > ALPHA


def test_greedy(backend):
    logits = random_logits(40, 3000, torch.bfloat16, backend.device, seed=7)
    bias = random_logits(40, 3000, torch.float32, backend.device, seed=8)
    logits[3, [100, 2500]] = 50.0  # an exact tie: the lower id wins
    gamma = torch.linspace(0, 2, 40, device=backend.device)
    tokens = gtl_kernels.sample(logits, bias, gamma=gamma, temperature=0.0, seeds=1, backend=backend.name)
    z = logits.double() + gamma.double().unsqueeze(-1) * bias.double()
    torch.testing.assert_close(tokens, z.argmax(-1))
    assert tokens[3] == 100 or z[3].max() > 50.0


def test_fixed_seed_is_deterministic_and_offset_changes_draws(backend):
    logits = random_logits(32, 2000, torch.float32, backend.device, scale=0.1, seed=9)
    a = gtl_kernels.sample(logits, seeds=5, offset=3, backend=backend.name)
    b = gtl_kernels.sample(logits, seeds=5, offset=3, backend=backend.name)
    c = gtl_kernels.sample(logits, seeds=5, offset=4, backend=backend.name)
    d = gtl_kernels.sample(logits, seeds=6, offset=3, backend=backend.name)
    assert torch.equal(a, b)
    assert (a != c).float().mean() > 0.9 and (a != d).float().mean() > 0.9  # near-uniform rows over 2000 tokens


def test_batch_invariance(backend):
    """A row's draw depends only on its scores, key and offset: not on N, its slot, or the batch's other rows."""
    n = 24
    logits = random_logits(n, 1500, torch.float32, backend.device, scale=0.5, seed=10)
    keys = torch.randint(-(2**62), 2**62, (n,), generator=torch.Generator().manual_seed(1)).to(backend.device)
    full = gtl_kernels.sample(logits, seeds=keys, offset=7, backend=backend.name)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(2)).to(backend.device)
    permuted = gtl_kernels.sample(logits[perm], seeds=keys[perm], offset=7, backend=backend.name)
    assert torch.equal(permuted, full[perm])
    parts = [gtl_kernels.sample(logits[i : i + 5], seeds=keys[i : i + 5], offset=7, backend=backend.name) for i in range(0, n, 5)]
    assert torch.equal(torch.cat(parts), full)
    single = gtl_kernels.sample(logits[13:14], seeds=keys[13:14], offset=7, backend=backend.name)
    assert single.item() == full[13].item()


def test_2d_and_3d_agree(backend):
    """[B, L, V] is the flattened [B*L, V]: with an int seed, and with per-sequence seeds (derive_keys)."""
    b, l, v = 3, 5, 900
    logits = random_logits(b * l, v, torch.float16, backend.device, scale=0.5, seed=11)
    flat = gtl_kernels.sample(logits, seeds=99, backend=backend.name)
    cube = gtl_kernels.sample(logits.view(b, l, v), seeds=99, backend=backend.name)
    assert cube.shape == (b, l) and torch.equal(cube.reshape(-1), flat)
    seq_seeds = torch.tensor([10, 20, 30], device=backend.device)
    per_seq = gtl_kernels.sample(logits.view(b, l, v), seeds=seq_seeds, backend=backend.name)
    keys = gtl_kernels.derive_keys(seq_seeds.unsqueeze(-1), torch.arange(l, device=backend.device))
    assert torch.equal(per_seq.reshape(-1), gtl_kernels.sample(logits, seeds=keys.reshape(-1), backend=backend.name))
    # sequence 1 alone, in a batch of one, draws the same tokens
    alone = gtl_kernels.sample(logits.view(b, l, v)[1:2], seeds=seq_seeds[1:2], backend=backend.name)
    assert torch.equal(alone[0], per_seq[1])


def test_generator_and_default_seeds(backend):
    logits = random_logits(16, 500, torch.float32, backend.device, scale=0.1, seed=12)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = gtl_kernels.sample(logits, seeds=g1, backend=backend.name)
    assert torch.equal(a, gtl_kernels.sample(logits, seeds=g2, backend=backend.name))
    assert not torch.equal(a, gtl_kernels.sample(logits, seeds=g1, backend=backend.name))  # the generator advanced
    torch.manual_seed(0)
    b = gtl_kernels.sample(logits, backend=backend.name)
    torch.manual_seed(0)
    assert torch.equal(b, gtl_kernels.sample(logits, backend=backend.name))


def test_candidate_index(backend):
    """With ``index`` the draw is over candidate columns and the result is the chosen column's token id."""
    n, k = 200, 16
    logits = random_logits(n, k, torch.float32, backend.device, seed=13)
    index = torch.randint(0, 50_000, (n, k), generator=torch.Generator().manual_seed(4)).to(backend.device)
    out = gtl_kernels.sample(logits, seeds=21, index=index, backend=backend.name)
    columns = gtl_kernels.sample(logits, seeds=21, backend=backend.name)
    assert torch.equal(out, index.gather(1, columns.unsqueeze(-1)).squeeze(-1))


def test_per_row_parameters(backend):
    """Per-row gamma and temperature apply to their own row only."""
    logits = random_logits(2, 60, torch.float32, backend.device, scale=1.0, seed=14)
    bias = random_logits(2, 60, torch.float32, backend.device, scale=1.0, seed=15)
    draws = _draws(backend, 20_000)
    rows = torch.arange(2, device=backend.device).repeat_interleave(draws)
    gamma = torch.tensor([0.0, 2.0], device=backend.device)[rows]
    temperature = torch.tensor([0.5, 1.5], device=backend.device)[rows]
    keys = torch.arange(2 * draws, dtype=torch.int64, device=backend.device)
    tokens = gtl_kernels.sample(logits[rows], bias[rows], gamma, temperature, seeds=keys, backend=backend.name)
    for r, (g, t) in enumerate([(0.0, 0.5), (2.0, 1.5)]):
        counts = np.bincount(tokens[rows == r].cpu().numpy(), minlength=60)
        assert chi_square_pvalue(counts, oracle_probs(logits[r : r + 1], bias[r : r + 1], g, t)[0]) > ALPHA


def test_zero_gamma_ignores_bias(backend):
    logits = random_logits(8, 100, torch.float32, backend.device, seed=16)
    bias = torch.full_like(logits, math.nan)
    bias[:, 0] = -math.inf
    a = gtl_kernels.sample(logits, bias, gamma=0.0, seeds=3, backend=backend.name)
    assert torch.equal(a, gtl_kernels.sample(logits, seeds=3, backend=backend.name))


def test_invalid_rows(backend):
    """All -inf, NaN anywhere, or a negative temperature: -1 for that row only."""
    logits = random_logits(5, 2100, torch.float32, backend.device, seed=17)
    logits[1] = -math.inf
    logits[2, 1500] = math.nan
    temperature = torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0], device=backend.device)
    out = gtl_kernels.sample(logits, temperature=temperature.abs(), seeds=1, backend=backend.name)
    assert out[1] == -1 and out[2] == -1 and (out[[0, 3, 4]] >= 0).all()
    if backend.device.type != "cpu":  # device tensors are not inspected: the kernel marks the row invalid
        out = gtl_kernels.sample(logits, temperature=temperature, seeds=1, backend=backend.name)
        assert out[3] == -1


@pytest.mark.parametrize("v", [1, 7, 1024, 1025, 30522])
def test_vocabulary_sizes(backend, v):
    if backend.interpreted and v > 1025:
        pytest.skip("large rows under the interpreter are covered by test_shapes")
    logits = random_logits(3, v, torch.float32, backend.device, seed=18)
    out = gtl_kernels.sample(logits, seeds=4, backend=backend.name)
    ref = gtl_kernels.sample(logits, seeds=4, backend="torch")
    assert out.shape == (3,) and ((out >= 0) & (out < v)).all()
    assert torch.equal(out, ref)


def test_cross_backend_identity(backend):
    """Tokens agree with the float64 reference except where two perturbed scores are within fp32 rounding
    (>= 99.99% over all rows; here every disagreement must be such a near-tie)."""
    if backend.name == "torch":
        pytest.skip("the reference itself")
    n, v = (64, 3000) if backend.interpreted else (2000, 5000)
    logits = random_logits(n, v, torch.bfloat16, backend.device, scale=2.0, seed=19)
    bias = random_logits(n, v, torch.float32, backend.device, scale=1.0, seed=20)
    out = gtl_kernels.sample(logits, bias, gamma=0.5, temperature=0.8, top_k=100, seeds=8, backend=backend.name)
    ref = gtl_kernels.sample(logits, bias, gamma=0.5, temperature=0.8, top_k=100, seeds=8, backend="torch")
    agreement = (out == ref).double().mean().item()
    assert agreement >= 0.9999 or (n - int((out == ref).sum())) <= 1, f"agreement {agreement:.5f}"


def test_plus_inf_row_unaffected_by_an_invalid_neighbour(backend):
    """A row with +inf tokens draws the same whether or not an invalid row shares its batch."""
    logits = random_logits(2, 50, torch.float32, backend.device, seed=21)
    logits[0, [3, 30]] = math.inf
    logits[1, 7] = math.nan
    keys = torch.arange(2, dtype=torch.int64, device=backend.device)
    both = gtl_kernels.sample(logits, seeds=keys, backend=backend.name)
    alone = gtl_kernels.sample(logits[:1], seeds=keys[:1], backend=backend.name)
    assert both[1] == -1 and both[0] in (3, 30) and both[0] == alone[0]
    for t in (0.0, 1.0):
        greedy = gtl_kernels.sample(logits, temperature=t, seeds=keys, backend=backend.name)
        assert greedy[0] in (3, 30) and (t or greedy[0] == 3)


def _oracle_logprob(logits, bias, gamma, temperature, top_k, tokens):
    """float64 ``log p(token)`` under the distribution each row was drawn from, from :func:`oracle_probs`
    (independent of the reference's race); greedy rows are a point mass (0)."""
    t = torch.as_tensor(temperature, dtype=torch.float32).reshape(-1).expand(logits.shape[0])
    probs = oracle_probs(logits, bias, gamma, torch.where(t > 0, t, 1.0), top_k)
    got = np.log(probs[np.arange(len(tokens)), tokens.clamp(min=0).cpu().numpy()])
    return np.where(t.cpu().numpy() > 0, got, 0.0)


@pytest.mark.parametrize("top_k", [0, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprob_of_the_drawn_token(backend, dtype, top_k):
    """``return_logprob``: the tokens are those of the plain call and their log-probability matches the float64
    oracle (tempered, top-k restricted, per-row gamma / temperature, greedy rows 0), poisoned output or not."""
    n, v = (24, 1500) if backend.interpreted else (96, 30522)
    logits = random_logits(n, v, dtype, backend.device, scale=4.0, seed=40)
    bias = random_logits(n, v, torch.float32, backend.device, scale=1.0, seed=41)
    g = torch.Generator().manual_seed(42)
    gamma = torch.rand(n, generator=g) * 2
    temperature = torch.rand(n, generator=g) * 1.5 + 0.25
    temperature[::7] = 0.0
    gamma, temperature = gamma.to(backend.device), temperature.to(backend.device)
    args = dict(top_k=top_k, seeds=torch.arange(n, device=backend.device) * 31 + 5, backend=backend.name)
    tokens, logprob = gtl_kernels.sample(logits, bias, gamma, temperature, return_logprob=True, **args)
    assert torch.equal(tokens, gtl_kernels.sample(logits, bias, gamma, temperature, **args))
    assert logprob.dtype == torch.float32 and logprob.shape == (n,)
    want = _oracle_logprob(logits.cpu(), bias.cpu(), gamma.cpu(), temperature.cpu(), top_k, tokens.cpu())
    np.testing.assert_allclose(logprob.cpu().numpy(), want, rtol=1e-5, atol=2e-5)
    assert (logprob[temperature == 0] == 0).all()


def test_logprob_special_rows(backend):
    """Invalid rows give NaN; a row holding +inf scores draws among them at -log(count); the candidate path is
    normalized over the candidates."""
    logits = random_logits(4, 3000, torch.float32, backend.device, seed=43)
    logits[0, 5] = math.nan
    logits[1] = -math.inf
    logits[2, [10, 2999, 1700]] = math.inf
    tokens, logprob = gtl_kernels.sample(logits, seeds=9, return_logprob=True, backend=backend.name)
    assert tokens[0] == -1 and tokens[1] == -1 and logprob[:2].isnan().all()
    assert int(tokens[2]) in (10, 1700, 2999)
    assert logprob[2].item() == pytest.approx(-math.log(3), abs=1e-6)
    want = torch.log_softmax(logits[3].double(), -1)[tokens[3]].item()
    assert logprob[3].item() == pytest.approx(want, abs=2e-5)

    scores = random_logits(6, 16, torch.float32, backend.device, seed=44)
    index = torch.randperm(50_000, generator=torch.Generator().manual_seed(45))[:96].view(6, 16).to(backend.device)
    tokens, logprob = gtl_kernels.sample(scores, seeds=3, index=index, return_logprob=True, backend=backend.name)
    column = (index == tokens.unsqueeze(-1)).int().argmax(-1)
    want = torch.log_softmax(scores.double(), -1).gather(1, column.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprob.double(), want, rtol=0, atol=2e-5)


def test_logprob_negative_control():
    """The oracle comparison can fail: log-probabilities at the wrong temperature are rejected."""
    logits = random_logits(8, 500, torch.float32, seed=46)
    tokens, logprob = gtl_kernels.sample(logits, temperature=0.7, seeds=1, return_logprob=True, backend="torch")
    np.testing.assert_allclose(logprob.numpy(), _oracle_logprob(logits, None, 1.0, 0.7, 0, tokens), atol=2e-5)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(logprob.numpy(), _oracle_logprob(logits, None, 1.0, 1.0, 0, tokens), atol=2e-5)


@pytest.mark.parametrize("top_k", [64, 700])
def test_top_k_heavy_ties_token_identical(backend, top_k):
    """Integer logits with thousands of exact ties at the k-th score: which tokens are allowed is decided by id, so
    every backend draws exactly the reference's tokens (no near-ties in fp32: distinct scores differ by 1 / T)."""
    if backend.name == "torch":
        pytest.skip("the reference itself")
    n, v = (4, 3000) if backend.interpreted else (64, 20_000)
    g = torch.Generator().manual_seed(top_k)
    logits = torch.randint(0, 6, (n, v), generator=g).float().to(backend.device)
    seeds = torch.arange(n, device=backend.device) * 13 + 1
    out = gtl_kernels.sample(logits, top_k=top_k, seeds=seeds, backend=backend.name)
    ref = gtl_kernels.sample(logits, top_k=top_k, seeds=seeds, backend="torch")
    assert torch.equal(out, ref)
