"""GTL models and training: SUBS parameterization, the MDLM loss, the ratio estimators, and an end-to-end smoke run
of the Markov experiment (tiny sizes)."""

import dataclasses
import json
import math

import pytest
import torch

from gtl_kernels.gtl.chains import MarkovChain, MarkovOracleDenoiser, MarkovOracleRatio, load_matrix
from gtl_kernels.gtl.nets import Denoiser, Planner, ScorerEnsemble, SequenceScorer, TrunkConfig
from gtl_kernels.gtl.samplers import one_token_substitutions
from gtl_kernels.gtl.schedule import LogLinearSchedule, forward_mask, mdlm_loss, sample_times
from gtl_kernels.gtl.training import (TrainConfig, conditional_nll, train_denoiser, train_domain_classifier,
                                      train_planner, train_ratio_classifier, train_ratio_conditional,
                                      train_ratio_paper)

S, L = 4, 8
CFG = TrunkConfig(S, L, d_model=16, n_heads=2, n_layers=1)
SOURCE, TARGET = MarkovChain.sticky(S, 0.1), MarkovChain.sticky(S, 0.8)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return SOURCE.sample(256, L, generator=g), TARGET.sample(16, L, generator=g)


def test_denoiser_subs_parameterization():
    torch.manual_seed(0)
    den = Denoiser(CFG)
    z = torch.tensor([[0, S, 2, S, S, 1, 3, S]])
    logp = den(z, torch.tensor([0.5]))
    assert logp.shape == (1, L, S + 1) and logp.dtype == torch.float32
    assert torch.isinf(logp[..., S]).all() and (logp[..., S] < 0).all()  # the mask gets no probability
    assert torch.allclose(logp.exp().sum(-1), torch.ones(1, L))
    for l in range(L):
        if z[0, l] != S:  # unmasked positions are copied
            assert logp[0, l, z[0, l]] == 0


def _substitution_case(positional, window, layers, length, seed=0, edges=False):
    """A float64 scorer with weights large enough that every token matters, and substitutions at both ends and
    inside (repeated sequences, positions at 0 and L - 1)."""
    torch.manual_seed(seed)
    cfg = TrunkConfig(6, length, 32, 4, layers, window=window, positional=positional, edges=edges)
    model = SequenceScorer(cfg).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    z = torch.randint(0, 7, (5, length))  # 6 tokens and the mask
    seq = torch.tensor([0, 1, 1, 4, 2, 3, 0])
    pos = torch.tensor([0, length - 1, 3, length // 2, 1, length - 2, 2])
    cand = torch.randint(0, 6, (7, 6))
    return model, z, seq, pos, cand


def _whole_sequences(model, z, seq, pos, cand):
    return model(one_token_substitutions(z[seq], pos, cand).view(-1, z.shape[1])).view(cand.shape)


@pytest.mark.parametrize("positional,edges", [("relative", False), ("rotary", False), ("relative", True)])
@pytest.mark.parametrize("window,layers,length", [(1, 2, 20), (2, 1, 12), (1, 3, 30), (1, 2, 9)])
def test_score_substitutions_is_the_scorer_on_each_substituted_sequence(positional, edges, window, layers, length):
    """The local-attention shortcut (trunk on each sequence once, then per candidate each block at its changed
    positions only) gives the whole-sequence scores and gradients, with substitutions at both ends and inside, and
    on sequences no longer than the changed region (L = 9); with edge embeddings too (substitutions at 0 and
    L - 1 carry them)."""
    model, z, seq, pos, cand = _substitution_case(positional, window, layers, length, edges=edges)
    got, want = model.score_substitutions(z, seq, pos, cand), _whole_sequences(model, z, seq, pos, cand)
    assert want.std() > 1e-2  # the candidates' scores differ, so a wrong region cannot agree by accident
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    params = list(model.parameters())
    g_got = torch.autograd.grad(got.double().square().sum(), params, allow_unused=True)
    g_want = torch.autograd.grad(want.double().square().sum(), params, allow_unused=True)
    for a, b in zip(g_got, g_want):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_score_substitutions_comparison_has_power():
    """Negative control: a changed region that does not grow with depth (only ``pos`` itself recomputed, the
    neighbours' changes ignored) disagrees with the whole-sequence scores, so the comparison above detects a region
    too small."""
    model, z, seq, pos, cand = _substitution_case("relative", 1, 2, 20)
    want = _whole_sequences(model, z, seq, pos, cand)
    got = model._score_substitutions_locally(z, seq, pos, cand, reach=0)
    assert (got - want).abs().max() > 1e-3


def test_edge_embeddings_start_neutral_and_reach_only_the_ends():
    """``edges``: at initialization the trunk is the plain one (same weights, same features); once the edge vectors
    are non-zero they change the features near the two ends only (2 blocks of window 1: positions 0-2 and L-3..L-1),
    so they tell the start and the end from the inside, which a translation-invariant local network cannot."""
    torch.manual_seed(0)
    cfg = TrunkConfig(6, 12, 16, 2, 2, window=1)
    plain = SequenceScorer(cfg).double()
    edged = SequenceScorer(dataclasses.replace(cfg, edges=True)).double()
    missing, unexpected = edged.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["trunk.edge"] and not unexpected
    z = torch.randint(0, 7, (4, 12))
    torch.testing.assert_close(edged.trunk(z), plain.trunk(z), rtol=0, atol=0)
    with torch.no_grad():
        edged.trunk.edge.normal_()
    diff = (edged.trunk(z) - plain.trunk(z)).abs().amax(dim=(0, 2))  # per position
    assert (diff[:3] > 1e-3).all() and (diff[-3:] > 1e-3).all(), diff
    assert (diff[3:-3] < 1e-12).all(), diff


def test_score_substitutions_only_for_local_attention_without_training_dropout():
    """Global attention, or dropout in training mode (its masks would differ from a whole-sequence pass): no
    shortcut, so the callers build the substituted sequences (RatioScorer in chunks)."""
    assert SequenceScorer(TrunkConfig(6, 20, 16, 2, 2)).score_substitutions is None
    dropped = SequenceScorer(TrunkConfig(6, 20, 16, 2, 2, window=1, dropout=0.5))
    assert dropped.train().score_substitutions is None
    assert dropped.eval().score_substitutions is not None


def test_scorer_ensemble_is_the_mean_of_its_members():
    """``ScorerEnsemble`` (ratio ensembles): the whole-sequence score and the substitution shortcut are the mean of
    the members', agree with each other, and differ from any one member (so an ensemble that used one member would
    fail); with a global-attention member there is no shortcut."""
    members = [_substitution_case("relative", 1, 1, 20, seed=seed)[0].eval() for seed in range(3)]
    ens = ScorerEnsemble(members).eval()
    _, z, seq, pos, cand = _substitution_case("relative", 1, 1, 20)
    want = torch.stack([_whole_sequences(m, z, seq, pos, cand) for m in members]).mean(0)
    torch.testing.assert_close(_whole_sequences(ens, z, seq, pos, cand), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(ens.score_substitutions(z, seq, pos, cand), want, rtol=0, atol=1e-6)
    for m in members:
        assert (_whole_sequences(m, z, seq, pos, cand) - want).abs().max() > 1e-3
    assert ScorerEnsemble(members + [SequenceScorer(TrunkConfig(6, 20, 16, 2, 1)).double()]).score_substitutions is None


def test_schedule_and_mdlm_loss():
    sch = LogLinearSchedule()
    assert sch.mask_prob(1.0) == pytest.approx(1 - 1e-3)
    assert sch.stay_prob(0.5, 0.25) == pytest.approx(0.5) and sch.stay_prob(0.5, 0.0) == 0.0
    t = sample_times(1000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 1e-3 and t.max() <= 1 and abs(float(t.mean()) - 0.5) < 0.01  # stratified
    x0 = torch.randint(0, S, (1000, L))
    z = forward_mask(x0, torch.full((1000,), 0.3), S, generator=torch.Generator().manual_seed(1))
    assert abs(float((z == S).float().mean()) - 0.3) < 0.02 and ((z == S) | (z == x0)).all()
    # The exact denoiser of i.i.d. uniform data has loss = E[(1/t) * #masked / L] * log S = (1 - eps) log S.
    uniform = torch.full((1000, L, S + 1), -math.log(S))
    uniform[..., S] = -math.inf
    t = sample_times(1000, generator=torch.Generator().manual_seed(2))
    z = forward_mask(x0, sch.mask_prob(t), S, generator=torch.Generator().manual_seed(3))
    assert float(mdlm_loss(uniform, x0, z, t, S, sch)) == pytest.approx(math.log(S), rel=0.1)


def test_denoiser_training_lowers_the_loss(data):
    xs, _ = data
    torch.manual_seed(0)
    den = Denoiser(CFG)
    hist = train_denoiser(den, xs, TrainConfig(steps=60, batch_size=64, lr=3e-3), progress=False)
    assert all(math.isfinite(h) for h in hist)
    assert sum(hist[-10:]) / 10 < sum(hist[:10]) / 10


def test_ratio_estimators_and_planner_run(data):
    xs, xt = data
    torch.manual_seed(0)
    cfg = TrainConfig(steps=5, batch_size=32)
    den = MarkovOracleDenoiser(SOURCE)
    for train in (
        lambda r: train_ratio_conditional(r, den, xt, cfg, progress=False),
        lambda r: train_ratio_conditional(r, den, xt, cfg, n_candidates=2, source=xs, classifier_weight=1.0,
                                          progress=False),
        lambda r: train_ratio_classifier(r, xs, xt, cfg, mask_id=S, progress=False),
    ):
        r = SequenceScorer(CFG)
        assert all(math.isfinite(h) for h in train(r))
        assert r(xt).shape == (16,)
    clean, noisy, ratio = SequenceScorer(CFG), SequenceScorer(CFG), SequenceScorer(CFG)
    train_domain_classifier(clean, xs, xt, cfg, noisy=False, mask_id=S, label_smoothing=0.1, progress=False)
    train_domain_classifier(noisy, xs, xt, cfg, noisy=True, mask_id=S, progress=False)
    assert all(math.isfinite(h) for h in train_ratio_paper(ratio, xs, xt, clean, noisy, cfg, mask_id=S,
                                                           progress=False))
    planner = Planner(CFG)
    train_planner(planner, Denoiser(CFG), xs, cfg, progress=False)
    assert planner(xs[:3]).shape == (3, L)


def test_conditional_nll_ranks_the_exact_ratio_first(data):
    _, xt = data
    held = TARGET.sample(300, L, generator=torch.Generator().manual_seed(5))
    den = MarkovOracleDenoiser(SOURCE)
    exact = conditional_nll(MarkovOracleRatio(SOURCE, TARGET), den, held)
    unguided = conditional_nll(lambda z: torch.zeros(z.shape[0]), den, held)
    assert exact < unguided - 0.5


def test_load_matrix(tmp_path):
    m = [[0.25, 0.75], [0.5, 0.5]]
    (tmp_path / "m.json").write_text(json.dumps(m))
    (tmp_path / "m.txt").write_text("0.25 0.75\n0.5 0.5\n")
    (tmp_path / "m.csv").write_text("0.25,0.75\n0.5,0.5\n")
    for name in ("m.json", "m.txt", "m.csv"):
        assert torch.allclose(load_matrix(tmp_path / name), torch.tensor(m, dtype=torch.float64))


@pytest.mark.parametrize("text, message", [
    ("0.5 0.5 0\n0.5 0.5 0\n", "square"),
    ("0.5 0.5\n-0.1 1.1\n", "row 1 has a negative entry"),
    ("0.5 0.5\n0.3 0.6\n", "row 1 sums to 0.9"),
    ("1 3\n2 2\n", "row 0 sums to 4"),  # counts are not a transition matrix
    ("0.5 nan\n0.5 0.5\n", "row 0 has a non-finite entry"),
])
def test_load_matrix_rejects_bad_matrices(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_matrix(path)
    assert str(path) in str(err.value)


def test_gtl_markov_rejects_a_bad_matrix_file_before_training(tmp_path, capsys):
    from gtl_kernels.experiments.markov import run

    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("0.5 0.5\n0.5 0.5\n")
    bad.write_text("0.5 0.5\n0.2 0.7\n")
    with pytest.raises(SystemExit, match=r"bad\.txt: row 1 sums to 0\.9"):
        run(["--source-matrix", str(good), "--target-matrix", str(bad), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"good\.txt: a 2-state matrix, but --states is 3"):
        run(["--states", "3", "--source-matrix", str(good), "--target-matrix", str(good),
             "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


def test_markov_experiment_end_to_end(tmp_path):
    from gtl_kernels.experiments.markov import run

    out = run(["--n-source", "200", "--n-target", "20", "8", "--length", "8", "--samples", "40",
                "--d-model", "16", "--heads", "2", "--layers", "1", "--ratio-layers", "1", "--batch-size", "32",
                "--ratio-batch", "16", "--denoiser-steps", "4", "--vanilla-steps", "2", "--finetune-steps", "2",
                "--ratio-steps", "2", "--classifier-steps", "2", "--planner-steps", "2", "--order", "planner",
                "--ratio-loss", "conditional", "paper", "--methods", "vanilla", "finetuned", "gtl", "oracle",
                "--out", str(tmp_path), "--no-progress", "--threads", "1"])
    assert (tmp_path / "markov.json").exists() and (tmp_path / "markov.png").stat().st_size > 0
    written = json.loads((tmp_path / "markov.json").read_text())
    agg = written["aggregate"]
    assert set(agg) == {"20", "8"}
    # what the trained networks' last bits depend on is recorded beside them
    assert written["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert written["machine"]["torch"] == torch.__version__
    assert set(agg["8"]) == {"vanilla", "finetuned", "gtl[conditional]", "gtl[paper]", "oracle"}
    assert out["per_seed"][0]["20"]["gtl[paper]"]["sampler"]["planner_passes"] == 40 * 8


def test_markov_seeds_in_worker_processes_match_one_process(tmp_path):
    """``--jobs`` only changes where seeds run: per-seed results equal the single-process run's."""
    from gtl_kernels.experiments.markov import run

    common = ["--n-source", "100", "--n-target", "8", "--length", "6", "--samples", "30", "--d-model", "16",
              "--heads", "2", "--layers", "1", "--ratio-layers", "1", "--batch-size", "16", "--ratio-batch", "8",
              "--denoiser-steps", "3", "--vanilla-steps", "2", "--finetune-steps", "2", "--ratio-steps", "2",
              "--order", "left_to_right", "max_prob", "--seeds", "3", "4", "--no-progress", "--threads", "1"]
    one = run(common + ["--jobs", "1", "--out", str(tmp_path / "one")])
    two = run(common + ["--jobs", "2", "--out", str(tmp_path / "two")])
    assert set(one["aggregate"]["8"]) == {"vanilla", "finetuned", "gtl/left_to_right", "gtl/max_prob"}
    for a, b in zip(one["per_seed"], two["per_seed"]):
        for method, r in a["8"].items():
            assert torch.equal(r["matrix"], b["8"][method]["matrix"]), method
    assert not torch.equal(one["per_seed"][0]["8"]["gtl/max_prob"]["matrix"],
                           one["per_seed"][1]["8"]["gtl/max_prob"]["matrix"])  # the seeds differ


def test_failure_mode_end_to_end(tmp_path):
    from gtl_kernels.experiments.markov import run

    out = run(["failure", "--n-source", "200", "--failure-n", "10", "--length", "8", "--samples", "30",
               "--d-model", "16", "--heads", "2", "--layers", "1", "--ratio-layers", "1", "--batch-size", "32",
               "--ratio-batch", "16", "--denoiser-steps", "3", "--ratio-steps", "2", "--failure-gammas", "0", "4",
               "--out", str(tmp_path), "--no-progress", "--threads", "1"])
    rows = out["rows"]
    # no-overlap pair: 2 candidate sets x 2 gammas; control pair: 1 x 2
    assert len(rows) == 6 and (tmp_path / "failure.png").exists()
    assert {r["candidates"] for r in rows if r["pair"] == "no overlap"} == {"all", "top-5"}
    assert all(r["new_state_freq"] != r["new_state_freq"] for r in rows if r["pair"] == "control")  # NaN: no new state
