"""``gtl-bench --compat``: every codebase's cases run on tiny shapes, records are complete, the memory probe sees an
allocation; on CUDA (skipped without a GPU, run by ``benchmarks/device_check.sh``) the same with the device's peak."""

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


def test_compat_device_cuda_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        bench_main(["--compat", "--quick", "--device", "cuda"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compat_quick_run_on_cuda(tmp_path):
    """Every codebase's inputs and stubs on the GPU; the peaks come from the caching allocator: the original's
    ``[B, L, V]`` temporaries show up as at least one logits tensor."""
    out = tmp_path / "compat.json"
    assert bench_main(["--compat", "--quick", "--runs", "3", "--device", "cuda", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["device"] == "cuda"
    assert {r["codebase"] for r in data["records"]} == set(compat.CODEBASES)
    for r in data["records"]:
        assert r["original_outside_s"] > 0 and r["dropin_outside_s"] > 0 and r["floor_s"] > 0
        assert r["original_peak_x_logits"] >= 1.0 and r["dropin_peak_x_logits"] is not None
