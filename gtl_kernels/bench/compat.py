"""The drop-ins side by side with the original formulas they replace: same inputs, same run (``gtl-bench --compat``,
also ``python -m gtl_kernels.bench.compat``).

For every case of ``gtl_kernels.bench.originals.<codebase>.bench_cases``: the median time of the original step, of
the drop-in and of one streaming read of the same logits (``torch.amax``), interleaved in one loop so that load on a
shared machine hits all three alike; and the peak extra resident memory of each side, as a multiple of one fp32
``[B, L, V]`` logits tensor. Times are outside the model forward where the case precomputes the logits; where a
side calls a model (the GTL step's ratio network), the time inside it is measured and subtracted.

Peak memory on the CPU: the process's peak resident set (``VmHWM``) is reset before a call (``/proc/self/clear_refs``
with ``5``, Linux) and read after it, minus the resident set before the call. Memory the allocator keeps from
earlier calls would hide a call's temporaries, so it is first handed back to the OS (glibc ``malloc_trim``).

``--device cuda``: inputs and model stubs on the GPU; every timed call and every model call ends with a device
synchronization (so host clocks measure the work, not its launch), and the peak is the caching allocator's peak
(``torch.cuda.max_memory_allocated``) over the memory allocated before the call.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from .originals import CODEBASES, CompatCase


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc), so that reusing it counts as resident growth again."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_extra_bytes(fn, device: torch.device | None = None) -> int | None:
    """Peak memory a call of ``fn`` adds (bytes): resident memory on the CPU, or ``None`` where the OS cannot tell
    (not Linux); the caching allocator's peak on a CUDA ``device``."""
    if device is not None and device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    _release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    return None if before is None or peak is None else max(0, peak - before) * 1024


class ModelClock:
    """Wraps a callable (a model) and sums the seconds spent inside it. ``device`` (set by :func:`_timed`): a CUDA
    device is synchronized before and after each call, so that the seconds are the model's work."""

    def __init__(self, fn):
        self.fn, self.seconds, self.device = fn, 0.0, None

    def __call__(self, *args, **kwargs):
        _sync(self.device)
        t0 = time.perf_counter()
        out = self.fn(*args, **kwargs)
        _sync(self.device)
        self.seconds += time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        """The wrapped model's other methods, timed the same way (a ratio model's ``score_substitutions``); a
        method the model lacks is missing here too."""
        if name in ("fn", "device"):
            raise AttributeError(name)
        method = getattr(self.fn, name)

        def timed(*args, **kwargs):
            _sync(self.device)
            t0 = time.perf_counter()
            out = method(*args, **kwargs)
            _sync(self.device)
            self.seconds += time.perf_counter() - t0
            return out

        return timed


def _timed(fn, inputs, device: torch.device | None = None) -> tuple[float, float]:
    """(wall seconds, seconds inside models) of one call. A model wrapped in :class:`ModelClock` in ``inputs``
    (key ``"model_clock"``) reports its share."""
    clock = inputs.get("model_clock")
    if clock is not None:
        clock.seconds = 0.0
        clock.device = device
    _sync(device)
    t0 = time.perf_counter()
    fn(inputs)
    _sync(device)
    wall = time.perf_counter() - t0
    return wall, (clock.seconds if clock is not None else 0.0)


def measure(case: CompatCase, runs: int, max_seconds: float, device: torch.device | None = None) -> dict:
    """Interleaved medians of the original, the drop-in and the floor, and the peak extra memory of each side
    (``device``: where the case's inputs live; CUDA adds synchronizations, see the module's docstring)."""
    inputs = case.make_inputs()
    for fn in (case.floor, case.dropin, case.original):  # warm-up (allocator, caches, lazy loads)
        fn(inputs)
    times = {"original": [], "dropin": [], "floor": []}
    models = {"original": [], "dropin": []}
    t_start = time.perf_counter()
    for i in range(runs):
        for side, fn in (("floor", case.floor), ("dropin", case.dropin), ("original", case.original)):
            wall, model = _timed(fn, inputs, device)
            times[side].append(wall)
            if side in models:
                models[side].append(model)
        if i >= 2 and time.perf_counter() - t_start > max_seconds:
            break
    med = {k: statistics.median(v) for k, v in times.items()}
    outside = {k: statistics.median([w - m for w, m in zip(times[k], models[k])]) for k in models}
    mem = {k: peak_extra_bytes(lambda fn=fn: fn(inputs), device) for k, fn in (("original", case.original),
                                                                               ("dropin", case.dropin))}
    return {
        "codebase": case.codebase, "case": case.name, "runs": len(times["floor"]),
        "original_s": med["original"], "dropin_s": med["dropin"], "floor_s": med["floor"],
        "original_outside_s": outside["original"], "dropin_outside_s": outside["dropin"],
        "speedup": outside["original"] / outside["dropin"],
        "original_x_floor": outside["original"] / med["floor"], "dropin_x_floor": outside["dropin"] / med["floor"],
        "original_peak_x_logits": None if mem["original"] is None else mem["original"] / case.logits_bytes,
        "dropin_peak_x_logits": None if mem["dropin"] is None else mem["dropin"] / case.logits_bytes,
        "original_temporaries": case.temporaries,
    }


def collect(codebases, quick: bool, device="cpu") -> list[CompatCase]:
    cases = []
    for name in codebases:
        try:
            mod = importlib.import_module(f"gtl_kernels.bench.originals.{name}")
        except ModuleNotFoundError:
            continue
        cases += mod.bench_cases(quick, device)
    return cases


def markdown(records: list[dict], meta: dict) -> str:
    """A ``docs/PERF.md`` section."""
    lines = [
        f"## Drop-ins against the original formulas ({meta.get('device', 'cpu').upper()})",
        "",
        f"- machine: {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads; {meta['date']}; "
        f"load before the run {meta['load']}",
        f"- command: `{meta['command']}`",
        "- times are medians of interleaved runs, outside the model forward; `x amax` = that time over one "
        "streaming read of the same logits (`torch.amax`) in the same run; peak = extra resident memory of one "
        "call over one fp32 `[B, L, V]` logits tensor.",
        "",
        "| codebase | case | original | drop-in | speedup | original x amax | drop-in x amax | peak original | "
        "peak drop-in |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        def peak(v):
            return "n/a" if v is None else f"{v:.2f}x"
        lines.append(
            f"| {r['codebase']} | {r['case']} | {r['original_outside_s'] * 1e3:.1f} ms | "
            f"{r['dropin_outside_s'] * 1e3:.2f} ms | {r['speedup']:.0f}x | {r['original_x_floor']:.0f}x | "
            f"{r['dropin_x_floor']:.1f}x | {peak(r['original_peak_x_logits'])} | {peak(r['dropin_peak_x_logits'])} |")
    lines += ["", "Temporaries of the originals (by reading them): "
              + "; ".join(sorted({f"{r['codebase']}: {r['original_temporaries']}" for r in records})), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gtl-bench --compat", description=__doc__.split("\n\n")[0])
    p.add_argument("--codebases", default=",".join(CODEBASES), help=f"comma list of {', '.join(CODEBASES)}")
    p.add_argument("--quick", action="store_true", help="tiny shapes (seconds; the CI smoke run)")
    p.add_argument("--runs", type=int, default=7, help="interleaved runs per case (at least 3 are kept)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="stop repeating a case after this long")
    p.add_argument("--json", help="write the records here")
    p.add_argument("--markdown", help="write the PERF.md section here")
    p.add_argument("--device", default="cpu", help="where inputs and model stubs live: cpu (default) or cuda[:i]")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gtl-bench --compat: --device cuda needs a CUDA device")
    names = [c.strip() for c in args.codebases.split(",") if c.strip()]
    bad = [c for c in names if c not in CODEBASES]
    if bad:
        raise SystemExit(f"gtl-bench --compat: unknown codebase {bad}; choose from {list(CODEBASES)}")
    import os

    machine = f"{platform.machine()} x {os.cpu_count()} CPUs"
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} ({machine})"
    meta = {"machine": machine, "device": device.type, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "command": "gtl-bench --compat" + (" --quick" if args.quick else "")
            + (f" --device {args.device}" if device.type != "cpu" else "")}
    records = []
    with torch.inference_mode():
        for case in collect(names, args.quick, device):
            r = measure(case, args.runs, args.max_seconds, device)
            records.append(r)
            print(f"{r['codebase']:<9} {r['case']:<44} original {r['original_outside_s'] * 1e3:9.1f} ms  "
                  f"drop-in {r['dropin_outside_s'] * 1e3:8.2f} ms  speedup {r['speedup']:6.1f}x  "
                  f"drop-in {r['dropin_x_floor']:5.1f}x amax  peak {r['original_peak_x_logits'] or 0:5.2f}x -> "
                  f"{r['dropin_peak_x_logits'] or 0:5.2f}x logits", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(records, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
