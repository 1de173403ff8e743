"""The learned GTL parts against the exact ones, on a fixed chain pair with short budgets, each next to a negative
control that a broken estimator would resemble.

Every test is deterministic (fixed seeds); the bounds sit far from both the measured values of the working estimator
and of its control (numbers in the comments, measured with these seeds), so a correct implementation fails them only
if training itself regresses.
"""

import pytest
import torch

from gtl_kernels.experiments.markov import run

from gtl_kernels.gtl.chains import MarkovChain, MarkovOracleDenoiser, ratio_quality
from gtl_kernels.gtl.nets import Planner, SequenceScorer, TrunkConfig
from gtl_kernels.gtl.training import (TrainConfig, conditional_nll, split_holdout, train_planner,
                                      train_ratio_conditional, train_ratio_selected)

S, L = 5, 8
SOURCE, TARGET = MarkovChain.sticky(S, 0.10), MarkovChain.sticky(S, 0.80)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared CPU, OpenMP threads that spin while waiting make these runs several times
    slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained_ratio(denoiser, target_set, seed=0):
    torch.manual_seed(seed)
    ratio = SequenceScorer(TrunkConfig(S, L, d_model=32, n_heads=4, n_layers=2, window=1))
    train_ratio_conditional(ratio, denoiser, target_set, TrainConfig(steps=100, batch_size=32, lr=6e-3, seed=seed),
                            progress=False)
    return ratio


@pytest.fixture(scope="module")
def quality():
    """Slope and R^2 of the learned against the exact candidate log-ratios, for a ratio trained on 100 target
    sequences and for the negative control: the same training on 100 *source* sequences (target labels shuffled
    away entirely), whose exact answer is a zero log-ratio."""
    g = torch.Generator().manual_seed(0)
    den = MarkovOracleDenoiser(SOURCE)
    held = TARGET.sample(500, L, generator=torch.Generator().manual_seed(1))
    out = {}
    for name, data in {"target": TARGET.sample(100, L, generator=g), "control": SOURCE.sample(100, L, generator=g)}.items():
        out[name] = ratio_quality(_trained_ratio(den, data), SOURCE, TARGET, held,
                                  generator=torch.Generator().manual_seed(2))
    return out


BOUNDS = {"slope": (0.6, 1.4), "r2": 0.6, "tv": 0.35}


def _passes(q: dict) -> bool:
    lo, hi = BOUNDS["slope"]
    return lo < q["slope"] < hi and q["r2"] > BOUNDS["r2"] and q["tv"] < BOUNDS["tv"]


def test_trained_ratio_tracks_the_exact_log_ratio(quality):
    # measured: slope 0.84, R^2 0.82, TV 0.18 (the guided conditional against the exact target conditional)
    assert _passes(quality["target"]), quality["target"]


def test_negative_control_fails_the_same_bounds(quality):
    # measured: slope -0.00, R^2 0.00, TV 0.59: an estimator that learned nothing fails every bound
    q = quality["control"]
    assert not (BOUNDS["slope"][0] < q["slope"]) and q["r2"] < BOUNDS["r2"] and q["tv"] > BOUNDS["tv"], q


def _planner_scores(chain: MarkovChain):
    """Planner logits and the exact chance that the denoiser's argmax is right (its max posterior probability) at
    the masked positions of noised ``chain`` sequences; the planner is trained with the chain's exact denoiser."""
    den = MarkovOracleDenoiser(chain)
    data = chain.sample(512, L, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    planner = Planner(TrunkConfig(S, L, d_model=32, n_heads=4, n_layers=2))
    train_planner(planner, den, data, TrainConfig(steps=100, batch_size=32, lr=6e-3, seed=0), progress=False)
    x0 = chain.sample(300, L, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(5)
    z = torch.where(torch.rand(x0.shape, generator=g) < torch.rand(300, 1, generator=g), torch.full_like(x0, S), x0)
    masked = z == S
    with torch.no_grad():
        logits = planner(z)[masked]
    right = den(z)[..., :S].exp().max(-1).values[masked]
    return logits, right


def test_planner_learns_informative_scores():
    # A sticky source (diagonal 0.9): the denoiser is sure next to revealed tokens and unsure far from them.
    logits, right = _planner_scores(MarkovChain.sticky(S, 0.9))
    corr = float(torch.corrcoef(torch.stack([logits, right.float()]))[0, 1])
    assert logits.std() > 0.3 and corr > 0.6, (float(logits.std()), corr)


def test_planner_scores_are_flat_where_nothing_is_informative():
    # Negative control: a uniform chain, where the argmax is right with probability 1/S everywhere.
    logits, _ = _planner_scores(MarkovChain.sticky(S, 1 / S))
    assert logits.std() < 0.1, float(logits.std())


def test_failure_mode_top_candidates_never_draw_the_unseen_state(tmp_path):
    """The target uses a state the source never emits: with the source denoiser's top-5 candidates it is never
    scored, so never drawn, at any gamma; with all 6 candidates guidance recovers it at gamma = 1."""
    out = run(["failure", "--n-source", "300", "--failure-n", "50", "--length", "8", "--samples", "100",
               "--d-model", "32", "--heads", "4", "--layers", "1", "--ratio-layers", "2", "--batch-size", "64",
               "--ratio-batch", "32", "--denoiser-steps", "80", "--ratio-steps", "100", "--failure-gammas", "0", "1",
               "--seeds", "0", "--out", str(tmp_path), "--no-progress", "--threads", "1"])
    freq = {(r["candidates"], r["gamma"]): r["new_state_freq"] for r in out["rows"] if r["pair"] == "no overlap"}
    assert freq[("top-5", 0.0)] == 0 and freq[("top-5", 1.0)] == 0, freq
    # target frequency 1/6 = 0.167; measured 0.058 at gamma 1 and 0.001 unguided (this short budget)
    assert freq[("all", 1.0)] > 0.03 and freq[("all", 1.0)] > 10 * freq[("all", 0.0)], freq


# Early stopping of the conditional ratio on held-out target sequences (train_ratio_selected)

def _selected(data, steps=200):
    """The same short, over-long training (200 steps at lr 1e-2 on a small set) with and without selection."""
    cfg = TrainConfig(steps=steps, batch_size=32, lr=1e-2, seed=0)
    den = MarkovOracleDenoiser(SOURCE)
    torch.manual_seed(0)
    final = SequenceScorer(TrunkConfig(S, L, d_model=32, n_heads=4, n_layers=2, window=1))
    train_ratio_conditional(final, den, data, cfg, progress=False)
    torch.manual_seed(0)
    kept = SequenceScorer(TrunkConfig(S, L, d_model=32, n_heads=4, n_layers=2, window=1))
    selection = train_ratio_selected(kept, den, data, cfg, holdout=0.25, progress=False)
    return den, final, kept, selection


def _zero_ratio(z):
    return torch.zeros(z.shape[0])


def test_selection_keeps_the_weights_of_its_best_evaluation():
    data = TARGET.sample(40, L, generator=torch.Generator().manual_seed(0))
    den, _, kept, sel = _selected(data, steps=60)
    steps = [s for s, _ in sel.curve]
    assert steps[0] == 0 and steps[-1] == 60 and steps == sorted(steps), steps
    assert sel.nll == min(v for _, v in sel.curve) and (sel.step, sel.nll) in sel.curve, sel
    # the kept weights give the recorded NLL on the same held-out rows and masks
    _, held = split_holdout(data, 0.25, 0)
    held = held.repeat(-(-512 // held.shape[0]), 1)
    assert conditional_nll(kept, den, held, seed=1) == pytest.approx(sel.nll, abs=1e-5)


def test_selection_stops_a_ratio_that_fits_noise():
    """Negative control: the 'target' set is 8 source sequences, so the exact log-ratio is zero and whatever the
    ratio learns is noise. Measured on 2000 fresh source sequences: the unselected ratio's guided NLL 2.09 nats, the
    selected one 1.57 (it kept step 0), the zero ratio 1.57: the selection must keep it within 0.05 of the zero ratio,
    and an estimator that always kept the last step would fail by 0.5 nats."""
    den, final, kept, sel = _selected(SOURCE.sample(8, L, generator=torch.Generator().manual_seed(0)))
    fresh = SOURCE.sample(2000, L, generator=torch.Generator().manual_seed(1))
    zero, last, chosen = (conditional_nll(r, den, fresh) for r in (_zero_ratio, final, kept))
    assert chosen < zero + 0.05 and last > zero + 0.2, (chosen, zero, last, sel.step)


def test_selection_keeps_what_the_ratio_learned():
    """With 100 target sequences the ratio learns the target: measured on 2000 fresh target sequences the selected
    ratio's guided NLL is 0.99 nats (kept step 170 of 200), the unselected 0.99, the zero ratio (the source alone)
    2.08. An estimator that always kept step 0 would fail."""
    den, final, kept, sel = _selected(TARGET.sample(100, L, generator=torch.Generator().manual_seed(0)))
    fresh = TARGET.sample(2000, L, generator=torch.Generator().manual_seed(1))
    zero, last, chosen = (conditional_nll(r, den, fresh) for r in (_zero_ratio, final, kept))
    assert chosen < zero - 0.8 and chosen < last + 0.1, (chosen, zero, last, sel.step)


@pytest.mark.parametrize("n, fraction, message", [(1, 0.5, "at least 2 rows"), (10, 0.0, "fraction"),
                                                  (10, 1.0, "fraction")])
def test_split_holdout_rejects_what_it_cannot_split(n, fraction, message):
    with pytest.raises(ValueError, match=message):
        split_holdout(torch.zeros(n, L, dtype=torch.int64), fraction, 0)


def test_split_holdout_is_a_seeded_partition():
    data = torch.arange(20 * L).view(20, L)
    train, held = split_holdout(data, 0.2, 3)
    assert held.shape[0] == 4 and train.shape[0] == 16
    rows = sorted(r[0] // L for r in torch.cat([train, held]).tolist())
    assert rows == list(range(20))
    again_train, again_held = split_holdout(data, 0.2, 3)
    assert torch.equal(again_held, held) and torch.equal(again_train, train)
    assert not torch.equal(split_holdout(data, 0.2, 4)[1], held)
    # a tiny set keeps one row on each side
    assert [t.shape[0] for t in split_holdout(data[:2], 0.9, 0)] == [1, 1]
