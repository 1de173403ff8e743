"""``gtl_kernels.compat.gtl`` against the GTL authors' guided step and planner step rendered in plain PyTorch
(``bench/originals/gtl.py``): the drop-in draws from the distribution the original builds, top-K rule included.

Chi-square at a false-failure rate of ALPHA = 1e-6 with fixed seeds; every law check has a negative control."""

import numpy as np
import pytest
import torch
from helpers import ALPHA, chi_square_pvalue

from gtl_kernels.bench.originals import gtl as original
from gtl_kernels.bench.originals.mdlm import subs_log_probs
from gtl_kernels.compat import gtl

V, MASK, L = 40, 39, 3
RATIO = original.StubRatio(V, seed=1)


def _context():
    """One sequence ``[1, L]`` with the middle position masked, its denoiser log-probabilities ``[1, L, V]``."""
    xt = torch.tensor([[4, MASK, 7]])
    return xt, subs_log_probs(1, L, V, MASK, seed=2, scale=1.5)


def _dropin_counts(xt, log_p, n, **kw):
    out, _ = gtl.ratio_guidance_denoise(xt.expand(n, L), log_p.expand(n, L, V), RATIO, kw.pop("mt"), kw.pop("ms"),
                                        mask_index=MASK, seeds=3, **kw)
    return np.bincount(out[:, 1].numpy(), minlength=V), out


@pytest.mark.parametrize("mt, ms, top_k", [(0.9, 0.8, 8), (0.5, 0.1, 8), (0.5, 0.0, 0)])
def test_guided_step_follows_the_authors_distribution(mt, ms, top_k):
    """Outcome frequencies at the masked position (tokens and staying masked) match the probabilities the
    authors' step samples from; the same test rejects their distribution at gamma 1.5 and with the top-K filter
    that does not count the mask column (one token more)."""
    n = 40_000
    xt, log_p = _context()
    kw = dict(gamma=1.0, compute_top_k_ratio=12, top_k_sampling=top_k)
    counts, out = _dropin_counts(xt, log_p, n, mt=mt, ms=ms, **kw)
    assert (out[:, [0, 2]] == xt[:, [0, 2]]).all()
    probs = original.guided_probs(xt, log_p, RATIO, mt, ms, MASK, 1.0, 12, top_k)[0, 1].double().numpy()
    assert chi_square_pvalue(counts, probs) > ALPHA
    wrong_gamma = original.guided_probs(xt, log_p, RATIO, mt, ms, MASK, 1.5, 12, top_k)[0, 1].double().numpy()
    assert chi_square_pvalue(counts, wrong_gamma) < ALPHA
    if top_k and mt / ms < 2:  # the mask column is among the top K here: the original keeps K - 1 tokens
        wider = original.guided_probs(xt, log_p, RATIO, mt, ms, MASK, 1.0, 12, top_k + 1)[0, 1].double().numpy()
        assert chi_square_pvalue(counts, wider) < ALPHA


def test_cache_reuse_draws_the_same():
    xt, log_p = _context()
    xt, log_p = xt.expand(50, L), log_p.expand(50, L, V)
    fresh, cache = gtl.ratio_guidance_denoise(xt, log_p, RATIO, 0.5, 0.3, mask_index=MASK, seeds=4, offset=2)
    calls = []
    cached, _ = gtl.ratio_guidance_denoise(xt, None, lambda z: calls.append(1) or RATIO(z), 0.5, 0.3,
                                           mask_index=MASK, cache=cache, seeds=4, offset=2)
    assert torch.equal(fresh, cached) and not calls
    with pytest.raises(ValueError, match="log_x_theta"):
        gtl.ratio_guidance_denoise(xt[:, :2], None, RATIO, 0.5, 0.3, mask_index=MASK, cache=cache, seeds=4)


def test_planner_step_follows_the_authors_distribution():
    n = 40_000
    xt, log_p = _context()
    out = gtl.ratio_guided_step_at_position(xt.expand(n, L), 1, log_p.expand(n, L, V), RATIO, mask_index=MASK,
                                            gamma=1.3, compute_top_k_ratio=10, top_k_sampling=6, seeds=5)
    assert (out[:, [0, 2]] == xt[:, [0, 2]]).all()
    counts = np.bincount(out[:, 1].numpy(), minlength=V)
    probs = original.planner_probs(xt, torch.tensor([1]), log_p, RATIO, MASK, 1.3, 10, 6)[0].double().numpy()
    assert chi_square_pvalue(counts, probs) > ALPHA
    control = original.planner_probs(xt, torch.tensor([1]), log_p, RATIO, MASK, 1.3, 10, 7)[0].double().numpy()
    assert chi_square_pvalue(counts, control) < ALPHA


def test_planner_step_leaves_revealed_positions_and_checks_positions():
    xt, log_p = _context()
    assert torch.equal(gtl.ratio_guided_step_at_position(xt, 0, log_p, RATIO, mask_index=MASK, seeds=1), xt)
    with pytest.raises(ValueError, match="next_pos"):
        gtl.ratio_guided_step_at_position(xt, L, log_p, RATIO, mask_index=MASK, seeds=1)
    with pytest.raises(ValueError, match="next_pos"):
        gtl.ratio_guided_step_at_position(xt, torch.tensor([0, 1]), log_p, RATIO, mask_index=MASK, seeds=1)


def test_guided_step_is_sparse_and_streams_candidates():
    """At V = 30522 the ratio model sees at most batch_size_ratio sequences per call, and the draw goes through the
    candidate path (no [B, L, V] guidance tensor)."""
    vocab, mask = 30522, 30521
    xt = torch.full((2, 64), mask)
    xt[:, ::4] = 5
    log_p = subs_log_probs(2, 64, vocab, mask, seed=7)
    sizes = []
    stub = original.StubRatio(vocab)
    out, cache = gtl.ratio_guidance_denoise(xt, log_p, lambda z: sizes.append(len(z)) or stub(z), 0.5, 0.25,
                                            mask_index=mask, compute_top_k_ratio=64, batch_size_ratio=500, seeds=8)
    assert max(sizes) <= 500 and sum(sizes) == 96 * 64
    assert cache.cand.shape == (96, 64) and cache.rho.shape == (96, 64)
    assert torch.equal(out[:, ::4], xt[:, ::4]) and ((out >= 0) & (out < vocab)).all()


def test_substitution_aware_ratio_scores_and_draws_as_the_whole_sequence_model():
    """A ratio model with ``score_substitutions`` is called once instead of on every substituted sequence; its scores
    equal the whole-sequence model's (float32 rounding of a sum instead of a mean), so the draws are identical."""
    vocab, mask = 300, 299
    g = torch.Generator().manual_seed(11)
    xt = torch.randint(0, mask, (3, 20), generator=g)
    xt[:, 1::3] = mask
    log_p = subs_log_probs(3, 20, vocab, mask, seed=12)
    calls = []
    a, cache_a = gtl.ratio_guidance_denoise(xt, log_p, original.StubRatio(vocab, seed=2), 0.6, 0.3, mask_index=mask,
                                            compute_top_k_ratio=16, seeds=9)

    class Counting(original.SubstitutionStubRatio):
        def __call__(self, z):
            calls.append(len(z))
            return super().__call__(z)

    b, cache_b = gtl.ratio_guidance_denoise(xt, log_p, Counting(vocab, seed=2), 0.6, 0.3, mask_index=mask,
                                            compute_top_k_ratio=16, seeds=9)
    assert calls == []  # no substituted sequence was built or scored
    torch.testing.assert_close(cache_b.rho, cache_a.rho, rtol=1e-5, atol=1e-6)
    assert torch.equal(a, b)


def test_substitution_aware_ratio_of_the_wrong_shape_is_an_error():
    xt, log_p = _context()

    class Wrong(original.StubRatio):
        def score_substitutions(self, z, seq, pos, cand):
            return torch.zeros(cand.shape[0])  # [M] instead of [M, K]

    with pytest.raises(ValueError, match="score_substitutions"):
        gtl.ratio_guidance_denoise(xt, log_p, Wrong(V), 0.5, 0.3, mask_index=MASK, seeds=1)
