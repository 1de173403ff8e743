"""Resource hygiene: no memory growth over 1,000 sampler steps, no leftover processes or temporary files, and clear
errors for models that return scores of the wrong shape or dtype."""

import os
import tempfile
from pathlib import Path

import pytest
import torch

from gtl_kernels.gtl.chains import MarkovChain, MarkovOracleDenoiser, MarkovOracleRatio
from gtl_kernels.gtl.samplers import AncestralSampler, GuidedAncestralSampler, ScheduledSampler

PAGE = os.sysconf("SC_PAGE_SIZE")
GROWTH_LIMIT = 4 << 20  # bytes of resident memory between step 200 and step 1,000 (allocator noise is ~1 MB)


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


class RssRecorder:
    """A denoiser that records the process's resident memory at every call (one call per sampler step)."""

    def __init__(self, model):
        self.model, self.rss = model, []

    def __call__(self, z, t):
        self.rss.append(_rss())
        return self.model(z, t)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("guided", [False, True])
def test_no_memory_growth_over_1000_sampler_steps(guided, capsys):
    s, t = MarkovChain.sticky(6, 0.3), MarkovChain.sticky(6, 0.7)
    den = RssRecorder(MarkovOracleDenoiser(s))
    if guided:
        sampler = GuidedAncestralSampler(den, MarkovOracleRatio(s, t), 6, steps=1000, cache=False, top_k=3)
    else:
        sampler = AncestralSampler(den, 6, steps=1000, cache=False)
    x, _ = sampler(16, 12, seed=1, batch_size=16)
    assert x.shape == (16, 12) and len(den.rss) == 1000
    growth = den.rss[-1] - den.rss[199]
    with capsys.disabled():
        print(f"\nresident memory, step 200 -> 1000 ({'guided' if guided else 'unguided'}): {growth / 2**20:+.2f} MiB")
    assert growth < GROWTH_LIMIT


def _children() -> list[int]:
    """Live (non-zombie) child processes of this process."""
    me, kids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == me and fields[0] != "Z":
                kids.append(int(entry.name))
    return kids


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc (Linux)")
def test_no_leftover_processes_or_temporary_files(tmp_path, monkeypatch):
    """Sampling (which may start OpenMP threads, never processes) and a 2-process torchrun leave no child process and
    nothing in a private temporary directory (TMPDIR) they were given. Children that earlier tests of this process
    started and keep on purpose (e.g. torch.compile's worker pool) are not this test's."""
    from test_distributed import _torchrun

    before = set(_children())
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    sampler = ScheduledSampler(MarkovOracleDenoiser(MarkovChain.sticky(4, 0.3)), 4, order="max_prob")
    sampler(8, 5, seed=0)
    _torchrun(["sample", "--samples", "6", "--length", "4", "--steps", "3", "--out", "x.pt"], tmp_path,
              TMPDIR=str(private))
    assert sorted(set(_children()) - before) == []
    left = sorted(p.name for p in private.iterdir())
    assert not left, f"left in TMPDIR: {left[:5]}"


BAD_OUTPUTS = {
    "without the mask column": lambda out: out[..., :-1],
    "one position short": lambda out: out[:, :-1],
    "transposed": lambda out: out.transpose(0, 1),
    "integer": lambda out: out.exp().mul(100).long(),
    "complex": lambda out: out.to(torch.complex64),
}


@pytest.mark.parametrize("kind", list(BAD_OUTPUTS))
@pytest.mark.parametrize("sampler", ["ancestral", "scheduled"])
def test_a_model_with_the_wrong_output_gets_a_clear_error(kind, sampler):
    den = MarkovOracleDenoiser(MarkovChain.sticky(4, 0.3))

    def bad(z, t):
        return BAD_OUTPUTS[kind](den(z, t))

    s = AncestralSampler(bad, 4, steps=4) if sampler == "ancestral" else ScheduledSampler(bad, 4, order="max_prob")
    with pytest.raises((ValueError, TypeError), match="denoiser"):  # TypeError for a non-float dtype
        s(3, 5, seed=0)
