"""The Markov experiment's cells are reproducible: a cell's result does not depend on which other target sizes,
methods or estimators the same run computes (every random draw is keyed by seed, component and n)."""

import pytest
import torch

from gtl_kernels.experiments.markov import TARGET_BLOCK, draw_target, run
from gtl_kernels.gtl.chains import MarkovChain

TINY = ["--n-source", "120", "--length", "6", "--samples", "30", "--d-model", "16", "--heads", "2", "--layers", "1",
        "--ratio-layers", "1", "--batch-size", "16", "--ratio-batch", "8", "--denoiser-steps", "3",
        "--vanilla-steps", "2", "--finetune-steps", "2", "--ratio-steps", "2", "--classifier-steps", "2",
        "--seeds", "7", "--jobs", "1", "--no-progress", "--threads", "1"]


def _cells(out: dict) -> dict:
    return out["per_seed"][0]


def _same(a: dict, b: dict) -> None:
    assert torch.equal(a["matrix"], b["matrix"])
    assert a["metrics"] == b["metrics"]


def test_target_sets_are_nested_and_prefix_stable():
    chain = MarkovChain.sticky(4, 0.7)
    big = draw_target(chain, TARGET_BLOCK + 50, 5, seed=3)
    assert torch.equal(draw_target(chain, 20, 5, seed=3), big[:20])
    assert torch.equal(draw_target(chain, 100, 5, seed=3), big[:100])
    assert not torch.equal(draw_target(chain, 20, 5, seed=4), big[:20])


def test_a_subset_of_target_sizes_reproduces_its_cells(tmp_path):
    one = _cells(run(TINY + ["--n-target", "20", "--out", str(tmp_path / "a")]))
    two = _cells(run(TINY + ["--n-target", "100", "20", "--out", str(tmp_path / "b")]))
    assert set(one["20"]) == {"vanilla", "finetuned", "gtl"}
    for method in one["20"]:
        _same(one["20"][method], two["20"][method])
    # and the cells are not all alike: n = 100 differs from n = 20
    assert not torch.equal(two["100"]["gtl"]["matrix"], two["20"]["gtl"]["matrix"])


def test_a_subset_of_methods_and_estimators_reproduces_its_cells(tmp_path):
    every = _cells(run(TINY + ["--n-target", "20", "--methods", "vanilla", "finetuned", "gtl", "--ratio-loss",
                               "conditional", "paper", "--out", str(tmp_path / "a")]))
    gtl = _cells(run(TINY + ["--n-target", "20", "--methods", "gtl", "--out", str(tmp_path / "b")]))
    paper = _cells(run(TINY + ["--n-target", "20", "--methods", "gtl", "--ratio-loss", "paper",
                               "--out", str(tmp_path / "c")]))
    assert set(gtl["20"]) == {"gtl"}
    _same(gtl["20"]["gtl"], every["20"]["gtl[conditional]"])
    _same(paper["20"]["gtl"], every["20"]["gtl[paper]"])


def test_paper_values_only_for_the_papers_pair(tmp_path, capsys):
    custom = run(TINY + ["--n-target", "8", "--methods", "gtl", "--target-diag", "0.7", "--out", str(tmp_path)])
    header = next(line for line in capsys.readouterr().out.splitlines() if "mean diag" in line)
    assert custom["paper"] is None and "paper" not in header
    paper = run(TINY + ["--n-target", "8", "--methods", "gtl", "--out", str(tmp_path)])
    header = next(line for line in capsys.readouterr().out.splitlines() if "mean diag" in line)
    assert paper["paper"] is not None and "paper" in header


def test_suite_smoke(tmp_path):
    """The suite runs every method and the oracle on dev and test pairs and counts wins per split and n."""
    from gtl_kernels.experiments.suite import ORACLE_ALPHA, family

    pairs = family()
    assert {p["split"] for p in pairs} == {"dev", "test"} and sum(p["split"] == "dev" for p in pairs) == 4
    assert all(4 <= p["states"] <= 8 for p in pairs)
    out = run(["suite"] + TINY + ["--split", "all", "--quick", "--n-target", "8", "--out", str(tmp_path)])
    assert (tmp_path / "suite.json").exists() and (tmp_path / "suite.png").stat().st_size > 0
    methods = {r["method"] for r in out["rows"]}
    assert methods == {"vanilla", "finetuned", "gtl", "oracle"}
    assert {r["split"] for r in out["rows"]} == {"dev", "test"}
    assert {r["seed"] for r in out["rows"] if r["split"] == "dev"} != {r["seed"] for r in out["rows"]
                                                                       if r["split"] == "test"}
    assert all("ratio_slope" in r for r in out["rows"] if r["method"] == "gtl")
    assert out["summary"]["test"]["8"]["pairs"] == 1
    # the oracle samples the target exactly: it passes the fit test (each cell fails with probability ORACLE_ALPHA)
    assert all(r["fit_pvalue"] >= ORACLE_ALPHA for r in out["rows"] if r["method"] == "oracle")
    assert all(out["summary"][split]["8"]["oracle_within_noise"] == 1 for split in ("dev", "test"))


def test_second_dev_draw_covers_every_kind_and_never_a_test_pair(tmp_path):
    """``--split dev2``: another draw of all 12 source/target kinds, every pair a dev pair (run with the dev seeds),
    none equal to a test pair; the first family and its split are unchanged by it."""
    from gtl_kernels.experiments.suite import DEV_SEEDS, SOURCE_KINDS, TARGET_KINDS, family, second_dev_draw

    out = run(["suite"] + TINY + ["--split", "dev2", "--quick", "--n-target", "8", "--methods", "gtl",
                                  "--out", str(tmp_path)])
    assert {r["split"] for r in out["rows"]} == {"dev2"} and {r["seed"] for r in out["rows"]} == set(DEV_SEEDS)
    assert all(r["pair"].endswith("#2") for r in out["rows"]) and out["summary"]["dev2"]["8"]["pairs"] == 2

    first, second = family(), second_dev_draw()
    assert [p["name"] for p in first] == [f"{s}->{t}" for t in TARGET_KINDS for s in SOURCE_KINDS]
    assert [p["name"] for p in second] == [f"{s}->{t}#2" for t in TARGET_KINDS for s in SOURCE_KINDS]
    assert {p["split"] for p in second} == {"dev2"} and sum(p["split"] == "dev" for p in first) == 4
    for a in second:
        for b in first:
            assert a["target"].trans.shape != b["target"].trans.shape or not torch.equal(a["target"].trans,
                                                                                          b["target"].trans)


def test_paper_preset_sets_the_papers_setup_and_explicit_options_win():
    from gtl_kernels.experiments.markov import build_parser, parse_args

    args = parse_args(build_parser(), ["--preset", "paper"])
    assert (args.d_model, args.heads, args.layers, args.ratio_layers) == (256, 4, 4, 2)
    assert (args.ratio_loss, args.sampler, args.steps, args.anc_mode) == (["paper"], "ancestral", 20, "exact")
    assert set(args.epochs.values()) == {30.0}
    mine = parse_args(build_parser(), ["--preset", "paper", "--gamma", "1.5", "--epochs", "30", "ratio=2"])
    assert mine.gamma == 1.5 and mine.epochs["ratio"] == 2.0 and mine.epochs["denoiser"] == 30.0
    assert parse_args(build_parser(), []).epochs is None and parse_args(build_parser(), []).d_model == 32


def test_epoch_budgets_count_passes_over_each_components_data(tmp_path):
    """With --epochs a component's steps are E passes over its own training set, in batches of at most its size;
    fine-tuning gets twice the passes when the target set is under half the source set (the authors' scaling)."""
    out = run(TINY + ["--n-target", "20", "--ratio-loss", "paper", "--epochs", "2", "denoiser=1", "--batch-size", "16",
                      "--out", str(tmp_path)])
    b = out["per_seed"][0]["_budgets"]
    assert b["source denoiser"] == {"steps": 8, "batch": 16}  # ceil(120 / 16) = 8 batches, 1 pass
    assert b["vanilla 20"] == {"steps": 4, "batch": 16}  # ceil(20 / 16) = 2 batches, 2 passes
    assert b["finetuned 20"] == {"steps": 8, "batch": 16}  # 4 passes: 120 / 20 source per target, capped at 2x
    assert b["ratio 20"] == {"steps": 16, "batch": 16}  # the paper's recipe passes over the 120 source sequences
    assert b["clean classifier 20"] == b["noisy classifier 20"] == {"steps": 18, "batch": 16}  # 140 sequences


def test_bad_epochs_are_usage_errors(capsys):
    import pytest

    for bad in (["ratio=3"], ["3", "foo=2"], ["-1"], ["3", "ratio=x"]):
        with pytest.raises(SystemExit):
            run(["--epochs", *bad])
        assert "--epochs" in capsys.readouterr().err


def test_exact_part_methods_swap_one_learned_part_and_leave_gtl_unchanged(tmp_path):
    """gtl-exact-denoiser (learned ratio, exact source denoiser) and gtl-exact-ratio (learned denoiser, exact ratio)
    are extra cells: GTL's own cell is the same with or without them."""
    both = _cells(run(TINY + ["--n-target", "20", "--methods", "gtl", "gtl-exact-denoiser", "gtl-exact-ratio",
                              "--out", str(tmp_path / "a")]))
    gtl = _cells(run(TINY + ["--n-target", "20", "--methods", "gtl", "--out", str(tmp_path / "b")]))
    assert set(both["20"]) == {"gtl", "gtl-exact-denoiser", "gtl-exact-ratio"}
    _same(both["20"]["gtl"], gtl["20"]["gtl"])
    assert not torch.equal(both["20"]["gtl-exact-ratio"]["matrix"], both["20"]["gtl"]["matrix"])
    assert not torch.equal(both["20"]["gtl-exact-denoiser"]["matrix"], both["20"]["gtl"]["matrix"])


def test_oracle_samples_once_and_scores_at_every_n(tmp_path):
    """The oracle (exact parts) does not depend on the target set: one sampling, the same transition matrix and
    fit at every n, the copy rate per n; and the same cells as a run with one n."""
    out = run(TINY + ["--n-target", "20", "10", "--methods", "oracle", "--out", str(tmp_path / "a")])
    cells = _cells(out)
    assert torch.equal(cells["20"]["oracle"]["matrix"], cells["10"]["oracle"]["matrix"])
    assert cells["20"]["oracle"]["metrics"]["fit_pvalue"] == cells["10"]["oracle"]["metrics"]["fit_pvalue"]
    assert [k for k in cells["_timings"] if k.startswith("sample oracle")] == ["sample oracle 20"]
    alone = _cells(run(TINY + ["--n-target", "10", "--methods", "oracle", "--out", str(tmp_path / "b")]))
    _same(alone["10"]["oracle"], cells["10"]["oracle"])
    assert set(cells["10"]["oracle"]) == {"metrics", "matrix", "sampler"}  # no samples carried into the results


def test_ratio_holdout_records_its_selection_and_leaves_the_baselines(tmp_path):
    one = ["--n-target", "20", "--ratio-steps", "6", "--ratio-ensemble", "1"]
    plain = _cells(run(TINY + one + ["--out", str(tmp_path / "a")]))
    held = _cells(run(TINY + one + ["--ratio-holdout", "0.25", "--out", str(tmp_path / "b")]))
    pair = _cells(run(TINY + ["--n-target", "20", "--ratio-steps", "6", "--ratio-ensemble", "2", "--ratio-holdout",
                              "0.25", "--out", str(tmp_path / "c")]))
    assert len(pair["20"]["gtl"]["ratio"]["member_selections"]) == 2  # an ensemble records each member's
    sel = held["20"]["gtl"]["ratio"]["selection"]
    assert [s for s, _ in sel["curve"]] == list(range(7)) and 0 <= sel["step"] <= 6
    assert sel["nll"] == min(v for _, v in sel["curve"])
    assert "selection" not in plain["20"]["gtl"]["ratio"]
    for method in ("vanilla", "finetuned"):
        _same(plain["20"][method], held["20"][method])


def test_ratio_ensemble_has_its_members_and_leaves_the_baselines(tmp_path):
    """``--ratio-ensemble 3``: three ratio networks (three times the parameters), a different GTL cell, the same
    baselines (their draws are keyed apart from the ratio's)."""
    one = _cells(run(TINY + ["--n-target", "20", "--ratio-ensemble", "1", "--out", str(tmp_path / "a")]))
    three = _cells(run(TINY + ["--n-target", "20", "--ratio-ensemble", "3", "--out", str(tmp_path / "b")]))
    assert three["20"]["gtl"]["ratio"]["params"] == 3 * one["20"]["gtl"]["ratio"]["params"]
    assert not torch.equal(three["20"]["gtl"]["matrix"], one["20"]["gtl"]["matrix"])
    for method in ("vanilla", "finetuned"):
        _same(one["20"][method], three["20"][method])


def test_ratio_init_from_the_source_denoiser():
    """``--ratio-init source``: the ratio trunk takes the denoiser trunk's weights wherever names and shapes match
    (embedding, attention, MLP, position bias), keeps its own affine LayerNorms (the denoiser's are AdaLN), and its
    zero head still guides nothing before training."""
    from gtl_kernels.experiments.markov import init_from
    from gtl_kernels.gtl.nets import Denoiser, SequenceScorer, TrunkConfig

    torch.manual_seed(0)
    den = Denoiser(TrunkConfig(5, 8, 16, 2, 2))
    ratio = SequenceScorer(TrunkConfig(5, 8, 16, 2, 2, window=1))
    norms = {k: v.clone() for k, v in ratio.trunk.state_dict().items() if ".ln" in k or k.startswith("ln_f")}
    assert not torch.equal(ratio.trunk.blocks[1].qkv.weight, den.trunk.blocks[1].qkv.weight)
    init_from(ratio.trunk, den.trunk)
    theirs = den.trunk.state_dict()
    for k, v in ratio.trunk.state_dict().items():
        if k in norms:
            assert torch.equal(v, norms[k]), k
        else:
            assert torch.equal(v, theirs[k]), k
    z = torch.randint(0, 6, (4, 8))
    assert torch.equal(ratio(z), torch.zeros(4))


def test_ratio_ensemble_auto_averages_two_networks_for_small_target_sets():
    """``--ratio-ensemble auto`` (the default): two ratio networks under 50 target sequences, one from 50 on; an
    explicit number wins."""
    from gtl_kernels.experiments.markov import build_parser, ratio_members

    args = build_parser().parse_args([])
    assert [ratio_members(args, n) for n in (20, 49, 50, 1000)] == [2, 2, 1, 1]
    assert ratio_members(build_parser().parse_args(["--ratio-ensemble", "3"]), 1000) == 3


def test_ratio_layers_auto_gives_small_target_sets_one_block(capsys):
    """``--ratio-layers auto`` (gtl-markov's default, chosen on the suite's dev pairs): ratio networks of target sets
    under ``SMALL_TARGET_SET`` sequences have one block, the others and the planner two; a number applies to all;
    anything else is a usage error naming the option. ``gtl-language learned`` keeps its fixed 2."""
    from gtl_kernels.experiments import language_learned
    from gtl_kernels.experiments.markov import (SMALL_TARGET_SET, Context, build_chains, build_parser, new_ratio,
                                                parse_args, ratio_blocks)

    args = parse_args(build_parser(), ["--states", "4"])
    assert args.ratio_layers == "auto" and SMALL_TARGET_SET == 50
    assert [ratio_blocks(args, n) for n in (1, 20, 49, 50, 100, 1000)] == [1, 1, 1, 2, 2, 2]
    assert ratio_blocks(args) == 2
    fixed = parse_args(build_parser(), ["--ratio-layers", "3"])
    assert ratio_blocks(fixed, 20) == ratio_blocks(fixed) == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            parse_args(build_parser(), ["--ratio-layers", bad])
        assert "--ratio-layers" in capsys.readouterr().err
    assert language_learned.build_parser().parse_args([]).ratio_layers == 2

    source, target = build_chains(args)
    ctx = Context(args, source, target, 0, {})
    for n, blocks in ((20, 1), (100, 2)):
        ratio, _ = new_ratio(ctx, "conditional", n, 1000)
        assert len(ratio.trunk.blocks) == blocks


def test_ratio_edges_auto_gives_large_target_sets_edge_embeddings():
    """``--ratio-edges auto`` (gtl-markov's default, chosen on the suite's dev pairs): ratio networks of target sets
    of at least ``EDGES_TARGET_SET`` sequences carry edge embeddings, smaller ones not; ``on``/``off`` apply to all;
    the paper preset and ``gtl-language learned`` keep plain trunks."""
    from gtl_kernels.experiments import language_learned
    from gtl_kernels.experiments.markov import (EDGES_TARGET_SET, Context, build_chains, build_parser, new_ratio,
                                                parse_args, ratio_edges)

    args = parse_args(build_parser(), ["--states", "4"])
    assert args.ratio_edges == "auto" and EDGES_TARGET_SET == 300
    assert [ratio_edges(args, n) for n in (20, 100, 299, 300, 1000)] == [False, False, False, True, True]
    for value, want in (("on", True), ("off", False)):
        assert ratio_edges(parse_args(build_parser(), ["--ratio-edges", value]), 20) is want
        assert ratio_edges(parse_args(build_parser(), ["--ratio-edges", value]), 1000) is want
    assert parse_args(build_parser(), ["--preset", "paper"]).ratio_edges == "off"
    assert language_learned.build_parser().parse_args([]).ratio_edges == "off"

    source, target = build_chains(args)
    ctx = Context(args, source, target, 0, {})
    for n, has_edges in ((20, False), (1000, True)):
        ratio, _ = new_ratio(ctx, "conditional", n, 1000)
        assert (ratio.trunk.edge is not None) is has_edges


def test_dev_seeds_never_overlap_the_reported_seeds():
    """The protocol: dev pairs run with their own seeds (``--dev-seeds``), never a reported one."""
    with pytest.raises(SystemExit, match="dev-seeds"):
        run(["suite", "--dev-seeds", "101", "0", "--seeds", "0", "--quick"])
    with pytest.raises(SystemExit, match="dev-seeds"):  # the default dev seed (100) is checked as well
        run(["suite", "--seeds", "100", "--quick"])
