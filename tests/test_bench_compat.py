"""``gtl-bench --compat``: every codebase's cases run on tiny shapes, records are complete, the memory probe sees an
allocation."""

import json

import pytest
import torch

from gtl_kernels.bench import compat
from gtl_kernels.bench.cli import main as bench_main


def test_peak_extra_bytes_sees_an_allocation():
    size = 64 << 20

    def allocate():
        t = torch.empty(size, dtype=torch.uint8)
        t.fill_(1)  # touch every page
        return int(t[-1])

    peak = compat.peak_extra_bytes(allocate)
    if peak is None:
        pytest.skip("peak resident memory is not readable on this OS")
    assert 0.9 * size <= peak <= 3 * size


def test_compat_quick_run_writes_complete_records(tmp_path):
    out, md = tmp_path / "compat.json", tmp_path / "compat.md"
    assert bench_main(["--compat", "--quick", "--runs", "3", "--json", str(out), "--markdown", str(md)]) == 0
    records = json.loads(out.read_text())["records"]
    assert {r["codebase"] for r in records} >= {"mdlm", "gtl"}
    for r in records:
        assert r["original_outside_s"] > 0 and r["dropin_outside_s"] > 0 and r["floor_s"] > 0
        assert r["speedup"] == pytest.approx(r["original_outside_s"] / r["dropin_outside_s"])
    assert "| mdlm |" in md.read_text()
