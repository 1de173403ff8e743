"""The benchmark harness: the runner end to end on tiny shapes, the reports, and the checks it relies on."""

import json
import math
import statistics

import pytest
import torch

from gtl_kernels.bench import baselines as bl
from gtl_kernels.bench import cases as cs
from gtl_kernels.bench import cli, e2e, report


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny shapes run fastest (and steadiest on a shared machine) on one thread; restore the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_quick_run_writes_json_png_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench.json"
    md = tmp_path / "PERF.md"
    rc = cli.main([
        "--quick", "--shapes", "16x300,2x1100", "--backends", "torch", "--threads", "1", "--min-time", "0.02",
        "--no-progress", "--json", str(out), "--markdown", str(md),
    ])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "gtl-bench/1"
    assert doc["meta"]["versions"]["torch"] == torch.__version__
    assert {c["op"] for c in doc["cases"]} == set(cs.OPS)
    for case in doc["cases"]:
        res = {r["impl"]: r for r in case["results"]}
        assert res["argmax"]["time_s"] > 0
        assert res["torch"]["status"] == "ok" and res["torch"]["ratio"]["argmax"] > 0
        assert res["pytorch"]["status"] == "ok", res["pytorch"]
        assert all(r["status"] in ("ok", "skipped") for r in case["results"]), case["results"]
    assert {(e["step"], e["impl"]) for e in doc["e2e"]} == {(s, i) for s in ("ancestral", "guided", "scheduled")
                                                           for i in ("torch", "pytorch")}
    for e in doc["e2e"]:
        assert e["status"] == "ok" and 0.0 <= e["outside_share"] <= 1.0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "<!-- gtl-bench:begin cpu -->" in text and "<!-- gtl-bench:end cpu -->" in text
    assert "#### `sample`" in text and "End-to-end" in text
    assert "argmax" in capsys.readouterr().out


def test_markdown_update_keeps_hand_written_text(tmp_path):
    md = tmp_path / "PERF.md"
    md.write_text("# Perf\n\nhand-written intro\n\n## Analysis\n\nkept\n")
    report.update_markdown(md, "first\n", "cpu")
    report.update_markdown(md, "second\n", "cpu")
    report.update_markdown(md, "gpu numbers\n", "cuda")
    text = md.read_text()
    assert "hand-written intro" in text and "## Analysis\n\nkept" in text
    assert "second" in text and "first" not in text and "gpu numbers" in text
    assert text.count("<!-- gtl-bench:begin cpu -->") == 1


def test_report_regenerates_from_json(tmp_path):
    out = tmp_path / "b.json"
    assert cli.main(["--quick", "--ops", "sample", "--shapes", "8x300", "--backends", "torch", "--threads", "1",
                     "--min-time", "0.01", "--no-e2e", "--no-progress", "--no-png", "--json", str(out)]) == 0
    md = tmp_path / "PERF.md"
    assert report.main([str(out), "--markdown", str(md), "--section", "cpu-test"]) == 0
    assert "<!-- gtl-bench:begin cpu-test -->" in md.read_text()
    assert cli.main(["--from-json", str(out), "--markdown", str(md), "--section", "cpu-test"]) == 0


def test_bytes_moved():
    assert cs.Case("sample", 4, 1000, "bf16").bytes_moved() == 4 * 1000 * 2 + 4 * 16
    assert cs.Case("sample", 4, 1000, "bf16", bias=True).bytes_moved() == 2 * 4 * 1000 * 2 + 4 * 16
    assert cs.Case("guided_log_softmax", 4, 1000).bytes_moved() == 4 * 1000 * (4 + 4)
    assert cs.Case("topk_log_softmax", 2, 100, k=512).bytes_moved() == 2 * 100 * 4 + 2 * 100 * 12


@pytest.mark.parametrize("op", ["guided_log_softmax", "topk_log_softmax", "confidence"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("bias", [False, True])
def test_pytorch_way_computes_the_op(op, dtype, bias):
    """The deterministic PyTorch-way baselines compute the same function as the reference (bf16 ties included)."""
    case = cs.Case(op, 40, 3000, dtype, bias, k=64, kind="margin")
    inp = cs.make_inputs(case.n, case.v, dtype, "cpu", bias=bias)
    out = bl.build("pytorch", case, inp)()
    cs.check_against_reference(case, inp, out, cs.reference_output(case, inp))


def test_checks_catch_wrong_outputs():
    case = cs.Case("sample", 200, 500)
    inp = cs.make_inputs(200, 500, "fp32", "cpu", bias=False)
    ref = cs.reference_output(case, inp)
    cs.check_against_reference(case, inp, ref.clone(), ref)
    bad = ref.clone()
    bad[:10] = (bad[:10] + 1) % 500
    with pytest.raises(cs.CheckFailed):
        cs.check_against_reference(case, inp, bad, ref)
    glsm = cs.Case("guided_log_softmax", 8, 500)
    ref = cs.reference_output(glsm, inp.rows(8))
    with pytest.raises(cs.CheckFailed):
        cs.check_against_reference(glsm, inp.rows(8), ref + 0.01, ref)
    with pytest.raises(cs.CheckFailed):
        cs.check_tokens_valid(case, inp, torch.full((200,), 500))


def test_e2e_models_have_the_sampler_interface():
    size = e2e.SIZES["tiny"]
    den, ratio, source = e2e.build_models(size, torch.device("cpu"))
    z = torch.full((2, size.length), size.vocab)
    z[0, :3] = torch.tensor([1, 2, 3])
    with torch.inference_mode():
        logp = den(z, torch.full((2,), 0.5))
        assert logp.shape == (2, size.length, size.vocab + 1) and source == "gtl.nets"
        assert torch.all(logp[..., size.vocab] == -math.inf)
        assert logp[0, 1, 2] == 0  # unmasked positions are copied
        scores = den.scores(z, torch.full((2,), 0.5))
        assert torch.allclose(torch.log_softmax(scores[1], -1), logp[1])  # masked rows: the same distribution
        assert ratio(z).shape == (2,)


def test_case_sets_and_shapes():
    assert cs.parse_shapes("8x100,1x128256") == ((8, 100), (1, 128256))
    with pytest.raises(ValueError):
        cs.parse_shapes("8by100")
    cpu = cs.preset("default", "cpu").cases()
    assert {(c.n, c.v) for c in cpu} == {(1024, 30522), (256, 128256)}
    assert len({c.label for c in cpu}) == len(cpu)
    gpu = cs.preset("default", "cuda").cases()
    assert {c.dtype for c in gpu} == {"bf16"} and (1, 128256) in {(c.n, c.v) for c in gpu}


def test_e2e_steps_time_the_models_inside_them():
    rows = e2e.run_e2e("cpu", ["torch", "pytorch"], "tiny", repeats=1)
    assert {r["step"] for r in rows} == {"ancestral", "guided", "scheduled"}
    assert all(r["status"] == "ok" and r["step_s"] >= r["forward_s"] > 0 for r in rows), rows


def test_presets_put_their_flags_first_and_later_flags_win():
    from gtl_kernels.bench import presets

    name, argv = presets.expand(["--json", "x.json", "--preset", "cpu-ratios", "--shapes", "8x300"])
    assert name == "cpu-ratios"
    assert argv[: len(presets.PRESETS["cpu-ratios"])] == presets.PRESETS["cpu-ratios"]
    args = cli.parser().parse_args(argv)
    assert args.shapes == "8x300" and args.interleave and args.json.name == "x.json"
    assert "amax" in args.baselines.split(",")
    assert presets.expand(["--quick"]) == (None, ["--quick"])
    with pytest.raises(SystemExit, match="unknown preset"):
        presets.expand(["--preset", "nope"])


def test_interleaved_run_reports_the_streaming_read_floor_and_per_round_ratios(tmp_path):
    out = tmp_path / "b.json"
    assert cli.main(["--preset", "cpu-ratios", "--ops", "sample,confidence", "--shapes", "8x3000", "--dtypes", "bf16",
                     "--kinds", "max_prob", "--backends", "torch", "--threads", "1", "--min-time", "0.01",
                     "--max-runs", "5", "--no-progress", "--no-png", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["interleave"] is True
    for case in doc["cases"]:
        res = {r["impl"]: r for r in case["results"]}
        amax, torch_ = res["amax"], res["torch"]
        assert amax["method"] == "wall, interleaved" and len(amax["samples_s"]) == amax["runs"] >= 3
        assert amax["gbps"] == pytest.approx(case["n"] * case["v"] * 2 / amax["time_s"] / 1e9)
        assert torch_["elems_per_s"] == pytest.approx(case["n"] * case["v"] / torch_["time_s"])
        if "samples_s" in torch_:  # the reference is timed by its checked call alone when that call was slow
            want = statistics.median(a / b for a, b in zip(torch_["samples_s"], amax["samples_s"]))
            assert torch_["ratio"]["amax"] == pytest.approx(want)
            assert len(torch_["cpu_samples_s"]) == len(torch_["samples_s"]) and torch_["ratio_cpu"]["amax"] > 0
