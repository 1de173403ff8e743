"""Invariants of the GTL samplers: no masks left, revealed tokens never change, forward-pass counts match the
theory, a sequence's sample does not depend on its batch, invalid rows raise, gamma schedules."""

import math

import pytest
import torch

from gtl_kernels.gtl.chains import MarkovChain, MarkovOracleDenoiser, MarkovOracleRatio
from gtl_kernels.gtl.nets import Planner, TrunkConfig
from gtl_kernels.gtl.samplers import (AncestralSampler, GuidedAncestralSampler, PiecewiseLinearGamma,
                                      ScheduledSampler, one_token_substitutions)

S, L = 4, 6
SOURCE = MarkovChain.sticky(S, 0.2)
TARGET = MarkovChain.sticky(S, 0.7)


class Recorder:
    """Wraps a model; records every input batch so the trajectory of each sequence can be checked."""

    def __init__(self, model):
        self.model, self.inputs, self.mask_id = model, [], getattr(model, "mask_id", S)

    def __call__(self, z, *args):
        self.inputs.append(z.clone())
        return self.model(z, *args)


def _planner():
    torch.manual_seed(0)
    return Planner(TrunkConfig(S, L, d_model=16, n_heads=2, n_layers=1)).eval()


def _samplers(den, rat):
    return {
        "ancestral": AncestralSampler(den, S, steps=5),
        "ancestral-nocache": AncestralSampler(den, S, steps=5, cache=False),
        "guided-exact": GuidedAncestralSampler(den, rat, S, steps=5, mode="exact", top_k=0),
        "guided-topn": GuidedAncestralSampler(den, rat, S, steps=5, mode="topn", n_ratio=2, top_k=1),
        "scheduled-planner": ScheduledSampler(den, S, rat, planner=_planner(), order="planner", n_ratio=3),
        "scheduled-margin": ScheduledSampler(den, S, rat, order="margin", n_ratio=3, top_k=2),
        "scheduled-entropy": ScheduledSampler(den, S, rat, order="neg_entropy", n_ratio=3),
        "scheduled-random": ScheduledSampler(den, S, rat, order="random", n_ratio=S),
        "scheduled-unguided": ScheduledSampler(den, S, None, order="max_prob"),
    }


@pytest.mark.parametrize("name", list(_samplers(None, None)))
def test_no_masks_left_and_revealed_tokens_never_change(name):
    den = Recorder(MarkovOracleDenoiser(SOURCE))
    sampler = _samplers(den, MarkovOracleRatio(SOURCE, TARGET))[name]
    x, stats = sampler(12, L, seed=3, batch_size=12)
    assert x.shape == (12, L) and x.dtype == torch.int64
    assert ((x >= 0) & (x < S)).all(), "a mask token (or -1) survived"
    # Replay the denoiser inputs of each sequence: a revealed token keeps its value in every later input.
    first = {}
    for z in den.inputs:
        if z.shape[0] != 12:  # the cached ancestral sampler re-runs only changed sequences; skip partial batches
            continue
        revealed = z != S
        for b, l in revealed.nonzero().tolist():
            first.setdefault((b, l), int(z[b, l]))
            assert int(z[b, l]) == first[(b, l)]
    for (b, l), v in first.items():
        assert int(x[b, l]) == v
    assert stats.wall_s > 0 and stats.samples == 12


def test_scheduled_sampler_pass_counts_match_theory():
    n, n_ratio = 10, 3
    sampler = ScheduledSampler(MarkovOracleDenoiser(SOURCE), S, MarkovOracleRatio(SOURCE, TARGET),
                               planner=_planner(), order="planner", n_ratio=n_ratio)
    _, stats = sampler(n, L, seed=0, batch_size=4)
    assert stats.denoiser_passes == n * L
    assert stats.planner_passes == n * L
    assert stats.ratio_passes == n * L * n_ratio
    assert stats.per_sequence()["ratio"] == L * n_ratio
    # n_ratio above the vocabulary is capped at V (all one-token substitutions)
    _, stats = ScheduledSampler(MarkovOracleDenoiser(SOURCE), S, MarkovOracleRatio(SOURCE, TARGET), n_ratio=512)(
        n, L, seed=0)
    assert stats.ratio_passes == n * L * S and stats.planner_passes == 0


def test_guided_ancestral_pass_counts_match_theory():
    """Without the cache: one denoiser pass per sequence and step, and V ratio passes per masked position."""
    den, rat = Recorder(MarkovOracleDenoiser(SOURCE)), Recorder(MarkovOracleRatio(SOURCE, TARGET))
    steps, n = 5, 8
    _, stats = GuidedAncestralSampler(den, rat, S, steps=steps, mode="exact", cache=False)(n, L, seed=1)
    assert stats.denoiser_passes == n * steps
    masked_rows = sum(int((z == S).sum()) for z in den.inputs)
    assert stats.ratio_passes == masked_rows * S == sum(r.shape[0] for r in rat.inputs)
    # With the cache the denoiser runs only for sequences that changed, and the sample is the same.
    den2 = Recorder(MarkovOracleDenoiser(SOURCE))
    x1, _ = GuidedAncestralSampler(den, rat, S, steps=steps, mode="exact", cache=False)(n, L, seed=1)
    x2, s2 = GuidedAncestralSampler(den2, rat, S, steps=steps, mode="exact", cache=True)(n, L, seed=1)
    assert torch.equal(x1, x2)
    assert s2.denoiser_passes == sum(z.shape[0] for z in den2.inputs) <= n * steps


@pytest.mark.parametrize("name", ["ancestral", "guided-exact", "guided-topn", "scheduled-random",
                                  "scheduled-planner"])
def test_sample_of_a_sequence_does_not_depend_on_its_batch(name):
    sampler = _samplers(MarkovOracleDenoiser(SOURCE), MarkovOracleRatio(SOURCE, TARGET))[name]
    whole, _ = sampler(7, L, seed=11, batch_size=7)
    split, _ = sampler(7, L, seed=11, batch_size=3)
    singles, _ = sampler(7, L, seed=11, batch_size=1)
    assert torch.equal(whole, split) and torch.equal(whole, singles)
    other, _ = sampler(7, L, seed=12, batch_size=7)
    assert not torch.equal(whole, other)


def test_invalid_rows_raise_an_error_naming_them():
    def broken(z, t):
        out = MarkovOracleDenoiser(SOURCE)(z, t)
        out[1] = math.nan  # sequence 1 is broken at every position
        return out

    with pytest.raises(RuntimeError, match=r"invalid row.*\(1"):
        AncestralSampler(broken, S, steps=3)(4, L, seed=0)
    with pytest.raises(RuntimeError, match=r"invalid row.*\(1"):
        ScheduledSampler(broken, S, None, order="random")(4, L, seed=0)


def test_one_token_substitutions():
    z = torch.tensor([[0, 4, 4], [4, 1, 4]])
    out = one_token_substitutions(z, torch.tensor([1, 2]), torch.tensor([[0, 1, 2], [3, 2, 1]]))
    assert out.shape == (2, 3, 3)
    assert out[0].tolist() == [[0, 0, 4], [0, 1, 4], [0, 2, 4]]
    assert out[1].tolist() == [[4, 1, 3], [4, 1, 2], [4, 1, 1]]
    assert z.tolist() == [[0, 4, 4], [4, 1, 4]]  # input untouched


def test_piecewise_linear_gamma():
    g = PiecewiseLinearGamma(1.0, 2.0, 0.25, 0.75)
    assert g(0.0) == 1.0 and g(0.25) == 1.0 and g(0.5) == pytest.approx(1.5) and g(1.0) == 2.0
