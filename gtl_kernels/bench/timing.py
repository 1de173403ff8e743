"""Timing: medians after warm-up.

CPU: wall clock (``time.perf_counter``) around each call. CUDA: ``triton.testing.do_bench`` (CUDA events around
each call, the L2 cache cleared before each) and its median; without Triton, the same with CUDA events here.

Calls that take seconds (the float64 reference, the PyTorch way at large shapes on the CPU) are run few times: one
call above ``slow_s`` is taken as its own measurement, so the default CPU run fits in minutes.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import torch


@dataclasses.dataclass
class Timing:
    """Median seconds per call over ``runs`` timed calls, measured by ``method``."""

    median_s: float
    runs: int
    min_s: float
    method: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    """Run ``fn`` once; (its result, seconds including device completion)."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


def _wall(fn, device, min_time: float, max_runs: int, slow_s: float, first_s: float | None) -> Timing:
    times: list[float] = [] if first_s is None else [first_s]
    while True:
        if len(times) == 1 and times[0] >= slow_s:
            break
        if len(times) >= max_runs or (len(times) >= 3 and sum(times) >= min_time):
            break
        times.append(time_once(fn, device)[1])
    kept = times[1:] if len(times) >= 3 else times  # the first call warms caches and the allocator
    return Timing(statistics.median(kept), len(kept), min(kept), "wall")


def _cuda_events(fn, device, runs: int) -> Timing:
    cache = torch.empty(256 << 20, dtype=torch.int8, device=device)
    times = []
    for _ in range(runs):
        cache.zero_()  # evict the inputs from L2 as do_bench does
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return Timing(statistics.median(times), runs, min(times), "cuda-events")


def measure(
    fn: Callable[[], object],
    device: torch.device,
    *,
    min_time: float = 0.5,
    max_runs: int = 25,
    slow_s: float = 0.5,
    first_s: float | None = None,
) -> Timing:
    """Median time of ``fn()`` on ``device``.

    Args:
        min_time: CPU: keep calling until this many seconds were spent (and at least 3 calls); CUDA: do_bench's
            repetition time.
        max_runs: CPU: at most this many calls.
        slow_s: a first call this slow is the measurement (CPU), or switches CUDA to a few event-timed calls.
        first_s: the time of a call already made (e.g. the correctness call), counted as the first (CPU).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return _wall(fn, device, min_time, max_runs, slow_s, first_s)
    if first_s is None:
        first_s = time_once(fn, device)[1]
    if first_s >= slow_s:
        return _cuda_events(fn, device, runs=3)
    try:
        from triton.testing import do_bench
    except Exception:  # no Triton: time with events directly
        return _cuda_events(fn, device, runs=max(5, min(200, int(min_time / max(first_s, 1e-6)))))
    times_ms = do_bench(fn, warmup=max(1, int(200 * min_time)), rep=max(1, int(1000 * min_time)), return_mode="all")
    return Timing(statistics.median(times_ms) * 1e-3, len(times_ms), min(times_ms) * 1e-3, "do_bench")
