"""Top-p sampling (``gtl_kernels.nucleus.sample_top_p``) against one streaming read and the PyTorch way.

    python benchmarks/top_p_variants.py [N V]

Per row spread (logits ``randn * scale``; ``scale`` 12: a peaked row, kept sets of ~20 tokens; 3 and 1: flat rows,
kept sets of hundreds to tens of thousands), on the same fp32 ``[N, V]`` logits in one process: ``torch.amax`` over
the last dim (the floor), ``sample_top_p`` with ``top_p = 0.9``, and the PyTorch way (softmax, a full sort, cumsum,
mask, ``torch.multinomial``). Medians of a few calls; the draws are not compared here (``tests/test_nucleus.py``
checks the law).
"""

import sys
import time

import torch

from gtl_kernels.nucleus import nucleus, sample_top_p

TOP_P = 0.9


def median_ms(fn, runs=5):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[runs // 2] * 1e3


def torch_way(z, top_p, temperature):
    probs = torch.softmax(z / temperature, -1)
    sorted_p, order = torch.sort(probs, -1, descending=True)
    drop = (sorted_p.cumsum(-1) - sorted_p) > top_p
    choice = torch.multinomial(sorted_p.masked_fill(drop, 0.0), 1)
    return order.gather(-1, choice)[:, 0]


def main(n=1024, v=128256):
    print(f"top_p {TOP_P}, [{n}, {v}] fp32, {torch.get_num_threads()} threads")
    for scale, temperature in [(12.0, 1.0), (3.0, 1.0), (3.0, 0.7), (1.0, 1.0)]:
        z = torch.randn(n, v, generator=torch.Generator().manual_seed(0)) * scale
        floor = median_ms(lambda: torch.amax(z, -1))
        ours = median_ms(lambda: sample_top_p(z, TOP_P, temperature=temperature, seeds=1))
        theirs = median_ms(lambda: torch_way(z, TOP_P, temperature), runs=3)
        kept = int(torch.isfinite(nucleus(z[:64], TOP_P, temperature=temperature)[0]).sum(-1).max())
        print(f"scale {scale:>4} T {temperature}: kept up to {kept:>6} (first 64 rows); amax {floor:6.1f} ms, "
              f"sample_top_p {ours:7.1f} ms ({ours / floor:5.1f}x amax), PyTorch way {theirs:7.0f} ms "
              f"({theirs / ours:5.1f}x slower)")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
