"""Quick GPU timing of the Triton sampling kernels against the one-read floor (issue 4's shapes, bf16).

A fallback for ``benchmarks/device_check.sh`` when the ``gtl-bench`` harness is not installed; the harness is the
reference tool (KERNEL_SPEC §8). Per case: ``triton.testing.do_bench`` medians of

- ``sample`` and ``masked_transition`` (every position masked, ``stay_prob = 0``: every row is read) of backend triton,
- ``torch.argmax`` over the same logits (the floor of one read) and a device copy of them (bandwidth ceiling),
- the PyTorch MDLM-style step (softmax, float64 exponential noise, race, argmax),

and the ratios the issue sets goals for. Usage: ``python3 benchmarks/gpu_quick.py [--json PATH] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

SHAPES = [(8 * 1024, 30522), (8 * 1024, 50257), (8 * 1024, 128256), (64 * 1024, 30522), (64 * 1024, 50257),
          (1, 128256), (8, 128256)]


def mdlm_step(logits, bias=None):
    """The PyTorch way (MDLM / GTL authors): scores, softmax, float64 exponential noise, race, argmax."""
    z = logits.float() if bias is None else logits.float() + bias.float()
    probs = torch.softmax(z, dim=-1).double()
    noise = torch.empty_like(probs).exponential_()
    return (probs / noise).argmax(-1)


def bench(fn, rep_ms=50):
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=rep_ms, return_mode="median") * 1e-3  # seconds


def main(argv=None) -> int:
    import gtl_kernels

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--quick", action="store_true", help="fewer shapes (N = 8192 and the small batches only)")
    ap.add_argument("--sweep", action="store_true",
                    help="only time sample at N=8192, V=50257 and 128256 for a few (BLOCK, num_warps) settings")
    args = ap.parse_args(argv)
    if args.sweep:
        return sweep()
    if not torch.cuda.is_available():
        print("gpu_quick: no CUDA device", file=sys.stderr)
        return 1
    shapes = [s for s in SHAPES if not args.quick or s[0] <= 8192]
    dev = torch.device("cuda")
    rows = []
    for n, v in shapes:
        for with_bias in (False, True):
            g = torch.Generator(device=dev).manual_seed(0)
            logits = (torch.randn(n, v, generator=g, device=dev) * 3).to(torch.bfloat16)
            bias = (torch.randn(n, v, generator=g, device=dev)).to(torch.bfloat16) if with_bias else None
            keys = torch.arange(n, device=dev, dtype=torch.int64)
            off = torch.zeros((), dtype=torch.int64, device=dev)
            x_t = torch.full((n,), v - 1, dtype=torch.int64, device=dev)
            out = torch.empty_like(logits)
            ref = gtl_kernels.sample(logits, bias, seeds=keys, offset=off, backend="torch") if n <= 8192 else None
            tri = gtl_kernels.sample(logits, bias, seeds=keys, offset=off, backend="triton")
            agree = float((tri == ref).float().mean()) if ref is not None else float("nan")
            t = {
                "triton_sample": bench(lambda: gtl_kernels.sample(logits, bias, seeds=keys, offset=off,
                                                                  backend="triton")),
                "triton_masked": bench(lambda: gtl_kernels.masked_transition(
                    x_t, logits, bias, stay_prob=0.0, mask_id=v - 1, seeds=keys, offset=off, backend="triton")),
                "argmax": bench(lambda: torch.argmax(logits, dim=-1)),
                "copy": bench(lambda: out.copy_(logits)),
            }
            if n * v <= 8192 * 50257:  # the float64 temporaries of larger shapes do not fit comfortably
                t["pytorch_step"] = bench(lambda: mdlm_step(logits, bias), rep_ms=100)
            read_bytes = logits.numel() * logits.element_size() * (2 if with_bias else 1)
            copy_bw = 2 * logits.numel() * logits.element_size() / t["copy"]
            row = dict(n=n, v=v, bias=with_bias, agree_with_reference=agree, **{k: v_ for k, v_ in t.items()})
            row["sample_vs_argmax"] = t["triton_sample"] / t["argmax"]
            row["sample_bw_vs_copy"] = (read_bytes / t["triton_sample"]) / copy_bw
            row["step_speedup"] = t.get("pytorch_step", float("nan")) / t["triton_sample"]
            rows.append(row)
            print(f"{n:>6} x {v:<6} bias={int(with_bias)}  sample {t['triton_sample'] * 1e6:9.1f} us  masked "
                  f"{t['triton_masked'] * 1e6:9.1f} us  argmax {t['argmax'] * 1e6:9.1f} us  copy "
                  f"{t['copy'] * 1e6:9.1f} us  x argmax {row['sample_vs_argmax']:5.2f}  bw/copy "
                  f"{row['sample_bw_vs_copy']:5.1%}  vs pytorch step {row['step_speedup']:6.1f}x  agree {agree:.4f}",
                  flush=True)
            del logits, bias, out
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    return 0


def sweep() -> int:
    """Launch settings of the chunked race (``GTL_TRITON_BLOCK``, ``GTL_TRITON_NUM_WARPS``), against argmax."""
    import os

    import gtl_kernels

    dev = torch.device("cuda")
    for v in (50257, 128256):
        logits = (torch.randn(8192, v, device=dev) * 3).to(torch.bfloat16)
        keys = torch.arange(8192, device=dev, dtype=torch.int64)
        t_arg = bench(lambda: torch.argmax(logits, dim=-1))
        want = None
        for block, warps in ((4096, 8), (4096, 4), (8192, 8), (2048, 4), (8192, 16)):
            os.environ["GTL_TRITON_BLOCK"], os.environ["GTL_TRITON_NUM_WARPS"] = str(block), str(warps)
            got = gtl_kernels.sample(logits, seeds=keys, backend="triton")
            want = got if want is None else want
            t = bench(lambda: gtl_kernels.sample(logits, seeds=keys, backend="triton"))
            print(f"sweep V={v:<6} BLOCK={block:<5} warps={warps:<2} sample {t * 1e6:8.1f} us  x argmax "
                  f"{t / t_arg:5.2f}  same tokens as the first setting: {float((got == want).float().mean()):.5f}",
                  flush=True)
        os.environ.pop("GTL_TRITON_BLOCK"), os.environ.pop("GTL_TRITON_NUM_WARPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
