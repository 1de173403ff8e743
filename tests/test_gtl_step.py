"""The samplers' public one-step API: ``step`` composes to ``__call__``, takes the caller's logits, keeps given
tokens (prompts, infilling), never builds a dense ``[B, L, V]`` guidance tensor, and rejects bad model outputs."""

import math

import pytest
import torch

import gtl_kernels.gtl.samplers as samplers_mod
from gtl_kernels.gtl.chains import MarkovChain, MarkovOracleDenoiser, MarkovOracleRatio
from gtl_kernels.gtl.nets import Denoiser, SequenceScorer, TrunkConfig
from gtl_kernels.gtl.samplers import (AncestralSampler, AncestralState, GuidedAncestralSampler, SamplerStats,
                                      ScheduledSampler, sequence_seeds)

S, L = 5, 8
SOURCE, TARGET = MarkovChain.sticky(S, 0.2), MarkovChain.sticky(S, 0.8)


def _all(den, rat):
    return {
        "ancestral": AncestralSampler(den, S, steps=6),
        "guided-topn": GuidedAncestralSampler(den, rat, S, steps=6, mode="topn", n_ratio=3, top_k=2),
        "guided-exact": GuidedAncestralSampler(den, rat, S, steps=6, mode="exact", top_k=0),
        "scheduled": ScheduledSampler(den, S, rat, order="margin", n_ratio=3),
        "scheduled-unguided": ScheduledSampler(den, S, None, order="random"),
    }


NAMES = list(_all(None, None))


def _loop(sampler, z, seeds, steps, **kw):
    state = AncestralState() if isinstance(sampler, AncestralSampler) else None
    for i in range(steps):
        extra = {"state": state} if state is not None else {}
        z, _ = sampler.step(z, i, seeds, **extra, **kw)
    return z


@pytest.mark.parametrize("name", NAMES)
def test_step_loop_equals_call(name):
    sampler = _all(MarkovOracleDenoiser(SOURCE), MarkovOracleRatio(SOURCE, TARGET))[name]
    x, _ = sampler(10, L, seed=7, batch_size=10)
    z0 = torch.full((10, L), S, dtype=torch.int64)
    steps = sampler.steps if isinstance(sampler, AncestralSampler) else L
    assert torch.equal(_loop(sampler, z0, sequence_seeds(7, 0, 10), steps), x)


@pytest.mark.parametrize("name", NAMES)
def test_prompt_tokens_never_change_and_the_rest_is_filled(name):
    sampler = _all(MarkovOracleDenoiser(SOURCE), MarkovOracleRatio(SOURCE, TARGET))[name]
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randint(0, S, (16, L), generator=gen)
    given = torch.rand(16, L, generator=gen) < 0.4
    z0 = torch.where(given, z0, S)
    x, _ = sampler(16, L, seed=2, batch_size=5, z0=z0)
    assert torch.equal(x[given], z0[given])
    assert ((x >= 0) & (x < S)).all()


def test_infilling_follows_the_conditional():
    """With the exact source denoiser, infilling the middle token between fixed neighbours follows the chain's
    bridge p(x1 | x0, x2) (chi-square, false-failure rate 1e-6)."""
    from scipy import stats
    chain = MarkovChain.sticky(S, 0.5)
    n = 6000
    z0 = torch.full((n, 3), S, dtype=torch.int64)
    z0[:, 0], z0[:, 2] = 1, 3
    x, _ = ScheduledSampler(MarkovOracleDenoiser(chain), S, order="left_to_right")(n, 3, seed=4, z0=z0)
    p = chain.trans
    bridge = (p[1, :] * p[:, 3]) / (p[1, :] * p[:, 3]).sum()
    counts = torch.bincount(x[:, 1], minlength=S).double()
    assert stats.chisquare(counts.numpy(), (bridge * n).numpy()).pvalue > 1e-6


@pytest.mark.parametrize("name", ["ancestral", "guided-topn", "scheduled"])
def test_given_logits_replace_the_denoiser_call(name):
    den = MarkovOracleDenoiser(SOURCE)
    calls = []

    def counting(z, t):
        calls.append(1)
        return den(z, t)

    sampler = _all(counting, MarkovOracleRatio(SOURCE, TARGET))[name]
    z = torch.full((6, L), S, dtype=torch.int64)
    seeds = sequence_seeds(3, 0, 6)
    own, _ = sampler.step(z, 0, seeds)
    n_calls = len(calls)
    given, _ = sampler.step(z, 0, seeds, logits=den(z, torch.ones(6)))
    assert torch.equal(own, given) and len(calls) == n_calls == 1


def test_model_output_of_the_wrong_shape_is_named():
    sampler = AncestralSampler(lambda z, t: torch.zeros(z.shape[0], z.shape[1] + 1, S + 1), S, steps=3)
    with pytest.raises(ValueError, match="denoiser returned shape"):
        sampler(2, L)
    bad_ratio = GuidedAncestralSampler(MarkovOracleDenoiser(SOURCE), lambda z: torch.zeros(z.shape[0], 2), S,
                                       steps=3, mode="topn", n_ratio=2)
    with pytest.raises(ValueError, match="ratio returned shape"):
        bad_ratio(2, L)
    with pytest.raises(TypeError, match="denoiser must return a float tensor"):
        AncestralSampler(lambda z, t: torch.zeros(*z.shape, S + 1, dtype=torch.int64), S, steps=2)(2, L)
    with pytest.raises(ValueError, match="z0 must have shape"):
        AncestralSampler(MarkovOracleDenoiser(SOURCE), S)(3, L, z0=torch.full((2, L), S))


def test_guided_step_is_sparse(monkeypatch):
    """The guided ancestral step reads candidates through topk_log_softmax and draws through the candidate path
    of masked_transition: it never passes a [B, L, V] tensor besides the denoiser's scores."""
    vocab, bsz, length = 300, 3, 10
    torch.manual_seed(0)
    cfg = TrunkConfig(vocab, length, d_model=16, n_heads=2, n_layers=1)
    den, rat = Denoiser(cfg).eval(), SequenceScorer(cfg).eval()
    seen = []
    real = samplers_mod.gk.masked_transition

    def spy(x_t, logits, bias=None, *args, **kw):
        seen.append((tuple(logits.shape), None if bias is None else tuple(bias.shape), kw.get("index") is not None))
        return real(x_t, logits, bias, *args, **kw)

    monkeypatch.setattr(samplers_mod.gk, "masked_transition", spy)
    sampler = GuidedAncestralSampler(den, rat, vocab, steps=4, mode="topn", n_ratio=16, top_k=4, ratio_chunk=40)
    x, stats = sampler(bsz, length, seed=1)
    assert ((x >= 0) & (x < vocab)).all()
    assert seen and all(shape[-1] == 16 and bias == shape and indexed for shape, bias, indexed in seen)
    assert stats.ratio_calls >= stats.ratio_passes / 40


def test_scheduled_step_normalizes_only_the_rows_it_uses(monkeypatch):
    """The scheduled step asks the denoiser for unnormalized scores and passes [B, V + 1] rows to the kernels."""
    vocab, bsz, length = 200, 4, 6
    torch.manual_seed(0)
    cfg = TrunkConfig(vocab, length, d_model=16, n_heads=2, n_layers=1)
    den, rat = Denoiser(cfg).eval(), SequenceScorer(cfg).eval()
    shapes = []
    real = samplers_mod.gk.topk_log_softmax
    monkeypatch.setattr(samplers_mod.gk, "topk_log_softmax",
                        lambda x, k, *a, **kw: shapes.append(x.shape) or real(x, k, *a, **kw))
    monkeypatch.setattr(torch, "log_softmax", lambda *a, **kw: pytest.fail("a full log-softmax was computed"))
    x, _ = ScheduledSampler(den, vocab, rat, order="left_to_right", n_ratio=8)(bsz, length, seed=0)
    assert ((x >= 0) & (x < vocab)).all()
    assert shapes and all(tuple(s) == (bsz, vocab + 1) for s in shapes)


def test_stats_accumulate_over_steps():
    sampler = ScheduledSampler(MarkovOracleDenoiser(SOURCE), S, MarkovOracleRatio(SOURCE, TARGET), n_ratio=3)
    stats = SamplerStats()
    z = torch.full((4, L), S, dtype=torch.int64)
    for i in range(3):
        z, stats = sampler.step(z, i, sequence_seeds(0, 0, 4), stats=stats)
    assert stats.denoiser_passes == 12 and stats.ratio_passes == 4 * 3 * 3
    assert int((z == S).sum(1).max()) == L - 3


@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 7, 8, 13, 1000])
@pytest.mark.parametrize("vandal", [False, True])
@pytest.mark.parametrize("grouped", [False, True])
def test_ratio_scorer_hands_the_model_every_substitution(chunk, vandal, grouped):
    """Each model call gets exactly the substituted sequences of its candidates, as the documented layout places
    them (candidate ``i`` at row ``i // C`` of call ``i % C``, ``C = ceil(M * K / chunk)`` calls), whatever the
    chunk width (dividing ``M * K`` or not, rows passing to the next masked position in the middle of the calls,
    a last row shorter than the others), with sequences in any order (rows move between sequences) or grouped (a
    row's next position in the same sequence: only the token there is put back), and when the model writes into
    its input (the buffer is then rebuilt, seen in its version counter), also under inference mode."""
    gen = torch.Generator().manual_seed(chunk)
    z = torch.randint(0, 9, (3, 6), generator=gen)
    seq, pos = torch.randint(0, 3, (7,), generator=gen), torch.randint(0, 6, (7,), generator=gen)
    if grouped:  # as a batch's masked positions come
        seq = seq.sort().values
    cand = torch.randint(0, 9, (7, 4), generator=gen)
    weights = torch.randn(6, dtype=torch.float64, generator=gen)
    seen = []

    def model(x):
        seen.append(x.clone())
        scores = (x.double() * weights).sum(1).float()
        if vandal:
            x.fill_(-1)
        return scores

    with torch.inference_mode():
        got = samplers_mod.RatioScorer(model, chunk, SamplerStats())(z, seq, pos, cand)
    expected = samplers_mod.one_token_substitutions(z[seq], pos, cand).view(-1, z.shape[1])
    calls = -(-28 // chunk)
    assert len(seen) == calls and max(len(x) for x in seen) <= chunk
    for c, x in enumerate(seen):
        assert torch.equal(x, expected[c::calls]), f"call {c}"
    assert torch.equal(got, (expected.double() * weights).sum(1).float().view(7, 4))
