"""GTL against closed-form oracles on Markov chains.

With the exact source denoiser and the exact density ratio ``h(z) = q(z_obs) / p(z_obs)``, the guided
one-position-per-step sampler at gamma = 1 in exact mode is the exact target reverse process, although the denoiser
only knows the source. gamma = 0 must give the source.

Statistics: transition counts of the generated sequences are compared with a chain by Pearson's chi-square for
Markov chains (Anderson & Goodman 1957): asymptotically chi-square with S(S-1) = 20 degrees of freedom. The
threshold 52.39 is its 1e-4 upper quantile, so a correct sampler fails a check with probability about 1e-4 per
check (the seed is fixed, so the outcome is deterministic for a given backend). The wrong chain scores in the
thousands at these sample sizes.
"""

import itertools

import pytest
import torch

from gtl_kernels.gtl.chains import (MarkovChain, MarkovOracleDenoiser, MarkovOracleRatio, estimate_transitions,
                                    fit_test, transition_counts, transition_metrics)
from gtl_kernels.gtl.samplers import GuidedAncestralSampler, ScheduledSampler

CHI2_1E4_20DF = 52.386
S, L, N = 5, 8, 1000

SOURCE = MarkovChain.sticky(S, 0.10)
TARGET = MarkovChain.sticky(S, 0.80)


def markov_chi2(x: torch.Tensor, chain: MarkovChain) -> float:
    """Pearson's statistic of the transition counts of ``x`` against ``chain.trans``."""
    counts = transition_counts(x, chain.n_states)
    expected = counts.sum(1, keepdim=True) * chain.trans
    return float(((counts - expected) ** 2 / expected).sum())


def test_fit_test_is_calibrated_under_the_null_and_rejects_other_chains():
    """``fit_test`` (the suite's oracle check): on draws of the chain itself its p-value is uniform (400 independent
    sets: the share below 0.05 and below 0.5 within binomial bounds that an exact test breaks with probability
    ~1e-6 each); it rejects the source chain's draws and a chain 0.05 away on one row (p < 1e-6), and a transition
    of probability 0 gives p = 0. Its statistic without pooling equals Pearson's statistic of the transitions plus
    that of the first tokens."""
    chain = MarkovChain.sticky(3, 0.6)
    p = torch.tensor([fit_test(chain, chain.sample(100, 10, generator=torch.Generator().manual_seed(i)))["pvalue"]
                      for i in range(400)])
    # Binomial(400, 0.05): mean 20, sd 4.36 -> [0, 44] holds with probability > 1 - 1e-6; Binomial(400, 0.5): sd 10
    assert (p < 0.05).sum() <= 44 and 150 <= (p < 0.5).sum() <= 250
    x = TARGET.sample(2000, L, generator=torch.Generator().manual_seed(7))
    assert fit_test(TARGET, x)["pvalue"] > 1e-4  # false-failure rate 1e-4
    assert fit_test(SOURCE, x)["pvalue"] < 1e-6
    near = TARGET.trans.clone()
    near[0, 0], near[0, 1] = near[0, 0] - 0.05, near[0, 1] + 0.05
    assert fit_test(MarkovChain(TARGET.init, near), x)["pvalue"] < 1e-6
    forbidden = TARGET.trans.clone()
    forbidden[1] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert fit_test(MarkovChain(TARGET.init, forbidden), x)["pvalue"] == 0.0
    first = torch.bincount(x[:, 0], minlength=S).double()
    first_chi2 = float(((first - len(x) * TARGET.init) ** 2 / (len(x) * TARGET.init)).sum())
    got = fit_test(TARGET, x, min_expected=0.0)
    assert abs(got["chi2"] - (markov_chi2(x, TARGET) + first_chi2)) < 1e-9 and got["df"] == (S - 1) * (S + 1)


def _likelihood(chain, xs):
    p = chain.init[xs[:, 0]]
    for l in range(1, xs.shape[1]):
        p = p * chain.trans[xs[:, l - 1], xs[:, l]]
    return p


def test_oracles_match_brute_force():
    src, tgt = MarkovChain.sticky(3, 0.1), MarkovChain.sticky(3, 0.7)
    length, s = 4, 3
    every = torch.tensor(list(itertools.product(range(s), repeat=length)))
    z = torch.tensor([[0, 3, 3, 2], [3, 1, 3, 3], [3, 3, 3, 3], [1, 0, 3, 2], [2, 2, 2, 2]])
    logp = MarkovOracleDenoiser(src)(z)
    ratio = MarkovOracleRatio(src, tgt)(z)
    for i, zi in enumerate(z):
        consistent = ((every == zi) | (zi == s)).all(1)
        ps, pt = _likelihood(src, every) * consistent, _likelihood(tgt, every) * consistent
        assert float(ratio[i]) == pytest.approx(float((pt.sum() / ps.sum()).log()), abs=1e-9)
        for l in range(length):
            if zi[l] == s:
                marg = torch.stack([ps[every[:, l] == v].sum() for v in range(s)])
                assert torch.allclose(logp[i, l, :s].exp().double(), marg / marg.sum(), atol=1e-6)
                assert logp[i, l, s] == -float("inf")
            else:  # SUBS: unmasked positions are copied
                assert logp[i, l, zi[l]] == 0 and torch.isinf(logp[i, l]).sum() == s


@pytest.mark.parametrize("order", ["random", "max_prob", "left_to_right"])
def test_exact_guidance_produces_the_target_chain(order):
    sampler = ScheduledSampler(MarkovOracleDenoiser(SOURCE), S, MarkovOracleRatio(SOURCE, TARGET), order=order,
                               n_ratio=S, gamma=1.0, top_k=0)
    x, stats = sampler(N, L, seed=1234, batch_size=1000)
    assert markov_chi2(x, TARGET) < CHI2_1E4_20DF
    assert markov_chi2(x, SOURCE) > 10 * CHI2_1E4_20DF  # and it is clearly not the source
    assert stats.ratio_passes == N * L * S


def test_gamma_zero_gives_the_source_chain():
    sampler = ScheduledSampler(MarkovOracleDenoiser(SOURCE), S, MarkovOracleRatio(SOURCE, TARGET), order="random",
                               n_ratio=S, gamma=0.0)
    x, _ = sampler(N, L, seed=99, batch_size=1000)
    assert markov_chi2(x, SOURCE) < CHI2_1E4_20DF
    assert markov_chi2(x, TARGET) > 10 * CHI2_1E4_20DF


def test_guided_ancestral_exact_mode_moves_to_the_target():
    # Several positions may be revealed in one step, each guided given the same z_t (a factorized step), so the
    # ancestral sampler is not exact; with one step per position on average it still lands near the target.
    sampler = GuidedAncestralSampler(MarkovOracleDenoiser(SOURCE), MarkovOracleRatio(SOURCE, TARGET), S, steps=2 * L,
                                     mode="exact", top_k=0)
    x, _ = sampler(400, L, seed=5, batch_size=400)
    m = transition_metrics(estimate_transitions(x, S), TARGET.trans)
    print(m)
    assert m["mean_diag"] > 0.70 and m["mae"] < 0.05
