"""The synthetic language (gtl_kernels.gtl.language): exact likelihoods, exact oracles, and the guided sampler on them.

The chi-square test uses a fixed seed; its false-failure rate is 1e-6 (the asymptotic chi-square law of the
Anderson-Goodman statistic for Markov transition counts, cells pooled to expected counts >= 5).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy import stats

from gtl_kernels.experiments import language as experiment
from gtl_kernels.gtl.language import (LanguageConfig, LeftToRightDenoiser, LeftToRightRatio, MarkovLanguage,
                                      make_language, sampler_conditional)
from gtl_kernels.gtl.samplers import ScheduledSampler

ALPHA = 1e-6


@pytest.fixture(autouse=True)
def one_thread():
    """These tests make many small tensor calls: one thread avoids oversubscribing a shared CPU (8x faster there)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_language() -> MarkovLanguage:
    """V = 3 chains small enough to compute by hand (see test_log_likelihood_by_hand)."""
    return MarkovLanguage(
        log_unigram=torch.tensor([0.5, 0.3, 0.2]).double().log(),
        log_init={"source": torch.tensor([0.5, 0.3, 0.2]).double().log(),
                  "target": torch.tensor([0.2, 0.3, 0.5]).double().log()},
        succ={"source": torch.tensor([[1], [2], [0]]), "target": torch.tensor([[1, 0], [2, 1], [0, 2]])},
        succ_prob={"source": torch.ones(3, 1).double(), "target": torch.tensor([[0.6, 0.4]] * 3).double()},
        target_only=torch.tensor([[0], [1], [2]]),
        background=0.1,
    )


def test_log_likelihood_by_hand():
    lang = tiny_language()
    x = torch.tensor([[0, 1, 1], [2, 0, 1]])
    # source rows: 0.9 on (u + 1) % 3 plus 0.1 * unigram; target: 0.9 * (0.6 on (u + 1) % 3, 0.4 on u) + 0.1 * unigram
    src = [math.log(0.5) + math.log(0.9 + 0.03) + math.log(0.03), math.log(0.2) + math.log(0.9 + 0.05) + math.log(0.93)]
    tgt = [math.log(0.2) + math.log(0.54 + 0.03) + math.log(0.36 + 0.03),
           math.log(0.5) + math.log(0.54 + 0.05) + math.log(0.54 + 0.03)]
    torch.testing.assert_close(lang.log_likelihood("source", x), torch.tensor(src, dtype=torch.float64))
    torch.testing.assert_close(lang.log_likelihood("target", x), torch.tensor(tgt, dtype=torch.float64))
    assert lang.target_only_share(x) == pytest.approx(1 / 4)  # 1 -> 1 is the one target-only transition of four
    with pytest.raises(ValueError, match="x must hold token ids"):
        lang.log_likelihood("target", torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="chain"):
        lang.log_likelihood("other", x)


def test_rows_are_distributions_and_match_pairs():
    lang = make_language(LanguageConfig(vocab=400, n_successors=12, n_target_only=4, seed=3))
    prev = torch.randint(400, (50,), generator=torch.Generator().manual_seed(0))
    for chain in ("source", "target"):
        rows = lang.log_rows(chain, prev)
        torch.testing.assert_close(rows.exp().sum(1), torch.ones(50, dtype=torch.float64))
        nxt = torch.randint(400, (50,), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(rows[torch.arange(50), nxt], lang.log_transition(chain, prev, nxt))
        torch.testing.assert_close(lang.log_init[chain].exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # target-only successors carry 1 - overlap of the target mass and only background mass in the source
    only = lang.target_only[prev]
    q = lang.log_rows("target", prev).exp().gather(1, only).sum(1)
    assert bool((q > 0.99 * 0.2).all())
    p = lang.log_rows("source", prev).exp().gather(1, only).sum(1)
    assert bool((p < 0.01).all())


def test_oracles_are_exact_and_refuse_other_orders():
    lang = make_language(LanguageConfig(vocab=300, n_successors=10, n_target_only=3, seed=1))
    mask = lang.vocab
    z = torch.full((3, 6), mask)
    z[0, :2] = torch.tensor([5, 7])
    z[1, :1] = torch.tensor([11])
    out = LeftToRightDenoiser(lang)(z, torch.ones(3))
    assert out.shape == (3, 6, mask + 1) and bool((out[:, :, mask] == -math.inf).all())
    torch.testing.assert_close(out[0, 2, :mask], lang.log_rows("source", torch.tensor([7]))[0].float())
    torch.testing.assert_close(out[1, 1, :mask], lang.log_rows("source", torch.tensor([11]))[0].float())
    torch.testing.assert_close(out[2, 0, :mask], lang.log_init["source"].float())
    cand = z[0:1].repeat(4, 1)
    cand[:, 2] = torch.tensor([1, 2, 3, 4])
    r = LeftToRightRatio(lang)(cand)
    # the ratio of whole prefixes, log q(x) - log p(x), differs from it by one constant across siblings
    full = lang.log_likelihood("target", cand[:, :3]) - lang.log_likelihood("source", cand[:, :3])
    torch.testing.assert_close((r - r[0]).double(), full - full[0], atol=1e-5, rtol=0)
    bad = z.clone()
    bad[2, 3] = 4  # a revealed token after a mask: not a left-to-right state
    with pytest.raises(ValueError, match="prefix"):
        LeftToRightDenoiser(lang)(bad, torch.ones(3))
    with pytest.raises(ValueError, match="prefix"):
        LeftToRightRatio(lang)(bad)


def _transition_chi2(lang, x: torch.Tensor, chain: str) -> tuple[float, int]:
    """Anderson-Goodman chi-square of the transitions of ``x`` (and its first tokens) against ``chain``: per left
    neighbour, tokens with expected count >= 5 are cells of their own, the rest pooled (pooled into the smallest
    cell when the pool's expected count is below 5). Returns (statistic, degrees of freedom)."""
    groups = [(lang.log_init[chain].exp(), x[:, 0])]
    prev, nxt = x[:, :-1].reshape(-1), x[:, 1:].reshape(-1)
    for u in prev.unique().tolist():
        sel = prev == u
        groups.append((lang.log_rows(chain, torch.tensor([u]))[0].exp(), nxt[sel]))
    stat, df = 0.0, 0
    for probs, drawn in groups:
        n = len(drawn)
        expected = n * probs
        counts = torch.bincount(drawn, minlength=len(probs)).double()
        big = expected >= 5
        if int(big.sum()) == 0:
            continue
        e = torch.cat([expected[big], expected[~big].sum().view(1)])
        o = torch.cat([counts[big], counts[~big].sum().view(1)])
        if e[-1] < 5:
            i = int(e[:-1].argmin())
            e[i], o[i] = e[i] + e[-1], o[i] + o[-1]
            e, o = e[:-1], o[:-1]
        if len(e) < 2:
            continue
        stat += float(((o - e) ** 2 / e).sum())
        df += len(e) - 1
    return stat, df


def test_exact_guidance_reproduces_the_target_chain():
    lang = make_language(LanguageConfig(vocab=200, n_successors=8, n_target_only=3, seed=2))
    den, rat = LeftToRightDenoiser(lang), LeftToRightRatio(lang)
    pvalues = {}
    for gamma in (1.0, 0.0):  # gamma = 0: the source chain, the negative control
        sampler = ScheduledSampler(den, lang.vocab, rat, order="left_to_right", n_ratio=lang.vocab, top_k=0,
                                   gamma=gamma)
        x, _ = sampler(256, 24, seed=7, batch_size=256)
        stat, df = _transition_chi2(lang, x, "target")
        pvalues[gamma] = float(stats.chi2.sf(stat, df))
        assert df > 50
    assert pvalues[1.0] > ALPHA, pvalues
    assert pvalues[0.0] < ALPHA, pvalues


def test_candidates_limit_what_guidance_can_draw():
    """With n_ratio = 4 every drawn token is among the source row's 4 most likely (and the analytic law the
    experiment scores with says so too); the target row is the law only for all candidates, no top-K, gamma = 1."""
    lang = make_language(LanguageConfig(vocab=300, n_successors=10, n_target_only=3, seed=4))
    sampler = ScheduledSampler(LeftToRightDenoiser(lang), lang.vocab, LeftToRightRatio(lang), order="left_to_right",
                               n_ratio=4, top_k=0)
    x, _ = sampler(32, 10, seed=3, batch_size=32)
    prev, nxt = x[:, :-1].reshape(-1), x[:, 1:].reshape(-1)
    top4 = lang.log_rows("source", prev).topk(4, dim=1).indices
    assert bool((top4 == nxt.unsqueeze(1)).any(1).all())
    law = sampler_conditional(lang, prev, len(prev), n_ratio=4)
    assert bool((law[torch.arange(len(prev)), nxt] > -math.inf).all())
    assert int((law > -math.inf).sum(1).max()) == 4
    exact = sampler_conditional(lang, prev[:5], 5, n_ratio=None, top_k=0, gamma=1.0)
    torch.testing.assert_close(exact, lang.log_rows("target", prev[:5]))


def test_command_runs_small(tmp_path):
    rc = experiment.main(["--vocab", "300", "--length", "8", "--samples", "4", "--reference-samples", "16",
                          "--n-ratio", "4", "0", "--top-k", "0", "2", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "language.json").read_text())
    rows = {r["setting"]: r for r in res["rows"]}
    assert set(rows) == {"unguided", "gtl[n_ratio=4,top_k=0]", "gtl[n_ratio=all,top_k=0]",
                         "gtl[n_ratio=4,top_k=2]", "gtl[n_ratio=all,top_k=2]"}
    assert abs(rows["gtl[n_ratio=all,top_k=0]"]["kl_rate"]) < 1e-6  # exact guidance samples the target
    assert rows["unguided"]["kl_rate"] > 0.01
    assert rows["gtl[n_ratio=4,top_k=0]"]["ratio_passes_per_seq"] == 4 * 8
    assert (tmp_path / "language-n_ratio.png").stat().st_size > 0


def test_ratio_scores_substitutions_as_it_scores_whole_sequences():
    """``score_substitutions`` (no candidate sequences built) equals the whole-sequence call on every substitution,
    at the first position and later ones, and rejects a substitution that is not a left-to-right state."""
    lang = make_language(LanguageConfig(vocab=300, n_successors=12, n_target_only=3, seed=4))
    mask = lang.vocab
    z = torch.full((3, 6), mask)
    z[0, :2] = torch.tensor([5, 9])
    z[1, :4] = torch.tensor([1, 2, 3, 4])
    seq, pos = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 4, 0, 2])
    cand = torch.randint(0, mask, (4, 7), generator=torch.Generator().manual_seed(2))
    rat = LeftToRightRatio(lang)
    got = rat.score_substitutions(z, seq, pos, cand)
    subs = z[seq].unsqueeze(1).repeat(1, 7, 1)
    subs[torch.arange(4)[:, None], torch.arange(7)[None, :], pos[:, None]] = cand
    want = rat(subs.view(-1, 6)).view(4, 7)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="prefix"):
        rat.score_substitutions(z, torch.tensor([1]), torch.tensor([2]), cand[:1])  # revealed tokens after pos 2


def test_sparse_sampler_follows_the_chain():
    """``sample_sparse`` (background-or-successor draws, no dense rows) has the chain's law: the transition chi-square
    against its own chain passes and against the other chain fails."""
    lang = make_language(LanguageConfig(vocab=200, n_successors=8, n_target_only=3, seed=2))
    x = lang.sample_sparse("target", 256, 24, seed=5)
    stat, df = _transition_chi2(lang, x, "target")
    assert df > 50 and float(stats.chi2.sf(stat, df)) > ALPHA
    stat, df = _transition_chi2(lang, x, "source")
    assert float(stats.chi2.sf(stat, df)) < ALPHA


def test_token_nll_of_exact_guidance_is_the_target_log_likelihood():
    """The scheduled sampler records each drawn token's log-probability under the law it was drawn from: with exact
    guidance (left-to-right, all candidates, gamma = 1) that law is the target row, so the recorded mean equals
    ``-log q(x) / (N L)`` of the very samples; unguided, ``-log p(x) / (N L)``."""
    lang = make_language(LanguageConfig(vocab=200, n_successors=8, n_target_only=3, seed=2))
    for gamma, chain in ((1.0, "target"), (0.0, "source")):
        sampler = ScheduledSampler(LeftToRightDenoiser(lang), lang.vocab, LeftToRightRatio(lang),
                                   order="left_to_right", n_ratio=lang.vocab, gamma=gamma)
        x, st = sampler(32, 12, seed=1, batch_size=16)
        assert st.tokens_drawn == x.numel()
        want = -float(lang.log_likelihood(chain, x).sum()) / x.numel()
        assert st.token_nll() == pytest.approx(want, rel=1e-4)


def test_learned_mode_runs_small(tmp_path):
    """``gtl-language learned`` end to end at V = 300, L = 6: every method and reference is scored, finite, and the
    exact scorer ranks what it must (true target above true source on the target chain; a trained denoiser above
    the untrained one)."""
    rc = experiment.main(["learned", "--vocab", "300", "--length", "6", "--n-source", "400", "--target-budget", "40",
                          "--fractions", "0.25", "1", "--samples", "16", "--reference-samples", "64",
                          "--denoiser-steps", "60", "--vanilla-steps", "5", "--finetune-steps", "5",
                          "--ratio-steps", "5", "--classifier-steps", "5", "--planner-steps", "5", "--n-ratio", "16",
                          "--ratio-candidates", "8", "--d-model", "32", "--ratio-d-model", "16", "--lr", "1e-2",
                          "--batch-size", "32", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "language-learned.json").read_text())
    rows = {(r["method"], r["fraction"]): r for r in res["rows"]}
    want = {("untrained", None), ("source model", None), ("source model/top-16", None)}
    for f in (0.25, 1.0):
        want |= {(m, f) for m in ("vanilla", "finetuned", "finetuned/top-16", "gtl[conditional]", "gtl[paper]")}
    want |= {("gtl[conditional]/max_prob", 0.25), ("gtl[conditional]/planner", 0.25)}
    assert set(rows) == want
    for r in res["rows"]:
        assert all(math.isfinite(r[k]) for k in ("target_ll", "source_ll", "entropy", "target_only_share"))
        assert r["entropy"] > 0
    ref = res["references"]
    assert ref["target"]["target_ll"] > ref["source"]["target_ll"]
    assert ref["source"]["source_ll"] > ref["target"]["source_ll"]
    assert abs(ref["target"]["entropy"] - ref["target"]["entropy_exact"]) < 0.5
    assert rows[("source model", None)]["source_ll"] > rows[("untrained", None)]["source_ll"] + 0.5
    assert rows[("finetuned", 1.0)]["target_ll"] > rows[("untrained", None)]["target_ll"]
    assert "goal_met" in res["summary"]["gtl[conditional]"]
    assert (tmp_path / "language-learned.png").stat().st_size > 0
