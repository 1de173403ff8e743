"""Sampling and ratio / classifier training across processes with ``torch.distributed`` (gloo on CPU, nccl on GPU).

Sampling: sequence ``i`` of a sampler call is keyed by ``derive_keys(seed, i)`` (its *global* index), so rank ``r``
of ``W`` generates the contiguous block of indices :func:`shard` gives it and the blocks are gathered in index
order: the result is token-identical to one process sampling all ``n`` sequences with the same seed.

Training: every rank draws the same global batch from the same seeded generator (the draws of
``gtl.training.train_domain_classifier``, in the same order), takes its ``1/W`` slice, and ``DistributedDataParallel``
averages the gradients, which equals the gradient of the mean loss over the whole batch. The loss history is the
all-reduced mean. With ``W = 1`` the loop is step for step the single-process one; with ``W > 1`` it matches it up to
the order of floating-point sums (tests/test_distributed.py: within 1e-5 relative over the loss curve).

Run under ``torchrun`` (``python -m gtl_kernels.distributed --help``), e.g.::

    torchrun --nproc-per-node 2 -m gtl_kernels.distributed sample --samples 4096 --out results/samples.pt
    torchrun --nproc-per-node 2 -m gtl_kernels.distributed train-ratio --steps 200 --out results/ratio.pt

Without an initialized process group every function runs as a single process (``W = 1``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .gtl.samplers import SamplerStats
from .gtl.schedule import LogLinearSchedule
from .gtl.training import TrainConfig, _balanced, _noised, fit


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The global indices ``[start, stop)`` of rank ``rank``: contiguous blocks, sizes differing by at most one."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _sample_range(sampler, start: int, stop: int, length: int, seed: int, batch_size: int,
                  stats: SamplerStats) -> torch.Tensor:
    """Sequences ``start .. stop - 1`` of a sampler call with ``seed``: int64 ``[stop - start, length]`` on the CPU
    (the sampler keys them by their global indices, ``first_index=start``); their pass counts are added to
    ``stats``."""
    out, part = sampler(stop - start, length, seed=seed, batch_size=batch_size, first_index=start)
    for name in _COUNTS:
        setattr(stats, name, getattr(stats, name) + getattr(part, name))
    stats.token_logprob += part.token_logprob
    return out


_COUNTS = ("denoiser_passes", "planner_passes", "ratio_passes", "denoiser_calls", "planner_calls", "ratio_calls",
           "tokens_drawn")


def sample(sampler, n_samples: int, length: int, *, seed: int = 0, batch_size: int = 1024,
           gather: bool = True) -> tuple[torch.Tensor, SamplerStats]:
    """Generate ``n_samples`` sequences across the ranks of the default process group.

    Args:
        sampler: a ``gtl_kernels.gtl`` sampler (``AncestralSampler``, ``GuidedAncestralSampler``,
            ``ScheduledSampler``), the same on every rank.
        n_samples, length, seed, batch_size: as in the sampler's ``__call__``.
        gather: return all sequences on every rank (else only this rank's block, see :func:`shard`).
    Returns:
        (int64 ``[n_samples, length]`` on the CPU, or ``[stop - start, length]`` with ``gather=False``; the stats
        summed over ranks, wall time the slowest rank's).
    """
    rank, size = world()
    start, stop = shard(n_samples, rank, size)
    stats = SamplerStats(samples=n_samples, steps=getattr(sampler, "steps", length))
    t0 = time.perf_counter()
    with torch.inference_mode():
        local = _sample_range(sampler, start, stop, length, seed, batch_size, stats)
    stats.wall_s = time.perf_counter() - t0
    if size == 1:
        return local, stats
    device = _collective_device()
    counts = torch.tensor([getattr(stats, c) for c in _COUNTS], dtype=torch.int64, device=device)
    dist.all_reduce(counts)
    wall = torch.tensor([stats.wall_s], dtype=torch.float64, device=device)
    dist.all_reduce(wall, op=dist.ReduceOp.MAX)
    logprob = torch.tensor([stats.token_logprob], dtype=torch.float64, device=device)
    dist.all_reduce(logprob)
    stats = dataclasses.replace(stats, **dict(zip(_COUNTS, counts.tolist())), wall_s=float(wall),
                                token_logprob=float(logprob))
    if not gather:
        return local, stats
    block = shard(n_samples, 0, size)[1]  # the largest block: pad every block to it for all_gather
    padded = torch.full((block, length), -1, dtype=torch.int64, device=device)
    padded[: stop - start] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    sizes = [hi - lo for lo, hi in (shard(n_samples, r, size) for r in range(size))]
    return torch.cat([p[:k].cpu() for p, k in zip(parts, sizes)]), stats


def _collective_device() -> torch.device:
    """Where collective tensors live: the current CUDA device for nccl, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------------------
# Training: the domain classifier / ratio network with DistributedDataParallel
# ---------------------------------------------------------------------------------------------------------------------


def classifier_batch(source: torch.Tensor, target: torch.Tensor, batch_size: int, gen: torch.Generator, *,
                     noisy: bool, mask_id: int, label_smoothing: float = 0.0,
                     schedule: LogLinearSchedule | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One global batch of ``train_domain_classifier`` (the same draws from ``gen``, in the same order):
    (int64 ``[B, L]`` inputs, float ``[B]`` targets)."""
    x, y = _balanced(source, target, batch_size, gen)
    if noisy:
        x, _ = _noised(x, mask_id, schedule or LogLinearSchedule(), gen)
    return x, y * (1 - label_smoothing) + (1 - y) * label_smoothing


def train_domain_classifier(model: nn.Module, source: torch.Tensor, target: torch.Tensor, cfg: TrainConfig, *,
                            noisy: bool, mask_id: int, label_smoothing: float = 0.0,
                            schedule: LogLinearSchedule | None = None, progress: bool = False) -> list[float]:
    """``gtl.training.train_domain_classifier`` across the ranks of the default process group (DDP).

    ``cfg.batch_size`` is the global batch and must be a multiple of the world size. Every rank ends with the same
    parameters. Returns the loss history (the mean BCE over the global batch, one float per step, on every rank).
    """
    rank, size = world()
    if cfg.batch_size % size:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the world size {size}")
    local = cfg.batch_size // size
    net = nn.parallel.DistributedDataParallel(model) if size > 1 else model

    def loss_fn(gen):
        x, y = classifier_batch(source, target, cfg.batch_size, gen, noisy=noisy, mask_id=mask_id,
                                label_smoothing=label_smoothing, schedule=schedule)
        x, y = x[rank * local : (rank + 1) * local], y[rank * local : (rank + 1) * local]
        # DDP: gradients averaged over ranks = the gradient of the global mean loss
        return F.binary_cross_entropy_with_logits(net(x), y)

    def global_mean(loss):
        value = loss.detach().double().reshape(1)
        if size > 1:
            value = value.to(_collective_device())
            dist.all_reduce(value)
            value /= size
        return float(value)

    return fit(model, loss_fn, cfg, desc=f"classifier rank {rank}", progress=progress and rank == 0,
               loss_value=global_mean)


def train_ratio_classifier(ratio: nn.Module, source: torch.Tensor, target: torch.Tensor, cfg: TrainConfig, *,
                           mask_id: int, schedule: LogLinearSchedule | None = None,
                           progress: bool = False) -> list[float]:
    """``gtl.training.train_ratio_classifier`` (the noise-aware classifier estimator of the ratio) with DDP."""
    return train_domain_classifier(ratio, source, target, cfg, noisy=True, mask_id=mask_id, schedule=schedule,
                                   progress=progress)


# ---------------------------------------------------------------------------------------------------------------------
# Command line (under torchrun): the Markov-chain setting of gtl.chains
# ---------------------------------------------------------------------------------------------------------------------


def _markov_setting(states: int, length: int, n_data: int, seed: int):
    from .gtl.chains import MarkovChain

    source, target = MarkovChain.sticky(states, 0.2), MarkovChain.sticky(states, 0.7)
    g = torch.Generator().manual_seed(seed)
    return source, target, source.sample(n_data, length, generator=g), target.sample(n_data, length, generator=g)


def _init_from_env() -> None:
    """Join the process group torchrun describes (gloo on CPU, nccl when CUDA is available); no-op without it."""
    if "RANK" in os.environ and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gtl_kernels.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["sample", "train-ratio"])
    parser.add_argument("--samples", type=int, default=256, help="sample: sequences")
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--states", type=int, default=4, help="Markov chain states (the vocabulary)")
    parser.add_argument("--steps", type=int, default=20, help="sample: ancestral steps; train-ratio: optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: leave as is)")
    parser.add_argument("--out", required=True, help="rank 0 writes the result here (torch.save)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _init_from_env()
    rank, size = world()
    if args.task == "sample":
        from .gtl.chains import MarkovOracleDenoiser, MarkovOracleRatio
        from .gtl.samplers import GuidedAncestralSampler

        source, target, _, _ = _markov_setting(args.states, args.length, 1, args.seed)
        sampler = GuidedAncestralSampler(MarkovOracleDenoiser(source), MarkovOracleRatio(source, target),
                                         args.states, steps=args.steps, top_k=0)
        result, stats = sample(sampler, args.samples, args.length, seed=args.seed, batch_size=args.batch_size)
        payload = {"samples": result, "stats": stats.as_dict()}
    else:
        from .gtl.nets import SequenceScorer, TrunkConfig

        _, _, src, tgt = _markov_setting(args.states, args.length, 2048, args.seed)
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        ratio = SequenceScorer(TrunkConfig(args.states, args.length, d_model=32, n_heads=2, n_layers=1))
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=3e-3, seed=args.seed)
        history = train_ratio_classifier(ratio, src, tgt, cfg, mask_id=args.states)
        payload = {"loss": history, "state_dict": ratio.state_dict()}
    if rank == 0:
        torch.save(payload | {"world_size": size}, args.out)
        print(json.dumps({"task": args.task, "world_size": size, "out": args.out}))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
