"""Ratios of the `cpu` backend's ops to `torch.argmax` over the same logits (issue 3's performance table).

    python benchmarks/cpu_ratios.py [--reps 15] [--threads 2] [--shapes 1024x30522,256x128256] [--dtypes fp32,bf16]

Each repetition times every case once, back to back, so load from other processes hits all of them alike; a case's
ratio is the median over repetitions of (its time / the argmax time of the same repetition). guided_log_softmax is
compared with torch.log_softmax(x, -1, dtype=float32) (the same fp32 output) instead of argmax. `cpu` is the same
ratio in process CPU time (all threads): on a machine shared with other work it shows the work done, while wall time
also shows how much of the cores the process got.
The ops are called through torch.ops.gtl (the registered CPU kernels), i.e. without the Python wrapper's checks.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import gtl_kernels  # noqa: F401
from gtl_kernels import _native  # noqa: F401  (loads the CPU kernels; fails with the reason if they are missing)

GOALS = {  # op: (goal, what the time is divided by)
    "sample": (1.5, "argmax"),
    "masked_transition (all masked)": (1.5, "argmax"),
    "sample + dense bias": (2.5, "argmax"),
    "guided_log_softmax": (1.0, "log_softmax"),
    "confidence max_prob": (1.5, "argmax"),
    "confidence margin": (1.5, "argmax"),
    "confidence neg_entropy": (1.5, "argmax"),
    "topk_log_softmax k=512": (3.0, "argmax"),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cases(n: int, v: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, v, generator=g) * 3).to(dtype)
    bias = torch.randn(n, v, generator=g).to(dtype)
    one = torch.ones(n)
    seeds = torch.arange(n, dtype=torch.int64) * 7919 + 1
    off = torch.tensor(0, dtype=torch.int64)
    mask_id = 5
    x_t = torch.full((n,), mask_id, dtype=torch.int64)
    stay = torch.zeros(n)
    ops = torch.ops.gtl
    return {
        "argmax": lambda: torch.argmax(x, -1),
        "log_softmax": lambda: torch.log_softmax(x, -1, dtype=torch.float32),
        "sample": lambda: ops.sample(x, None, one, one, 0, seeds, off, None),
        "masked_transition (all masked)": lambda: ops.masked_transition(
            x_t, x, None, one, one, 0, stay, mask_id, seeds, off
        ),
        "sample + dense bias": lambda: ops.sample(x, bias, one, one, 0, seeds, off, None),
        "guided_log_softmax": lambda: ops.guided_log_softmax(x, None, one, one),
        "confidence max_prob": lambda: ops.confidence(x, None, one, one, "max_prob"),
        "confidence margin": lambda: ops.confidence(x, None, one, one, "margin"),
        "confidence neg_entropy": lambda: ops.confidence(x, None, one, one, "neg_entropy"),
        "topk_log_softmax k=512": lambda: ops.topk_log_softmax(x, 512, None, one, one),
    }


def measure(fns: dict, reps: int) -> dict:
    for f in fns.values():  # warm-up (allocations, page faults, lazy initialization)
        f()
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(reps):
        for name, f in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--shapes", default="1024x30522,256x128256")
    p.add_argument("--dtypes", default="fp32,bf16")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    print(f"# {stamp}  {platform.machine()}  torch {torch.__version__}  threads={args.threads}  reps={args.reps}"
          f"  cpu kernels: {_native.BUILD_DESCRIPTION}")
    print(f"{'shape':>12} {'dtype':>5} {'op':<32} {'ms':>8} {'ratio':>6} {'cpu':>6} {'goal':>5}  vs")
    for shape in args.shapes.split(","):
        n, v = (int(s) for s in shape.split("x"))
        for dname in args.dtypes.split(","):
            times, cpu = measure(cases(n, v, DTYPES[dname]), args.reps)
            for op, (goal, base) in GOALS.items():
                ratio = statistics.median(t / b for t, b in zip(times[op], times[base]))
                cpu_ratio = statistics.median(t / b for t, b in zip(cpu[op], cpu[base]) if b > 0)
                ms = statistics.median(times[op]) * 1e3
                flag = "" if ratio <= goal else "  MISSES GOAL"
                print(f"{shape:>12} {dname:>5} {op:<32} {ms:8.2f} {ratio:6.2f} {cpu_ratio:6.2f} {goal:5.1f}  {base}"
                      + flag)
            print(f"{shape:>12} {dname:>5} {'(argmax)':<32} {statistics.median(times['argmax']) * 1e3:8.2f}")
            lsm_ms = statistics.median(times["log_softmax"]) * 1e3
            print(f"{shape:>12} {dname:>5} {'(log_softmax -> fp32)':<32} {lsm_ms:8.2f}", flush=True)


if __name__ == "__main__":
    main()
