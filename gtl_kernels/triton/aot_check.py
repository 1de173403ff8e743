"""Every Triton kernel of the backend through the real compiler for sm_80 (A100) and sm_90 (H100), without a GPU.

``python -m gtl_kernels.triton.aot_check`` runs the backend's own host code (``_race.draw``, ``RowStats``, the op
modules) on ``meta`` tensors with the device taken for a GPU, and records every launch: kernel, argument types, the
integer specializations Triton would make (divisibility by 16), constexprs, ``num_warps`` and ``num_stages``. So the
configurations follow the launchers as they change; nothing here repeats their block sizes. Each distinct launch is
compiled with ``triton.compile`` for both architectures (PTX, then the wheel's ``ptxas``), and the wheel's
``cuobjdump`` reads the cubin's registers, stack, local and static shared memory.

Exit status 1 on a compile failure, a register spill (local memory, or spill stores / loads that ``ptxas -v``
reports for a kernel with a stack frame; a frame without them is a call frame, not a spill), or shared memory above
the architecture's per-block limit. ``--markdown FILE`` writes the table between ``<!-- triton-aot:begin -->`` and
``<!-- triton-aot:end -->``. The hot loops' SASS is read by ``sass.py``.

Processes can share one plan: each started with ``--claim DIR --save FILE`` compiles the launches it claims first
(a file per launch in DIR), so a process that starts late or ends early only takes fewer; ``--merge FILE...`` then
reports them together and fails unless they cover the plan exactly once (CI: one process in each lane).

Runs in its own process: under ``TRITON_INTERPRET=1`` the kernels are Python functions, so the module re-executes
itself without it. The Triton cache goes to a fresh temporary directory (nothing is reused across runs).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..reference import CONFIDENCE_KINDS

# Per-block shared memory a kernel may request (the opt-in maximum, which Triton checks at launch), and SM counts
# (the launchers size their splits by them).
ARCHS = {
    80: dict(card="A100", shared_limit=163 * 1024, sms=108),
    90: dict(card="H100", shared_limit=227 * 1024, sms=132),
}
LOGIT_DTYPES = ("float32", "bfloat16", "float16")
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}
MARK_TABLE = "triton-aot"


def tool(name: str) -> str:
    """Path of a CUDA binary shipped in the Triton wheel (``cuobjdump``, ``nvdisasm``, ``ptxas``)."""
    import triton.backends.nvidia as nv

    return str(Path(nv.__file__).parent / "bin" / name)


# ---------------------------------------------------------------------------------------------------------------------
# The cases: calls of the backend's host functions (normalized arguments, as gtl_kernels.ops passes them)
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of a host function. ``v`` is the row length (the candidate count K with ``index``)."""

    op: str  # sample | masked_transition | guided_log_softmax | confidence | topk_log_softmax | philox
    n: int
    v: int
    dtype: str = "bfloat16"
    bias: str | None = None  # bias dtype, None for no bias
    index: bool = False
    top_k: int = 0  # top_k of the draw ops, k of topk_log_softmax
    kind: str = "max_prob"

    def describe(self) -> str:
        parts = [self.op, f"{self.n}x{self.v}", SHORT_DTYPE[self.dtype]]
        if self.bias:
            parts.append(f"bias {SHORT_DTYPE[self.bias]}")
        if self.index:
            parts.append("index")
        if self.top_k:
            parts.append(f"{'k' if self.op == 'topk_log_softmax' else 'top_k'}={self.top_k}")
        if self.op == "confidence":
            parts.append(self.kind)
        return " ".join(parts)


# Row lengths that reach every tile shape of the launchers: the benchmark vocabularies (30522 and 50257 have rows that
# are not multiples of 16; 128256 is), rows of one, two and four 1024-token chunks, a row shorter than a chunk, and
# GTL's candidate sets (index path).
VOCABS = (128256, 50257, 30522, 4096, 2048, 1000, 100)
CANDIDATES = (512, 64)
BATCHES = (8192, 8, 1)  # one program per row (fused) and the split paths of small batches
TOP_KS = (1, 32, 64, 128, 256, 512, 1024, 2000)  # every buffer size K_PAD, and the sort path beyond K_MAX


def _draw_cases(op: str) -> list[Case]:
    """``sample`` / ``masked_transition``: every dtype, bias, index and top-k, row and split paths."""
    out = []
    for dtype, bias, index in itertools.product(LOGIT_DTYPES, (False, True), (False, True)):
        for n, v, top_k in itertools.product(BATCHES, CANDIDATES if index else VOCABS, (0,) + TOP_KS):
            if top_k < v:
                out.append(Case(op, n, v, dtype, dtype if bias else None, index, top_k))
    return out


def _stats_cases(op: str) -> list[Case]:
    """The row-statistics ops: every dtype, bias, tile, split and (``confidence``) kind."""
    tops = TOP_KS if op == "topk_log_softmax" else (0,)
    kinds = CONFIDENCE_KINDS if op == "confidence" else ("max_prob",)
    out = []
    for dtype, bias, n, v, top_k, kind in itertools.product(LOGIT_DTYPES, (False, True), BATCHES, VOCABS, tops, kinds):
        if op != "topk_log_softmax" or top_k < v:
            out.append(Case(op, n, v, dtype, dtype if bias else None, False, top_k, kind))
    return out


def cases() -> list[Case]:
    """Every host call of the grid; ``masked_transition`` includes ``index`` (the candidate path)."""
    out = _draw_cases("sample") + _draw_cases("masked_transition")
    for op in ("guided_log_softmax", "confidence", "topk_log_softmax"):
        out += _stats_cases(op)
    out.append(Case("philox", 4096, 4, "float32"))
    return out


def benchmark_cases() -> list[Case]:
    """The GPU benchmark's default case set (``gtl_kernels.bench.cases``): the configurations the goals are measured
    on, preferred by the covering subset."""
    from ..bench.cases import preset

    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    out = []
    for c in preset("default", "cuda").cases():
        top = c.k if c.op == "topk_log_softmax" else c.top_k
        out.append(Case(c.op, c.n, c.v, dtype[c.dtype], dtype[c.dtype] if c.bias else None, False, top, c.kind))
    return out


def _meta(*shape, dtype="float32"):
    import torch

    return torch.empty(*shape, dtype=getattr(torch, dtype), device="meta")


def call(case: Case) -> None:
    """Run the backend's host function for ``case`` on meta tensors (inside ``recording``)."""
    from . import _race, confidence, guided_log_softmax, philox, topk_log_softmax

    n, v = case.n, case.v
    logits = _meta(n, v, dtype=case.dtype)
    bias = _meta(n, v, dtype=case.bias) if case.bias else None
    gamma, temp = _meta(n), _meta(n)
    if case.op in ("sample", "masked_transition"):
        extra = dict(index=_meta(n, v, dtype="int64") if case.index else None)
        if case.op == "masked_transition":
            extra.update(x_t=_meta(n, dtype="int64"), stay_prob=_meta(n), mask_id=v - 1)
        _race.draw(logits, bias, gamma, temp, case.top_k, _meta(n, dtype="int64"), _meta((), dtype="int64"),
                   logprob=case.op == "sample", **extra)  # as gtl_kernels/triton/sample.py calls it
    elif case.op == "guided_log_softmax":
        guided_log_softmax.log_softmax(logits, bias, gamma, temp)
    elif case.op == "confidence":
        confidence._confidence(logits, bias, gamma, temp, case.kind)
    elif case.op == "topk_log_softmax":
        topk_log_softmax.topk(logits, case.top_k, bias, gamma, temp)
    elif case.op == "philox":
        philox._philox(_meta(n, dtype="int64"), _meta(n, 4, dtype="int64"))
    else:
        raise ValueError(f"unknown op {case.op!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Recording the launches
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Launch:
    """A kernel as the runtime would compile it: ``key`` identifies the compilation."""

    fn: object
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    key: tuple
    cases: list = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.fn.__name__

    def config(self) -> str:
        """Constexprs, pointer dtypes of the scores, integers specialized as multiples of 16, warps and stages."""
        names = self.fn.arg_names
        parts = [f"{names[p[0]]}={_plain(v)}" for p, v in sorted(self.constexprs.items())]
        for arg in ("logits_ptr", "bias_ptr"):
            if arg in self.signature:
                parts.append(f"{arg[:-4]} {self.signature[arg][1:]}")
        div16 = [names[p[0]] for p, a in self.attrs.items()
                 if not self.signature[names[p[0]]].startswith("*") and ["tt.divisibility", 16] in a]
        if div16:
            parts.append("16|" + ",".join(div16))
        parts.append(f"w{self.options['num_warps']} s{self.options['num_stages']}")
        if self.options.get("maxnreg"):
            parts.append(f"maxnreg {self.options['maxnreg']}")
        return " ".join(parts)


def _plain(v):
    return getattr(v, "value", v)


class _Recorder:
    """Stands in for ``torch.library.wrap_triton``: binds the launch's arguments the way ``JITFunction.run`` does and
    keeps the result instead of compiling or launching."""

    def __init__(self, target, sink: dict, case: Case):
        from triton.compiler import make_backend

        self.backend = make_backend(target)
        self.sink, self.case = sink, case

    def __call__(self, fn):
        return _Bound(self, fn)


_BINDERS: dict = {}  # (kernel, GPUTarget) -> Triton's argument binder
_PACKED: dict = {}  # (kernel, target, specialization, options) -> (launch key, signature, constexprs, attrs, options)


class _Bound:
    def __init__(self, rec: _Recorder, fn):
        self.rec, self.fn = rec, fn

    def __getitem__(self, grid):
        return self.launch

    def launch(self, *args, **kwargs):
        from triton.runtime.jit import create_function_from_signature

        fn, backend = self.fn, self.rec.backend
        key = (fn, backend.target)  # building a binder execs generated code: once per kernel and target
        if key not in _BINDERS:
            _BINDERS[key] = create_function_from_signature(fn.signature, fn.params, backend)
        bound, specialization, options = _BINDERS[key](*args, **kwargs)
        # what the compilation depends on: the specialization (argument types, alignment, constexpr values) and the
        # launch options; packing the arguments is the slow part of recording, so it is done once per distinct pair
        packed_key = (key, repr(specialization), repr(sorted(options.items())))
        if packed_key not in _PACKED:
            options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
            opts = options.__dict__
            _PACKED[packed_key] = (
                (fn.__name__, tuple(signature.items()), tuple(sorted((k, _plain(v)) for k, v in constexprs.items())),
                 repr(sorted(attrs.items())), opts["num_warps"], opts["num_stages"], opts.get("maxnreg")),
                signature, constexprs, attrs, dict(opts))
        launch_key, signature, constexprs, attrs, opts = _PACKED[packed_key]
        launch = self.rec.sink.setdefault(launch_key, Launch(fn, signature, constexprs, attrs, opts, launch_key))
        launch.cases.append(self.rec.case)


@contextlib.contextmanager
def recording(arch: int, sink: dict, case: Case):
    """Within: the backend's launchers take the device for an ``sm_<arch>`` GPU and record launches into ``sink``."""
    import torch
    from triton.backends.compiler import GPUTarget

    from . import _common, _race, _stats, confidence, guided_log_softmax, philox, topk_log_softmax

    rec = _Recorder(GPUTarget("cuda", arch, 32), sink, case)
    modules = (_race, _stats, confidence, guided_log_softmax, philox, topk_log_softmax)
    saved = [(m, m.wrap_triton) for m in modules]
    saved_common = (_common.interpreted, _common._sm_count)
    saved_device = torch.cuda.current_device
    try:
        for m in modules:
            m.wrap_triton = rec
        _common.interpreted = lambda device: False
        _common._sm_count = lambda index: ARCHS[arch]["sms"]
        torch.cuda.current_device = lambda: 0
        yield
    finally:
        for m, w in saved:
            m.wrap_triton = w
        _common.interpreted, _common._sm_count = saved_common
        torch.cuda.current_device = saved_device


def record(arch: int, case_list: list[Case]) -> list[Launch]:
    """The distinct launches of ``case_list`` for ``sm_<arch>``, in order of first appearance, with the launch
    settings' environment cleared (the launchers' defaults)."""
    sink: dict = {}
    env = {k: os.environ.pop(k) for k in ("GTL_TRITON_BLOCK", "GTL_TRITON_NUM_WARPS", "GTL_TRITON_SPLITS")
           if k in os.environ}
    try:
        for case in case_list:
            with recording(arch, sink, case):
                call(case)
    finally:
        os.environ.update(env)
    return list(sink.values())


def features(la: Launch) -> set:
    """What may change the generated code: each constexpr, each pair of boolean constexprs, the pointer dtypes,
    whether each specializable integer is a multiple of 16 (vector width), warps and stages."""
    names = la.fn.arg_names
    out = {("const", names[p[0]], _plain(v)) for p, v in la.constexprs.items()}
    # flags pairwise (e.g. MASKED with HAS_INDEX): code paths that meet only when both are on
    flags = sorted((names[p[0]], _plain(v)) for p, v in la.constexprs.items() if isinstance(_plain(v), bool))
    out |= {("flags", a, b) for a, b in itertools.combinations(flags, 2)}
    out |= {("ptr", k, v) for k, v in la.signature.items() if v.startswith("*")}
    for i, name in enumerate(names):
        kind = la.signature[name]
        if kind != "constexpr" and not kind.startswith("*") and not la.fn.params[i].do_not_specialize:
            out.add(("div16", name, ["tt.divisibility", 16] in la.attrs.get((i,), [])))
    return out | {("warps", la.options["num_warps"]), ("stages", la.options["num_stages"])}


def select(launches: list[Launch], preferred: set) -> list[Launch]:
    """A covering subset, kernel by kernel: greedily the launch that adds the most (feature, value) pairs not yet
    compiled, until every value that any launch of the kernel has is covered. Ties go to the launches whose key is
    in ``preferred`` (the benchmark's configurations), then to the earlier launch of the grid."""
    chosen = []
    feats = {id(la): features(la) for la in launches}
    for name in dict.fromkeys(la.name for la in launches):
        pool = [la for la in launches if la.name == name]
        covered: set = set()
        while pool:
            best = max(pool, key=lambda la: (len(feats[id(la)] - covered), la.key in preferred))
            if not feats[id(best)] - covered:
                break
            chosen.append(best)
            covered |= feats[id(best)]
            pool.remove(best)
    return chosen


# ---------------------------------------------------------------------------------------------------------------------
# Compiling and reading the cubin
# ---------------------------------------------------------------------------------------------------------------------

_RESOURCE = re.compile(r"Function ([\w$.]+):\s*\n\s*((?:[A-Z_]+(?:\[\d+\])?:\d+\s*)+)")


def parse_resource_usage(text: str) -> dict[str, dict[str, int]]:
    """``cuobjdump --dump-resource-usage`` output -> {function: {"REG": .., "STACK": .., "SHARED": .., "LOCAL": ..}}."""
    out = {}
    for name, fields in _RESOURCE.findall(text):
        out[name] = {k: int(v) for k, v in re.findall(r"([A-Z_]+(?:\[\d+\])?):(\d+)", fields)}
    if not out:
        raise ValueError(f"no function in the resource report:\n{text[:2000]}")
    return out


def cubin_resources(cubin: bytes, workdir: str) -> dict[str, int]:
    """Registers, stack, local and static shared memory (bytes) of the single kernel in ``cubin``."""
    path = Path(workdir) / "k.cubin"
    path.write_bytes(cubin)
    text = subprocess.run([tool("cuobjdump"), "--dump-resource-usage", str(path)], check=True, capture_output=True,
                          text=True).stdout
    (usage,) = parse_resource_usage(text).values()
    return usage


def cubin_sass(cubin: bytes, workdir: str) -> str:
    """The SASS text of ``cubin`` (``cuobjdump -sass``), for ``sass.parse_sass``."""
    path = Path(workdir) / "k.cubin"
    path.write_bytes(cubin)
    return subprocess.run([tool("cuobjdump"), "-sass", str(path)], check=True, capture_output=True,
                          text=True).stdout


@dataclasses.dataclass
class Result:
    """One kernel configuration compiled for one architecture: its resources per thread (registers, stack and local
    bytes) and per block (shared bytes), or the compile error."""

    kernel: str
    config: str
    arch: int
    cases: int
    example: str
    seconds: float
    regs: int = 0
    stack: int = 0
    local: int = 0
    spill: int = -1  # ptxas' spill stores + loads (bytes), read when the cubin has a stack frame; -1: not read
    shared: int = 0  # dynamic shared memory Triton requests at launch (checked against the limit)
    static_shared: int = 0  # the cubin's static shared memory (the driver's reserved 1 KiB on sm_90)
    warps: int = 0
    cpu_seconds: float = 0.0  # this process's and ptxas' CPU time (what a dedicated core would take)
    error: str = ""

    def line(self) -> str:
        state = "; ".join(self.problems()) or "ok"
        return (f"sm_{self.arch} {self.kernel} [{self.config}]: {self.regs} regs, stack/local {self.stack}/{self.local},"
                f" shared {self.shared} B, {self.cpu_seconds:.1f} s CPU: {state}")

    def problems(self) -> list[str]:
        out = []
        if self.error:
            out.append(f"compile failed: {self.error}")
        # A stack frame without spill stores (ptxas -v) is a call frame or a small local array, not a spill.
        if self.local or self.spill > 0 or (self.stack and self.spill < 0):
            out.append(f"spills or local memory (stack {self.stack} B, local {self.local} B, "
                       f"spill stores + loads {max(self.spill, 0)} B)")
        limit = ARCHS[self.arch]["shared_limit"]
        if self.shared > limit:
            out.append(f"shared memory {self.shared} B above the {ARCHS[self.arch]['card']} limit {limit} B")
        return out


def ptxas_spill_bytes(ptx: str, arch: int) -> int:
    """Spill stores + loads (bytes) that ``ptxas -v`` reports for ``ptx`` on ``sm_<arch>`` (``sm_90a`` for 90, as
    Triton compiles it): tells a register spill from a stack frame that holds no spilled register."""
    gpu = "sm_90a" if arch == 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        log = subprocess.run([tool("ptxas"), "-v", f"--gpu-name={gpu}", str(src), "-o", str(Path(tmp) / "k.o")],
                             capture_output=True, text=True, check=True)
    text = log.stdout + log.stderr
    return sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", text))


_LAUNCHES: list = []  # (arch, Launch) of this run; forked workers read them by position


def compile_launch(i: int, keep_sass: bool = False):
    """Compile launch ``i`` of ``_LAUNCHES`` for its architecture; (Result, SASS text or None)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    arch, la = _LAUNCHES[i]
    res = Result(la.name, la.config(), arch, len(la.cases), la.cases[0].describe(), 0.0,
                 warps=la.options["num_warps"])
    t0 = time.perf_counter()
    c0 = _cpu_time()
    sass = None
    try:
        src = ASTSource(la.fn, la.signature, la.constexprs, la.attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=la.options)
        res.shared = int(kernel.metadata.shared)
        with tempfile.TemporaryDirectory() as tmp:
            usage = cubin_resources(kernel.asm["cubin"], tmp)
            if keep_sass:
                sass = cubin_sass(kernel.asm["cubin"], tmp)
        res.regs, res.stack, res.local = usage["REG"], usage["STACK"], usage["LOCAL"]
        res.static_shared = usage["SHARED"]
        if res.stack or res.local:
            res.spill = ptxas_spill_bytes(kernel.asm["ptx"], arch)
    except Exception as exc:  # reported in the table and in the exit status
        res.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
    res.seconds = time.perf_counter() - t0
    res.cpu_seconds = _cpu_time() - c0
    return res, sass


def _cpu_time() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _cost_guess(la: Launch) -> int:
    """Order of compilation, slowest first (the bitonic buffers unroll to the most code), so the pool ends together."""
    c = {k[0]: _plain(v) for k, v in la.constexprs.items()}
    return int(c.get(la.fn.arg_names.index("K_PAD"), 0) if "K_PAD" in la.fn.arg_names else 0)


def plan(archs, case_list, full: bool) -> list[tuple[int, Launch]]:
    """(arch, launch) pairs to compile: every distinct launch of ``case_list`` with ``full``, else the covering
    subset of ``select`` (preferring the benchmark's configurations)."""
    out = []
    for arch in archs:
        launches = record(arch, case_list)
        if not full:
            launches = select(launches, {la.key for la in record(arch, benchmark_cases())})
        out.extend((arch, la) for la in launches)
    return out


def fingerprint(launches: list[tuple[int, Launch]]) -> str:
    """A digest of the plan: processes that share a claim directory must have planned the same launches."""
    text = "\n".join(f"sm_{arch} {la.name} {la.config()}" for arch, la in launches)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _claim(directory: str, i: int) -> bool:
    """True for the one process that creates ``directory/i`` first (O_EXCL is atomic on a local file system)."""
    try:
        os.close(os.open(os.path.join(directory, str(i)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def run(launches: list[tuple[int, Launch]], jobs: int, progress=print, claim: str | None = None) -> list:
    """Compile ``launches`` in ``jobs`` processes. With ``claim`` (one process), only the launches this process
    claims in that directory before any other process does; the others' entries stay None."""
    jobs = 1 if claim else jobs
    _LAUNCHES.clear()
    _LAUNCHES.extend(launches)
    order = sorted(range(len(_LAUNCHES)), key=lambda i: -_cost_guess(_LAUNCHES[i][1]))
    progress(f"aot_check: {len(_LAUNCHES)} compilations, {jobs} processes"
             + (f", shared through {claim}" if claim else ""), flush=True)
    results: list = [None] * len(_LAUNCHES)
    if jobs <= 1:
        for done, i in enumerate(order, 1):
            if claim and not _claim(claim, i):
                continue
            results[i] = res = compile_launch(i)[0]
            progress(f"[{done}/{len(order)}] {res.line()}", flush=True)
    else:
        ctx = multiprocessing.get_context("fork")  # workers inherit the recorded launches
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = {pool.submit(compile_launch, i): i for i in order}
            for done, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                results[futures[fut]] = res = fut.result()[0]
                progress(f"[{done}/{len(order)}] {res.line()}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    """Markdown: one row per kernel x configuration, both architectures side by side."""
    archs = sorted({r.arch for r in results})
    by_key: dict = {}
    for r in results:
        by_key.setdefault((r.kernel, r.config), {})[r.arch] = r
    head = ["kernel", "configuration", "example call"]
    for a in archs:
        head += [f"sm_{a} regs", f"sm_{a} spill/local B", f"sm_{a} shared B"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (kernel, config), per_arch in sorted(by_key.items()):
        first = next(iter(per_arch.values()))
        row = [f"`{kernel}`", config, first.example + (f" (+{first.cases - 1})" if first.cases > 1 else "")]
        for a in archs:
            r = per_arch.get(a)
            if r is None:
                row += ["-", "-", "-"]
            elif r.error:
                row += ["FAILED", "-", "-"]
            else:
                row += [str(r.regs), f"{r.stack}/{r.local}", str(r.shared)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary(results: list[Result], seconds: float) -> str:
    lines = []
    for a in sorted({r.arch for r in results}):
        rs = [r for r in results if r.arch == a and not r.error]
        if rs:
            lines.append(f"- sm_{a} ({ARCHS[a]['card']}): {len(rs)} kernel configurations, registers "
                         f"{min(r.regs for r in rs)}-{max(r.regs for r in rs)}, shared memory up to "
                         f"{max(r.shared for r in rs)} B of {ARCHS[a]['shared_limit']} B, "
                         f"stack/local {max(r.stack + r.local for r in rs)} B")
    bad = [r for r in results if r.problems()]
    cpu = sum(r.cpu_seconds for r in results)
    lines.append(f"- {len(results)} compilations, {len(bad)} with problems; {seconds:.0f} s wall, "
                 f"{cpu:.0f} s CPU in compilation (slowest {max(r.cpu_seconds for r in results):.1f} s)")
    return "\n".join(lines)


def write_section(path: str, mark: str, body: str) -> None:
    """Replace the text between ``<!-- mark:begin -->`` and ``<!-- mark:end -->`` in ``path`` (appended if absent)."""
    begin, end = f"<!-- {mark}:begin -->", f"<!-- {mark}:end -->"
    text = Path(path).read_text()
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    Path(path).write_text(text)


def interpreter_on() -> bool:
    """Whether this process's kernels run under Triton's interpreter (``TRITON_INTERPRET``, as Triton reads it)."""
    import triton

    return triton.knobs.runtime.interpret


def reexec_without_interpreter(module: str) -> None:
    """Run ``python -m module`` again with the same arguments and without ``TRITON_INTERPRET`` (this process's
    kernels were already turned into Python functions at import)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


@contextlib.contextmanager
def fresh_cache():
    """Triton's cache in a new temporary directory, removed afterwards: every kernel is compiled, nothing is kept."""
    import triton

    cache = tempfile.mkdtemp(prefix="gtl-aot-")
    saved = triton.knobs.cache.dir, os.environ.get("TRITON_CACHE_DIR")
    triton.knobs.cache.dir = cache
    os.environ["TRITON_CACHE_DIR"] = cache  # forked workers, whatever they read
    try:
        yield cache
    finally:
        triton.knobs.cache.dir = saved[0]
        if saved[1] is None:
            os.environ.pop("TRITON_CACHE_DIR", None)
        else:
            os.environ["TRITON_CACHE_DIR"] = saved[1]
        shutil.rmtree(cache, ignore_errors=True)


def main(argv=None) -> int:
    if interpreter_on():
        reexec_without_interpreter("gtl_kernels.triton.aot_check")
    p = argparse.ArgumentParser(prog="python -m gtl_kernels.triton.aot_check", description=__doc__.split("\n")[0])
    p.add_argument("--arch", type=int, action="append", choices=sorted(ARCHS), help="default: all")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compile processes (default 2)")
    p.add_argument("--full", action="store_true",
                   help="every distinct launch of the grid (default: a subset that covers every value)")
    p.add_argument("--op", action="append", help="only these ops")
    p.add_argument("--markdown", help="write the table into this file (between the triton-aot markers)")
    p.add_argument("--list", action="store_true", help="print the configurations to compile, compile nothing")
    p.add_argument("--claim", metavar="DIR",
                   help="share the plan with the other processes started with this directory: each compilation is "
                        "done by the process that claims it first (one process each; needs --save)")
    p.add_argument("--save", metavar="FILE", help="write this process's results as JSON (with --claim)")
    p.add_argument("--merge", nargs="+", metavar="FILE",
                   help="compile nothing: report the results --save wrote, and fail unless together they cover the "
                        "plan exactly once")
    args = p.parse_args(argv)
    if bool(args.claim) != bool(args.save):
        p.error("--claim and --save go together")
    if args.markdown and args.claim:
        p.error("--markdown writes a whole plan's table: give it to --merge, not to one process's share")
    if args.merge:
        return _report(*merge(args.merge), args.markdown)
    if args.claim:
        os.makedirs(args.claim, exist_ok=True)

    with fresh_cache():
        t0 = time.perf_counter()
        archs = args.arch or sorted(ARCHS)
        case_list = [c for c in cases() if not args.op or c.op in args.op]
        launches = plan(archs, case_list, args.full)
        if args.list:
            for arch, la in launches:
                print(f"sm_{arch} {la.name} {la.config()}  [{len(la.cases)} calls, e.g. {la.cases[0].describe()}]")
            return 0
        results = run(launches, args.jobs, claim=args.claim)
        seconds = time.perf_counter() - t0
    if args.save:
        part = {"fingerprint": fingerprint(launches), "planned": len(launches), "seconds": seconds,
                "results": {str(i): dataclasses.asdict(r) for i, r in enumerate(results) if r is not None}}
        Path(args.save).write_text(json.dumps(part))
        mine = [r for r in results if r is not None]
        print(summary(mine, seconds) if mine else "- no compilation claimed")
        return 1 if any(r.problems() for r in mine) else 0
    return _report(results, seconds, args.markdown)


def merge(paths: list[str]) -> tuple[list[Result], float]:
    """The results of the processes that shared a plan (``--claim``/``--save``), in plan order, and the longest
    process's wall time. Raises SystemExit unless they planned the same launches and cover each exactly once."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    if len({(q["fingerprint"], q["planned"]) for q in parts}) != 1:
        raise SystemExit(f"aot_check: {', '.join(paths)} were planned differently")
    planned = parts[0]["planned"]
    indices = [int(i) for q in parts for i in q["results"]]
    missing = sorted(set(range(planned)) - set(indices))
    if missing or len(indices) != len(set(indices)):
        raise SystemExit(f"aot_check: the parts cover {len(set(indices))} of {planned} compilations "
                         f"(missing {missing[:10]}), {len(indices) - len(set(indices))} twice")
    by_index = {int(i): Result(**d) for q in parts for i, d in q["results"].items()}
    return [by_index[i] for i in range(planned)], max(q["seconds"] for q in parts)


def _report(results: list[Result], seconds: float, markdown: str | None) -> int:
    print(table(results))
    print(summary(results, seconds))
    failed = [(r, p) for r in results for p in r.problems()]
    for r, problem in failed:
        print(f"aot_check: sm_{r.arch} {r.kernel} [{r.config}] ({r.example}): {problem}", file=sys.stderr)
    if markdown:
        write_section(markdown, MARK_TABLE, _doc_block(results, seconds))
    return 1 if failed else 0


def _doc_block(results: list[Result], seconds: float) -> str:
    import triton

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (f"Generated by `python -m gtl_kernels.triton.aot_check --markdown docs/TRITON_BACKEND.md` on {stamp} "
            f"(Triton {triton.__version__}, no GPU; spill/local: the cubin's stack and local memory per thread; "
            f"shared: the dynamic shared memory Triton requests per block).\n\n"
            + summary(results, seconds) + "\n\n" + table(results))


if __name__ == "__main__":
    sys.exit(main())
