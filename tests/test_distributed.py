"""Distributed sampling and DDP training (gtl_kernels/distributed.py) with 2 CPU processes over loopback (gloo).

- 2 ranks sample token-identical sequences to 1 process with the same seed;
- DDP ratio training over 2 ranks matches single-process training within 1e-5 relative on every step's loss;
- with one process the distributed training loop is step for step ``gtl.training.train_domain_classifier``.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gtl_kernels import distributed
from gtl_kernels.gtl.chains import MarkovChain, MarkovOracleDenoiser, MarkovOracleRatio
from gtl_kernels.gtl.nets import SequenceScorer, TrunkConfig
from gtl_kernels.gtl.samplers import AncestralSampler, GuidedAncestralSampler, ScheduledSampler
from gtl_kernels.gtl.training import TrainConfig, train_domain_classifier

ROOT = Path(__file__).resolve().parents[1]
LOSS_RTOL = 1e-5


@pytest.mark.parametrize("n", [0, 1, 2, 7, 64, 1001])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shards_cover_the_indices_in_order(n, world_size):
    blocks = [distributed.shard(n, r, world_size) for r in range(world_size)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    sizes = [hi - lo for lo, hi in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes[0] == max(sizes)


def _samplers():
    s, t = MarkovChain.sticky(4, 0.2), MarkovChain.sticky(4, 0.7)
    den, rat = MarkovOracleDenoiser(s), MarkovOracleRatio(s, t)
    return {
        "ancestral": AncestralSampler(den, 4, steps=5),
        "guided": GuidedAncestralSampler(den, rat, 4, steps=5, top_k=2),
        "scheduled": ScheduledSampler(den, 4, rat, order="margin", n_ratio=3),
    }


@pytest.mark.parametrize("name", list(_samplers()))
def test_one_process_and_any_block_match_the_sampler(name):
    """World size 1 is the sampler's own call; a block of global indices is the same rows of the full call."""
    sampler = _samplers()[name]
    full, _ = sampler(23, 6, seed=5, batch_size=8)
    mine, stats = distributed.sample(sampler, 23, 6, seed=5, batch_size=8)
    assert torch.equal(mine, full) and stats.samples == 23
    block = distributed._sample_range(sampler, 9, 20, 6, 5, 4, distributed.SamplerStats())
    assert torch.equal(block, full[9:20])


def _torchrun(args, tmp_path, timeout=300, **env_extra):
    """``torchrun --standalone --nproc-per-node 2 -m gtl_kernels.distributed ARGS`` (gloo over loopback); the whole
    process group is killed if it runs past ``timeout``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--log-dir", str(tmp_path / "torchrun-logs"),
           "-m", "gtl_kernels.distributed", *args, "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", GTL_KERNELS_BACKEND=os.environ.get("GTL_KERNELS_BACKEND", ""), **env_extra)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun timed out:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]


def test_two_ranks_sample_what_one_process_samples(tmp_path):
    args = ["sample", "--samples", "37", "--length", "6", "--steps", "5", "--batch-size", "8", "--seed", "3"]
    _torchrun([*args, "--out", "two.pt"], tmp_path)
    distributed.main([*args, "--out", str(tmp_path / "one.pt")])
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["samples"].shape == (37, 6) and torch.equal(two["samples"], one["samples"])
    for count in ("denoiser_passes", "ratio_passes"):  # the work is split, not repeated
        assert two["stats"][count] == one["stats"][count]


def test_ddp_ratio_training_matches_one_process(tmp_path, capsys):
    """Loss curves within 1e-5 relative; parameters within a tenth of one Adam step (lr 3e-3): Adam normalizes each
    update, so a gradient entry near zero turns a summation-order difference into a visible parameter difference."""
    args = ["train-ratio", "--steps", "25", "--batch-size", "32", "--length", "6", "--seed", "1"]
    _torchrun([*args, "--out", "two.pt"], tmp_path)
    distributed.main([*args, "--threads", "1", "--out", str(tmp_path / "one.pt")])
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    a, b = torch.tensor(two["loss"], dtype=torch.float64), torch.tensor(one["loss"], dtype=torch.float64)
    assert len(a) == 25 and a[-1] < a[0]  # it trained
    rel = ((a - b).abs() / b.abs()).max().item()
    assert rel <= LOSS_RTOL, f"loss curves differ by {rel:.2e} relative"
    worst = max((two["state_dict"][k] - v).abs().max().item() for k, v in one["state_dict"].items())
    with capsys.disabled():
        print(f"\nDDP over 2 ranks vs 1 process: loss {rel:.2e} relative, parameters {worst:.2e} absolute")
    assert worst <= 3e-4


def test_one_process_training_is_the_package_loop():
    s, t = MarkovChain.sticky(4, 0.2), MarkovChain.sticky(4, 0.7)
    g = torch.Generator().manual_seed(0)
    src, tgt = s.sample(512, 6, generator=g), t.sample(512, 6, generator=g)
    cfg = TrainConfig(steps=8, batch_size=16, lr=3e-3, seed=2)
    histories, weights = [], []
    for train in (distributed.train_domain_classifier, train_domain_classifier):
        torch.manual_seed(0)
        model = SequenceScorer(TrunkConfig(4, 6, d_model=16, n_heads=2, n_layers=1))
        kw = dict(progress=False) if train is distributed.train_domain_classifier else dict(progress=False, desc="x")
        histories.append(train(model, src, tgt, cfg, noisy=True, mask_id=4, label_smoothing=0.05, **kw))
        weights.append(model.state_dict())
    assert histories[0] == histories[1]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: (0, 3))
    with pytest.raises(ValueError, match="multiple of the world size 3"):
        distributed.train_domain_classifier(torch.nn.Linear(1, 1), torch.zeros(2, 2, dtype=torch.int64),
                                            torch.zeros(2, 2, dtype=torch.int64), TrainConfig(batch_size=16),
                                            noisy=False, mask_id=2)
