"""Run a set of benchmark cases and return one JSON-ready document.

For each case, in order: the floor (``argmax``), the copy, every selected backend, then the PyTorch-way baselines;
each implementation is called once and checked (against the reference on the first rows, or for valid tokens),
then timed. Nothing that failed its check is timed. Every number of a case comes from the same inputs in the same
run, so the ratios (``time / argmax time`` and the others) are meaningful even on a shared, noisy machine.

Document layout (``schema: gtl-bench/1``)::

    meta:     date, command, machine, device, versions, backends (available or why not)
    settings: device, backends, baselines, timing parameters
    cases:    [ {op, n, v, dtype, bias, k, kind, top_k, label, bytes,
                 results: [ {impl, role, status, reason, check, time_s, runs, method, gbps,
                             ratio: {argmax, copy, torch, pytorch, pytorch-fp64, compile, ...}, bw_fraction} ]} ]
    e2e:      [ end-to-end sampler steps, see e2e.py ]
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import gtl_kernels as gk

from . import baselines as bl
from .cases import CHECK_ROWS, DTYPES, LOGIT_SCALE, Case, CheckFailed, Inputs, check_against_reference
from .cases import check_tokens_valid, grouped, make_inputs, op_call, random_matrix, reference_output
from .timing import measure, time_once

SCHEMA = "gtl-bench/1"
# Ratios reported for every result, to these implementations of the same case (when measured).
RATIO_TO = ("argmax", "amax", "log_softmax", "copy", "torch", "pytorch", "pytorch-fp64", "compile")
BASELINE_ORDER = ("argmax", "amax", "log_softmax", "copy", "pytorch", "pytorch-fp64", "multinomial", "compile", "flashinfer")
# Bytes of temporaries per logits element of the float64 reference (scores, tempered scores, padded copy, ...).
REFERENCE_TEMP_BYTES = 48


@dataclasses.dataclass
class RunConfig:
    """What to run. ``backends``/``baselines`` are names (see :func:`select_backends` and ``baselines.BASELINES``)."""

    device: torch.device
    cases: list[Case]
    backends: list[str]
    baselines: list[str] = dataclasses.field(default_factory=lambda: list(BASELINE_ORDER))
    compile_ops: tuple[str, ...] = bl.DEFAULT_COMPILE_OPS
    check: bool = True
    min_time: float = 0.5
    max_runs: int = 25
    slow_s: float = 0.5
    seed: int = 0
    progress: bool = True
    command: str = ""
    interleave: bool = False  # time a case's implementations round-robin (see run_case_interleaved)


# ---------------------------------------------------------------------------------------------------------------------
# Backends and environment
# ---------------------------------------------------------------------------------------------------------------------


def select_backends(requested: list[str] | None, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """Backends to time on ``device``: the requested ones (``None`` = every available one) that can run there.

    Returns (names, {name: why skipped}). The Triton interpreter (``TRITON_INTERPRET=1`` without a GPU) runs programs
    one after another in Python and is far too slow to time: skipped on the CPU.
    """
    infos = gk.available_backends()
    unknown = [b for b in requested or () if b not in infos]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; known: {sorted(infos)}")
    chosen, skipped = [], {}
    for name, info in infos.items():
        if requested is not None and name not in requested:
            continue
        if not info.available:
            skipped[name] = f"not available: {info.reason}"
        elif info.device_types and device.type not in info.device_types:
            skipped[name] = f"runs on {'/'.join(info.device_types)}, not {device.type}"
        elif name == "triton" and device.type == "cpu":
            skipped[name] = "Triton interpreter on the CPU: far too slow to time"
        else:
            chosen.append(name)
    # The reference first (the others are compared with it), then by priority as the registry lists them.
    chosen.sort(key=lambda n: n != "torch")
    return chosen, skipped


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def available_memory(device: torch.device) -> int | None:
    """Bytes that new tensors on ``device`` can still take (None if unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return _meminfo_bytes("MemAvailable")


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", "?")
    except Exception:
        return None


def environment(device: torch.device, command: str = "") -> dict:
    """Machine, device, versions, backends and date of a run."""
    device_info: dict = {"type": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        device_info |= {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
        }
    else:
        device_info |= {"name": _cpu_model(), "threads": torch.get_num_threads()}
    mem = _meminfo_bytes("MemTotal")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "git": _git_commit(),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "memory_gib": None if mem is None else round(mem / 2**30, 1),
            # Other work on the machine slows small parallel ops by whole scheduler slices: kept with the numbers.
            "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "device": device_info,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "triton": _version("triton"),
            "numpy": _version("numpy"),
            "gtl_kernels": gk.__version__,
            "flashinfer": _version("flashinfer"),
        },
        "backends": {n: {"available": i.available, "reason": i.reason} for n, i in gk.available_backends().items()},
    }


# ---------------------------------------------------------------------------------------------------------------------
# One implementation of one case
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Impl:
    """An implementation to measure: a backend (through the public API) or a baseline."""

    name: str
    role: str  # "floor", "bandwidth", "backend", "baseline"
    check: str | None  # "reference", "tokens", "is-reference" or None
    optional: bool = False
    warm_call: bool = False
    temp_bytes: float = 0.0

    def build(self, case: Case, inp: Inputs):
        if self.role == "backend":
            return op_call(case, inp, self.name)
        return bl.build(self.name, case, inp)


def impls_for(case: Case, config: RunConfig) -> list[Impl]:
    """The implementations measured for ``case``, in order: the floors and the copy, the ``torch`` reference, the
    PyTorch-way and peer baselines, then the other backends (so that, timed in this order, every backend has all
    its ratios available when it is measured, as the pytest benchmarks need)."""
    floors, refs, baselines, backends = [], [], [], []
    for name in config.baselines:
        if name not in bl.BASELINES or not bl.applies(name, case, config.device.type, config.compile_ops):
            continue
        b = bl.BASELINES[name]
        if name in ("argmax", "amax", "log_softmax", "copy"):
            floors.append(Impl(name, "bandwidth" if name == "copy" else "floor", None, temp_bytes=b.temp_bytes))
        else:
            baselines.append(Impl(name, "baseline", bl.check_mode(name, case), b.optional, b.warm_call, b.temp_bytes))
    out_bytes = 4 if case.op == "guided_log_softmax" else 0
    for name in config.backends:
        if name == "torch":
            refs.append(Impl(name, "backend", "is-reference", temp_bytes=REFERENCE_TEMP_BYTES))
        else:
            backends.append(Impl(name, "backend", "reference", temp_bytes=out_bytes))
    order = {n: i for i, n in enumerate(BASELINE_ORDER)}
    floors.sort(key=lambda i: order[i.name])
    baselines.sort(key=lambda i: order[i.name])
    return floors + refs + baselines + backends


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Reference:
    """The reference output of a case on its first ``CHECK_ROWS`` rows, computed on first use (only if some
    implementation needs it), or taken from the ``torch`` backend's own timed call when that ran first."""

    def __init__(self, case: Case, inp: Inputs):
        self.case, self.inp, self._out = case, inp, None

    def offer(self, full_output) -> None:
        """Keep the first rows of the reference backend's output on the full batch (copies: not the whole tensor)."""
        if self._out is None:
            head = lambda t: t[:CHECK_ROWS].clone()  # noqa: E731
            self._out = tuple(map(head, full_output)) if isinstance(full_output, tuple) else head(full_output)

    def get(self):
        if self._out is None:
            self._out = reference_output(self.case, self.inp)
        return self._out


def prepare_impl(impl: Impl, case: Case, inp: Inputs, ref: Reference, config: RunConfig):
    """Build ``impl`` for ``case``, call it once and check the output.

    Returns ``(record, fn, first_s)``: ``record["status"]`` is ``ok`` (then ``fn`` is the callable to time and
    ``first_s`` the time of the checked call), ``skipped`` (cannot run here: unavailable, too large, optional
    baseline failing), ``failed`` (wrong output) or ``error`` (raised); ``reason`` says why.
    """
    rec: dict = {"impl": impl.name, "role": impl.role, "status": "ok"}
    device = config.device
    need = impl.temp_bytes * case.n * case.v
    avail = available_memory(device)
    if avail is not None and need > 0.8 * avail:
        reason = f"needs ~{need / 2**30:.1f} GiB of temporaries, {avail / 2**30:.1f} GiB free"
        return rec | {"status": "skipped", "reason": reason}, None, None
    try:
        fn = impl.build(case, inp)
        out, first_s = time_once(fn, device)
    except bl.Unavailable as exc:
        return rec | {"status": "skipped", "reason": str(exc)}, None, None
    except Exception as exc:  # a failing implementation must not stop the run; the record says why
        if device.type == "cuda":
            torch.cuda.empty_cache()
        status = "skipped" if impl.optional or _is_oom(exc) else "error"
        return rec | {"status": status, "reason": _short(exc)}, None, None
    try:
        if not config.check or impl.check is None:
            rec["check"] = "not checked" if impl.check else "n/a"
        elif impl.check == "is-reference":
            rec["check"] = "is the reference"
            ref.offer(out)
        elif impl.check == "tokens":
            rec["check"] = check_tokens_valid(case, inp, out)
        else:
            rec["check"] = check_against_reference(case, inp, out, ref.get())
    except CheckFailed as exc:
        return rec | {"status": "failed", "reason": str(exc)}, None, None
    return rec, fn, first_s


def run_impl(impl: Impl, case: Case, inp: Inputs, ref: Reference, config: RunConfig) -> dict:
    """Check, then time one implementation (nothing that failed its check is timed); a record for the document."""
    rec, fn, first_s = prepare_impl(impl, case, inp, ref, config)
    if rec["status"] != "ok":
        return rec
    device = config.device
    # On the CPU the checked call counts as the first timed one (seconds saved at large shapes); a call that
    # compiles, and any first CUDA call (kernel JIT, allocator), is kept out.
    first = None if (impl.warm_call or device.type == "cuda") else first_s
    try:
        t = measure(fn, device, min_time=config.min_time, max_runs=config.max_runs, slow_s=config.slow_s, first_s=first)
    except Exception as exc:
        return rec | {"status": "skipped" if _is_oom(exc) else "error", "reason": _short(exc)}
    return rec | {"time_s": t.median_s, "runs": t.runs, "min_s": t.min_s, "method": t.method}


def run_case_interleaved(impls: list[Impl], case: Case, inp: Inputs, ref: Reference, config: RunConfig,
                         tick=None) -> list[dict]:
    """Check every implementation of a case, then time them round-robin: each repetition calls every one once, back
    to back, so load from other processes hits all of them alike and the per-repetition ratios (see
    :func:`add_ratios`) cancel most of it. An implementation whose checked call took ``slow_s`` or more is timed by
    that call alone. Repetitions: at least 3, at most ``max_runs``, until ``min_time`` per implementation was spent."""
    prepared = []
    for impl in impls:
        prepared.append(prepare_impl(impl, case, inp, ref, config))
        if tick is not None:
            tick(impl)
    live = []
    for rec, fn, first_s in prepared:
        if rec["status"] != "ok":
            continue
        if first_s >= config.slow_s:
            rec.update(time_s=first_s, runs=1, min_s=first_s, method="wall")
        else:
            live.append((rec, fn))
    samples: dict[int, list[float]] = {id(rec): [] for rec, _ in live}
    cpu: dict[int, list[float]] = {id(rec): [] for rec, _ in live}
    spent, reps = 0.0, 0
    while live and reps < config.max_runs and (reps < 3 or spent < config.min_time * len(live)):
        for rec, fn in list(live):
            try:
                c0 = time.process_time()
                dt = time_once(fn, config.device)[1]
                dc = time.process_time() - c0
            except Exception as exc:
                rec.update(status="skipped" if _is_oom(exc) else "error", reason=_short(exc))
                live.remove((rec, fn))
                continue
            samples[id(rec)].append(dt)
            cpu[id(rec)].append(dc)
            spent += dt
        reps += 1
    for rec, _ in live:
        times = samples[id(rec)]
        rec.update(time_s=statistics.median(times), runs=len(times), min_s=min(times), method="wall, interleaved",
                   samples_s=times)
        if config.device.type == "cpu":  # CPU time of the process (all threads): the work, whatever the load
            rec.update(cpu_s=statistics.median(cpu[id(rec)]), cpu_samples_s=cpu[id(rec)])
    return [rec for rec, _, _ in prepared]


def derived(case: Case, impl: str, t: float, times: dict[str, float], logits_bytes: int) -> dict:
    """Effective bandwidth (GB/s), ratios ``t / times[base]`` to the other implementations of the case, and the
    fraction of the copy bandwidth (the copy moves the logits twice: read and write)."""
    copy_gbps = 2 * logits_bytes / times["copy"] / 1e9 if times.get("copy") else None
    if impl == "copy":
        gbps = 2 * logits_bytes / t / 1e9
    elif impl in ("argmax", "amax"):
        gbps = logits_bytes / t / 1e9
    else:
        gbps = case.bytes_moved() / t / 1e9
    out = {"gbps": gbps, "elems_per_s": case.n * case.v / t,
           "ratio": {b: t / times[b] for b in RATIO_TO if times.get(b) and b != impl}}
    if copy_gbps and impl != "copy":
        out["bw_fraction"] = gbps / copy_gbps
    return out


def add_ratios(case: Case, results: list[dict], logits_bytes: int) -> None:
    """:func:`derived` numbers for every timed result of a case (in place)."""
    times = {r["impl"]: r["time_s"] for r in results if r.get("time_s")}
    samples = {r["impl"]: r["samples_s"] for r in results if r.get("samples_s")}
    cpu = {r["impl"]: r["cpu_samples_s"] for r in results if r.get("cpu_samples_s")}
    for r in results:
        if r.get("time_s"):
            r.update(derived(case, r["impl"], r["time_s"], times, logits_bytes))
            # Interleaved runs: the median of the per-repetition ratios (both sides of each ratio saw the same load).
            mine = samples.get(r["impl"])
            for base in r["ratio"]:
                other = samples.get(base)
                if mine and other and len(mine) == len(other):
                    r["ratio"][base] = statistics.median(a / b for a, b in zip(mine, other))
            # The same in process CPU time: on a machine shared with other work, wall time also measures how much of
            # the cores the process got; CPU time measures the work done.
            mine = cpu.get(r["impl"])
            ratio_cpu = {}
            for base in r["ratio"]:
                other = cpu.get(base)
                pairs = [(a, b) for a, b in zip(mine or (), other or ()) if b > 0]
                if mine and other and len(mine) == len(other) and pairs:
                    ratio_cpu[base] = statistics.median(a / b for a, b in pairs)
            if ratio_cpu:
                r["ratio_cpu"] = ratio_cpu


# ---------------------------------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------------------------------


def settings(config: RunConfig) -> dict:
    return {
        "device": str(config.device),
        "backends": config.backends,
        "baselines": config.baselines,
        "compile_ops": list(config.compile_ops),
        "check": config.check,
        "check_rows": CHECK_ROWS,
        "inputs": f"logits ~ Normal(0, {LOGIT_SCALE}), bias ~ Normal(0, 1), gamma = temperature = 1; "
                  "masked_transition: every position masked, stay_prob = 0",
        "min_time_s": config.min_time,
        "max_runs": config.max_runs,
        "slow_s": config.slow_s,
        "seed": config.seed,
        "interleave": config.interleave,
    }


def run(config: RunConfig, skipped_backends: dict[str, str] | None = None) -> dict:
    """Measure every case of ``config``; the JSON-ready document (see the module docstring)."""
    doc = {
        "schema": SCHEMA,
        "meta": environment(config.device, config.command),
        "settings": settings(config) | {"skipped_backends": skipped_backends or {}},
        "cases": [],
        "e2e": [],
    }
    plan = [(c, impls_for(c, config)) for c in config.cases]
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(i) for _, i in plan), desc="gtl-bench", unit="impl", dynamic_ncols=True,
                   file=sys.stderr)
    impls_of = {c: i for c, i in plan}
    with torch.inference_mode():
        for (n, v, dtype), cases in grouped(config.cases).items():
            logits = random_matrix(n, v, DTYPES[dtype], config.device, config.seed)
            bias = None
            for case in cases:
                if case.bias and bias is None:
                    bias = random_matrix(n, v, DTYPES[dtype], config.device, config.seed + 1, scale=1.0)
                inp = make_inputs(n, v, dtype, config.device, bias=False, seed=config.seed, logits=logits)
                inp.bias = bias if case.bias else None
                ref = Reference(case, inp)
                results = []
                if config.interleave:
                    tick = None if bar is None else lambda impl: bar.update(1)
                    results = run_case_interleaved(impls_of[case], case, inp, ref, config, tick)
                for impl in impls_of[case] if not config.interleave else ():
                    if bar is not None:
                        bar.set_postfix_str(f"{case.label} | {impl.name}", refresh=False)
                    results.append(run_impl(impl, case, inp, ref, config))
                    if bar is not None:
                        bar.update(1)
                add_ratios(case, results, logits.numel() * logits.element_size())
                doc["cases"].append(case.as_dict() | {"results": results})
            del logits, bias, inp, ref  # free this shape's tensors before the next shape's are drawn
            if config.device.type == "cuda":
                torch.cuda.empty_cache()
    if bar is not None:
        bar.close()
    if hasattr(os, "getloadavg"):
        doc["meta"]["machine"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    return doc

