"""Named ``gtl-bench`` runs: ``gtl-bench --preset NAME [flags]``; flags after the preset override its own.

* ``cpu-ratios``: the CPU backend's table at issue 3's shapes (fp32 and bf16), every op with and without a dense
  bias, against ``torch.argmax``, the streaming read ``torch.amax``, ``torch.log_softmax`` and a copy, timed
  round-robin (``--interleave``) so the ratios hold on a shared machine; ``--slow-s 10`` keeps calls that a loaded
  machine slows past the default half second in the rounds (no float64 reference is timed here).
* ``gpu-quick``: the Triton sampling ops at issue 4's GPU shapes (bf16, with and without bias) against the floors,
  the copy and the PyTorch step in fp32 and float64 noise.
* ``triton-sweep``: the launch settings of the Triton chunked race (``GTL_TRITON_BLOCK``,
  ``GTL_TRITON_NUM_WARPS``) for ``sample`` at N = 8192, V in {50257, 128256}, against ``argmax``, then every other op
  at 8 and 4 warps; not a table run.
"""

from __future__ import annotations

import os

import torch

PRESETS: dict[str, list[str]] = {
    "cpu-ratios": [
        "--device", "cpu", "--backends", "cpu", "--shapes", "1024x30522,256x128256", "--dtypes", "fp32,bf16",
        "--kinds", "all", "--bias", "both", "--baselines", "argmax,amax,log_softmax,copy", "--interleave",
        "--max-runs", "15", "--min-time", "0.3", "--slow-s", "10", "--no-e2e",
    ],
    "gpu-quick": [
        "--device", "cuda", "--dtypes", "bf16", "--backends", "triton", "--ops", "sample,masked_transition",
        "--bias", "both", "--shapes", "8192x30522,8192x50257,8192x128256,65536x30522,65536x50257,1x128256,8x128256",
        "--baselines", "argmax,amax,copy,pytorch,pytorch-fp64", "--min-time", "0.1", "--no-e2e",
    ],
    "triton-sweep": [],
}
SWEEP_SETTINGS = ((4096, 8), (4096, 4), (8192, 8), (2048, 4), (8192, 16))  # (BLOCK, num_warps)


def expand(argv: list[str]) -> tuple[str | None, list[str]]:
    """``(preset name or None, argv with the preset's flags first)``; the last ``--preset`` wins."""
    name, rest, i = None, [], 0
    while i < len(argv):
        if argv[i] == "--preset" and i + 1 < len(argv):
            name, i = argv[i + 1], i + 2
        elif argv[i].startswith("--preset="):
            name, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest.append(argv[i])
            i += 1
    if name is None:
        return None, rest
    if name not in PRESETS:
        raise SystemExit(f"gtl-bench: unknown preset {name!r}; choose from {list(PRESETS)}")
    return name, PRESETS[name] + rest


def triton_sweep() -> int:
    """Print the time of ``sample`` (bf16, N = 8192) per launch setting, as a multiple of ``argmax``, and whether it
    draws the same tokens as the first setting (it must: the race is defined per 1024-token chunk)."""
    if not torch.cuda.is_available():
        print("gtl-bench --preset triton-sweep: no CUDA device")
        return 1
    from triton.testing import do_bench

    import gtl_kernels

    def bench(fn) -> float:
        return do_bench(fn, warmup=10, rep=50, return_mode="median") * 1e-3

    dev = torch.device("cuda")
    saved = {k: os.environ.get(k) for k in ("GTL_TRITON_BLOCK", "GTL_TRITON_NUM_WARPS")}
    try:
        for v in (50257, 128256):
            logits = (torch.randn(8192, v, device=dev) * 3).to(torch.bfloat16)
            keys = torch.arange(8192, device=dev, dtype=torch.int64)
            t_arg = bench(lambda: torch.argmax(logits, dim=-1))
            want = None
            for block, warps in SWEEP_SETTINGS:
                os.environ["GTL_TRITON_BLOCK"], os.environ["GTL_TRITON_NUM_WARPS"] = str(block), str(warps)
                got = gtl_kernels.sample(logits, seeds=keys, backend="triton")
                want = got if want is None else want
                t = bench(lambda: gtl_kernels.sample(logits, seeds=keys, backend="triton"))
                print(f"sweep V={v:<6} BLOCK={block:<5} warps={warps:<2} sample {t * 1e6:8.1f} us  x argmax "
                      f"{t / t_arg:5.2f}  same tokens as the first setting: {float((got == want).float().mean()):.5f}",
                      flush=True)
        # the other ops at the two warp counts the first sweep (H200, 2026-12-04) left open for `sample`: 8 (the
        # default) and 4, BLOCK 4096; each op's outputs must not depend on the setting either
        os.environ["GTL_TRITON_BLOCK"] = "4096"
        for v in (50257, 128256):
            logits = (torch.randn(8192, v, device=dev) * 3).to(torch.bfloat16)
            keys = torch.arange(8192, device=dev, dtype=torch.int64)
            x_t = torch.full((8192,), v - 1, device=dev, dtype=torch.int64)
            ops = {
                "masked_transition": lambda: gtl_kernels.masked_transition(
                    x_t, logits, stay_prob=0.5, mask_id=v - 1, seeds=keys, backend="triton"),
                "guided_log_softmax": lambda: gtl_kernels.guided_log_softmax(logits, backend="triton"),
                "topk_log_softmax k=64": lambda: gtl_kernels.topk_log_softmax(logits, 64, backend="triton")[1],
                "confidence": lambda: gtl_kernels.confidence(logits, kind="max_prob", backend="triton")[0],
                "sample top_k=50": lambda: gtl_kernels.sample(logits, top_k=50, seeds=keys, backend="triton"),
            }
            t_arg = bench(lambda: torch.argmax(logits, dim=-1))
            for name, fn in ops.items():
                times, outs = {}, {}
                for warps in (8, 4):
                    os.environ["GTL_TRITON_NUM_WARPS"] = str(warps)
                    outs[warps] = fn()
                    times[warps] = bench(fn)
                same = torch.equal(outs[8], outs[4])
                print(f"sweep-op V={v:<6} {name:<22} warps 8 {times[8] * 1e6:8.1f} us ({times[8] / t_arg:5.2f}x argmax)  "
                      f"warps 4 {times[4] * 1e6:8.1f} us ({times[4] / t_arg:5.2f}x)  same outputs: {same}", flush=True)
    finally:
        for k, val in saved.items():
            if val is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = val
    return 0
