"""``auto``'s measured choices: the table made from benchmark runs, and the selection that reads it."""

from __future__ import annotations

import json

import pytest
import torch

from gtl_kernels import backends
from gtl_kernels.bench import auto_table


def _result(impl, ratio, status="ok", role="backend"):
    return {"impl": impl, "role": role, "status": status, "time_s": ratio * 1e-3, "ratio": {"argmax": ratio}}


def _run(cases):
    return {"settings": {"device": "cuda"},
            "meta": {"device": {"type": "cuda", "name": "test card"}, "date": "2026-11-26"},
            "cases": [{"op": op, "n": n, "results": results} for op, n, results in cases]}


RUN = _run([
    # large N: cuda faster on the geometric mean (0.90 vs 1.10), though not in the second case
    ("sample", 8192, [_result("argmax", 1.0, role="floor"), _result("cuda", 0.8), _result("triton", 1.2),
                      _result("torch", 40.0)]),
    ("sample", 65536, [_result("cuda", 1.0125), _result("triton", 1.0083)]),
    # small N: cuda faster where it ran, but it failed its check in one case: triton is chosen
    ("sample", 1, [_result("cuda", 1.0), _result("triton", 2.0)]),
    ("sample", 8, [_result("cuda", 0.1, status="mismatch"), _result("triton", 2.0)]),
    # guided_log_softmax, small N: triton faster
    ("guided_log_softmax", 1, [_result("cuda", 3.0), _result("triton", 2.0)]),
    # one fast backend measured: nothing to choose
    ("confidence", 8192, [_result("triton", 1.0), _result("torch", 9.0)]),
])


def test_choose_picks_the_lowest_geometric_mean_per_op_and_row_class():
    device_type, choices, evidence = auto_table.choose(RUN)
    assert device_type == "cuda"
    assert choices == {"sample": {"n>64": "cuda", "n<=64": "triton"}, "guided_log_softmax": {"n<=64": "triton"}}
    large = evidence["sample"]["n>64"]
    assert large["cases"] == 2 and large["device"] == "test card"
    assert large["geomean_ratio_to_argmax"]["cuda"] == pytest.approx((0.8 * 1.0125) ** 0.5)
    assert evidence["sample"]["n<=64"]["not_chosen_failed"] == ["cuda"]
    assert evidence["sample"]["n<=64"]["cases"] == 2


def test_write_merges_one_device_type(tmp_path):
    run_file, table = tmp_path / "bench.json", tmp_path / "auto_table.json"
    run_file.write_text(json.dumps(RUN))
    table.write_text(json.dumps({"about": "x", "choices": {"xpu": {"sample": {"any": "other"}}}, "evidence": {}}))
    assert auto_table.main([str(run_file), "--write", str(table)]) == 0
    stored = json.loads(table.read_text())
    assert stored["about"] == "x" and stored["choices"]["xpu"] == {"sample": {"any": "other"}}
    assert stored["choices"]["cuda"]["sample"] == {"n>64": "cuda", "n<=64": "triton"}


def test_shipped_table_is_readable():
    table = json.loads(backends.AUTO_TABLE.read_text())
    assert isinstance(table["choices"], dict)
    for device_type, ops in table["choices"].items():
        for op, classes in ops.items():
            assert set(classes) <= {"any", "n<=64", "n>64"} and all(b in backends._REGISTRY for b in classes.values())


def test_row_class():
    assert backends.row_class(None) == "any"
    assert backends.row_class(1) == backends.row_class(64) == "n<=64"
    assert backends.row_class(65) == "n>64"


def test_auto_follows_the_table_when_that_backend_can_run(monkeypatch):
    default = backends._choose("sample", "cpu", "auto", "n>64")
    monkeypatch.setattr(backends, "_auto_choices", lambda: {"cpu": {"sample": {"n>64": "torch"}}})
    assert backends._choose("sample", "cpu", "auto", "n>64") == "torch"
    assert backends._choose("sample", "cpu", "auto", "n<=64") == default  # no entry: the priorities
    assert backends._choose("confidence", "cpu", "auto", "n>64") == backends._choose("confidence", "cpu", "auto")
    assert backends.select("sample", torch.device("cpu"), None, rows=100) is torch.ops.gtl.sample_torch
    # an explicit request is never overridden
    assert backends._choose("sample", "cpu", default, "n>64") == default


def test_auto_ignores_a_table_entry_that_cannot_run(monkeypatch):
    default = backends._choose("sample", "cpu", "auto", "n>64")
    monkeypatch.setattr(backends, "_auto_choices", lambda: {"cpu": {"sample": {"n>64": "cuda"}, "topk": {"n>64": "?"}}})
    assert backends._choose("sample", "cpu", "auto", "n>64") == default
