"""Thread, batch and process invariance (KERNEL_SPEC §3: a row's result depends only on its data, key and offset).

- the CPU backend gives bit-identical results (tokens, values) with 1, 2 and 4 threads, where rows are split across
  threads (many rows) and where one row's chunks are (few long rows);
- the samplers give identical sequences for the same per-sequence seeds in one batch, in shuffled smaller batches,
  and with 1 or 4 threads; 2 processes: tests/test_distributed.py.
"""

import math

import pytest
import torch

import gtl_kernels
from gtl_kernels.gtl.chains import MarkovChain, MarkovOracleDenoiser, MarkovOracleRatio
from gtl_kernels.gtl.samplers import (AncestralSampler, AncestralState, GuidedAncestralSampler, ScheduledSampler,
                                      sequence_seeds)

THREADS = (1, 2, 4)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _inputs(n, v, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, v, generator=g) * 3).to(torch.bfloat16)
    if n > 1:
        logits[0, 5:] = -math.inf  # a row with few allowed tokens
    bias = torch.randn(n, v, generator=g)
    gamma = torch.rand(n, generator=g) * 2
    temperature = torch.rand(n, generator=g) + 0.3
    seeds = torch.randint(-(2**63), 2**63 - 1, (n,), generator=g)
    return logits, bias, gamma, temperature, seeds


def _all_ops(logits, bias, gamma, temperature, seeds):
    n, v = logits.shape
    x_t = torch.full((n,), 2, dtype=torch.int64)
    x_t[::3] = 1
    kw = dict(backend="cpu")
    return [
        gtl_kernels.sample(logits, bias, gamma, temperature, seeds=seeds, offset=9, **kw),
        gtl_kernels.sample(logits, bias, gamma, temperature, 40, seeds=seeds, offset=9, **kw),
        gtl_kernels.masked_transition(x_t, logits, bias, gamma, temperature, stay_prob=0.25, mask_id=2,
                                      seeds=seeds, offset=9, **kw),
        gtl_kernels.guided_log_softmax(logits, bias, gamma, temperature, **kw),
        *gtl_kernels.topk_log_softmax(logits, 30, bias, gamma, temperature, **kw),
        *[t for kind in ("max_prob", "margin", "neg_entropy")
          for t in gtl_kernels.confidence(logits, bias, gamma, temperature, kind=kind, **kw)],
    ]


def _bit_identical(a, b):
    return a.dtype == b.dtype and torch.equal(a.view(torch.int32) if a.dtype == torch.float32 else a,
                                              b.view(torch.int32) if b.dtype == torch.float32 else b)


@pytest.mark.skipif(not gtl_kernels.available_backends()["cpu"].available, reason="the cpu backend is not built")
@pytest.mark.parametrize("n, v", [(1, 70_000), (3, 70_000), (200, 3_000)])
def test_cpu_backend_is_thread_count_invariant(n, v, restore_threads):
    """Bit-identical outputs (NaN payloads included) with 1, 2 and 4 threads."""
    args = _inputs(n, v, seed=n + v)
    results = {}
    for threads in THREADS:
        torch.set_num_threads(threads)
        results[threads] = _all_ops(*args)
    for threads in THREADS[1:]:
        for i, (a, b) in enumerate(zip(results[1], results[threads])):
            assert _bit_identical(a, b), f"output {i} differs between 1 and {threads} threads"


def _samplers():
    s, t = MarkovChain.sticky(5, 0.2), MarkovChain.sticky(5, 0.7)
    den, rat = MarkovOracleDenoiser(s), MarkovOracleRatio(s, t)
    return {
        "ancestral": AncestralSampler(den, 5, steps=6),
        "guided": GuidedAncestralSampler(den, rat, 5, steps=6, mode="topn", n_ratio=3, top_k=2),
        "scheduled": ScheduledSampler(den, 5, rat, order="random", n_ratio=4),
    }


@pytest.mark.parametrize("name", list(_samplers()))
def test_samplers_are_invariant_to_shuffled_smaller_batches(name):
    """Sequences keyed by the same per-sequence seeds come out the same in one batch of 20 and in shuffled batches
    of 3 (driven through the public ``step``, which takes the keys; ``__call__`` numbers sequences in order)."""
    sampler, n, length, seed = _samplers()[name], 20, 7, 4
    whole, _ = sampler(n, length, seed=seed, batch_size=n)
    keys = sequence_seeds(seed, 0, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    shuffled = torch.empty_like(whole)
    with torch.inference_mode():
        for i in range(0, n, 3):
            rows = order[i : i + 3]
            z = torch.full((len(rows), length), sampler.mask_id, dtype=torch.int64)
            state = AncestralState() if isinstance(sampler, AncestralSampler) else None
            for step in range(getattr(sampler, "steps", length)):
                z, _ = sampler.step(z, step, keys[rows], **({"state": state} if state is not None else {}))
            shuffled[rows] = z
    assert torch.equal(shuffled, whole)


@pytest.mark.parametrize("name", list(_samplers()))
def test_samplers_are_thread_count_invariant(name, restore_threads):
    sampler = _samplers()[name]
    results = []
    for threads in (1, 4):
        torch.set_num_threads(threads)
        results.append(sampler(16, 7, seed=8, batch_size=16)[0])
    assert torch.equal(results[0], results[1])
