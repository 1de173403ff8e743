"""What producing a fresh output tensor costs on this machine, beside `guided_log_softmax` (docs/PERF.md).

    python benchmarks/fresh_tensor_cost.py            # 1 thread, fp32, 1024 x 30522 and 256 x 128256

The op returns a new fp32 ``[N, V]`` tensor, so its floor is not a copy into a preallocated tensor but the cost of a
new tensor of that size (allocation and page faults included): ``x.clone()``. Every call of a round runs back to
back on the same random logits; medians of 9 rounds, as multiples of the preallocated copy.
"""

import statistics
import time

import torch

from gtl_kernels import ops


def main() -> None:
    torch.set_num_threads(1)
    for n, v in ((1024, 30522), (256, 128256)):
        x = torch.randn(n, v) * 3
        y = torch.empty_like(x)
        fns = {
            "amax": lambda: torch.amax(x, -1),
            "copy into preallocated": lambda: y.copy_(x),
            "fresh tensor + copy": lambda: x.clone(),
            "fresh tensor, filled": lambda: torch.empty_like(x).fill_(1.0),
            "guided_log_softmax": lambda: ops.guided_log_softmax(x, backend="cpu"),
            "torch.log_softmax": lambda: torch.log_softmax(x, -1),
        }
        times = {k: [] for k in fns}
        for _ in range(9):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        base = statistics.median(times["copy into preallocated"])
        print(f"{n}x{v} fp32, 1 thread, medians of 9 rounds:")
        for k, t in times.items():
            m = statistics.median(t)
            print(f"  {k:<26} {m * 1e3:7.2f} ms  {m / base:5.2f}x copy")


if __name__ == "__main__":
    main()
