"""Per-element cost of the hot loops, read from the SASS of compiled kernels (no GPU), and the prediction it gives.

``python -m gtl_kernels.triton.sass [--markdown docs/PERF.md]`` compiles the main loop kernels of ``sample``,
``masked_transition`` and ``topk_log_softmax`` for sm_90 (the launches ``aot_check`` records for the benchmark's
shapes), disassembles them with the wheel's ``cuobjdump -sass``, and counts, per element of the row, the global loads
(and their width), the ``MUFU`` special-function instructions and all instructions of the loop over a row's blocks.
With ``--cuda`` it adds the CUDA C++ kernels' resources and static instruction mix (``nvcc -cubin``).

How the loop is read: the block loop is the outermost backward branch whose body loads from global memory. Forward
branches inside it delimit optional regions (the greedy rows' branch, ``+inf`` counting, a top-k block that cannot
enter the buffer, ...). The *hot path* is the body without the optional regions that hold no exponential
(``MUFU.EX2``): the path of a sampled row (``T > 0``) on ordinary data. The whole body is reported too.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import re
import subprocess
import sys
import tempfile
from pathlib import Path

MARK = "triton-sass"

# Issue rates (per SM per clock) and sizes of the two cards, from NVIDIA's architecture documents: 4 schedulers per SM
# each issue one warp instruction per clock (128 thread instructions); the SFU (MUFU) does 16 per clock per SM;
# H100 SXM5: 132 SMs, 1.755 GHz boost for sustained work (1.98 GHz max), HBM3 3.35 TB/s; A100 SXM4 80 GB: 108 SMs,
# 1.41 GHz, HBM2e 2.039 TB/s.
CARDS = {
    "H100": dict(sms=132, clock=1.755e9, bandwidth=3.35e12, issue=128, mufu=16),
    "A100": dict(sms=108, clock=1.41e9, bandwidth=2.039e12, issue=128, mufu=16),
}

_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_FUNC = re.compile(r"Function : (\S+)")


@dataclasses.dataclass
class Instr:
    addr: int
    op: str  # full opcode with modifiers, e.g. LDG.E.128
    pred: str
    args: str

    @property
    def base(self) -> str:
        return self.op.split(".")[0]


def parse_sass(text: str) -> dict[str, list[Instr]]:
    """``cuobjdump -sass`` text -> {function name: instructions in address order}."""
    out: dict[str, list[Instr]] = {}
    current = None
    for line in text.splitlines():
        m = _FUNC.search(line)
        if m:
            current = out.setdefault(m.group(1), [])
            continue
        m = _INSTR.search(line)
        if m and current is not None:
            current.append(Instr(int(m.group(1), 16), m.group(3), (m.group(2) or "").strip(), m.group(4).strip()))
    return out


def _branch_target(ins: Instr) -> int | None:
    if ins.base != "BRA":
        return None
    m = re.search(r"0x([0-9a-f]+)", ins.args)
    return int(m.group(1), 16) if m else None


def hot_loop(instrs: list[Instr]) -> tuple[int, int]:
    """(first, last) address of the outermost loop whose body holds a global load (``LDG``)."""
    loops = []
    for ins in instrs:
        t = _branch_target(ins)
        if t is not None and t < ins.addr:
            body = [i for i in instrs if t <= i.addr <= ins.addr]
            if any(i.base == "LDG" for i in body):
                loops.append((t, ins.addr))
    if not loops:
        raise ValueError("no loop with a global load")
    return max(loops, key=lambda lo: lo[1] - lo[0])


def optional_regions(instrs: list[Instr], first: int, last: int) -> list[tuple[int, int]]:
    """Address ranges skipped by a forward branch inside the loop ``[first, last]`` (branch excluded)."""
    out = []
    for ins in instrs:
        t = _branch_target(ins)
        if t is not None and first <= ins.addr < last and ins.addr < t <= last:
            out.append((ins.addr + 1, t - 1))
    return out


@dataclasses.dataclass
class LoopCost:
    """Instruction counts of one kernel's block loop, per element of the row (``per_thread`` elements per thread and
    iteration)."""

    kernel: str
    per_thread: float
    hot: collections.Counter
    body: collections.Counter

    def per_element(self, counter: collections.Counter, pred) -> float:
        return sum(n for op, n in counter.items() if pred(op)) / self.per_thread

    def summary(self) -> dict:
        hot = self.hot
        loads = {op: n for op, n in hot.items() if op.startswith("LDG")}
        mufu = {op: n / self.per_thread for op, n in hot.items() if op.startswith("MUFU")}
        return dict(
            kernel=self.kernel,
            elements_per_thread=self.per_thread,
            instr_hot=self.per_element(hot, lambda op: True),
            instr_body=self.per_element(self.body, lambda op: True),
            loads_per_element=sum(loads.values()) / self.per_thread,
            load_ops=", ".join(f"{n} {op}" for op, n in sorted(loads.items())),
            ex2=mufu.get("MUFU.EX2", 0.0),
            other_mufu=", ".join(f"{op} {v:.3g}" for op, v in sorted(mufu.items()) if op != "MUFU.EX2") or "none",
        )


def loop_cost(kernel: str, instrs: list[Instr], per_thread: float) -> LoopCost:
    """Count the hot path and the whole body of the block loop (see the module docstring)."""
    first, last = hot_loop(instrs)
    body = [i for i in instrs if first <= i.addr <= last and i.base != "NOP"]
    regions = optional_regions(instrs, first, last)

    def inside(i, r):
        return r[0] <= i.addr <= r[1]

    cold = [r for r in regions if not any(inside(i, r) and i.op == "MUFU.EX2" for i in body)]
    hot = [i for i in body if not any(inside(i, r) for r in cold)]
    return LoopCost(kernel, per_thread, collections.Counter(i.op for i in hot), collections.Counter(i.op for i in body))


def load_bytes(op: str) -> int:
    """Bytes per thread of a global load opcode (``LDG.E.128`` -> 16, ``LDG.E.U16`` -> 2, ``LDG.E`` -> 4)."""
    for suffix, size in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if suffix in op:
            return size
    return 4


# ---------------------------------------------------------------------------------------------------------------------
# The kernels to read: the launches of the benchmark's GPU shapes
# ---------------------------------------------------------------------------------------------------------------------

# (label, case, loop kernel, elements of the row per loop iteration from the launch's constexprs)
def _tokens_chunked(c):
    return c["R"] * c["CB"] * c["CW"]


def _tokens_block(c):
    return c.get("R", 1) * c["BLOCK"]


def targets():
    from .aot_check import Case

    bf = "bfloat16"
    return [
        ("sample, bf16, V = 128256 (rows 16-byte aligned)", Case("sample", 8192, 128256, bf), "_chunk_race_kernel",
         _tokens_chunked),
        ("sample, bf16, V = 50257 (odd row length)", Case("sample", 8192, 50257, bf), "_chunk_race_kernel",
         _tokens_chunked),
        ("sample, bf16 + bf16 bias, V = 128256", Case("sample", 8192, 128256, bf, bf), "_chunk_race_kernel",
         _tokens_chunked),
        ("masked_transition, bf16, V = 128256", Case("masked_transition", 8192, 128256, bf), "_chunk_race_kernel",
         _tokens_chunked),
        ("topk_log_softmax k = 512, bf16, V = 128256 (statistics + buffer)",
         Case("topk_log_softmax", 8192, 128256, bf, top_k=512), "_stats_kernel", _tokens_block),
        ("guided_log_softmax, bf16, V = 128256 (statistics pass)", Case("guided_log_softmax", 8192, 128256, bf),
         "_stats_kernel", _tokens_block),
    ]


def triton_costs(arch: int = 90) -> list[tuple[str, dict, dict]]:
    """(label, loop summary, resources) of each target, compiled for ``sm_<arch>``."""
    from . import aot_check

    out = []
    for label, case, kernel, tokens in targets():
        (la,) = [la for la in aot_check.record(arch, [case]) if la.name == kernel]
        aot_check._LAUNCHES[:] = [(arch, la)]
        res, sass = aot_check.compile_launch(0, keep_sass=True)
        if res.error:
            raise RuntimeError(f"{kernel} for {label}: {res.error}")
        consts = {la.fn.arg_names[p[0]]: aot_check._plain(v) for p, v in la.constexprs.items()}
        (instrs,) = parse_sass(sass).values()
        cost = loop_cost(kernel, instrs, tokens(consts) / (32 * la.options["num_warps"]))
        out.append((label, cost.summary(), dict(regs=res.regs, shared=res.shared, warps=res.warps,
                                                  config=la.config(), bytes_per_element=_elem_bytes(case))))
    return out


def _elem_bytes(case) -> int:
    size = {"float32": 4, "bfloat16": 2, "float16": 2}
    return size[case.dtype] + (size[case.bias] if case.bias else 0)


# ---------------------------------------------------------------------------------------------------------------------
# CUDA C++ kernels (nvcc), for comparison
# ---------------------------------------------------------------------------------------------------------------------

CUDA_SOURCE = "csrc/cuda/launchers.cu"  # every CUDA kernel is instantiated there
CUDA_OPS = ("sample", "masked_transition", "topk_log_softmax")  # the ops whose kernels the table shows


def cuda_op_names(root: Path) -> dict[int, str]:
    """``gtl::cuda::Op`` (``gtl/cuda_problem.h``) as value -> op name, read from the header so that it has one home:
    ``kTopkLogSoftmax = 3`` -> ``{3: "topk_log_softmax"}``."""
    text = (root / "csrc/include/gtl/cuda_problem.h").read_text()
    body = re.search(r"enum class Op\b[^{]*\{([^}]*)\}", text).group(1)
    return {int(value): re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
            for name, value in re.findall(r"k(\w+)\s*=\s*(\d+)", body)}


def _op_of(name: str, ops: dict[int, str]) -> str | None:
    """The op of a kernel from its mangled name: the value of its ``Op`` template argument (``...2OpE3E...``)."""
    m = re.search(r"2OpE(\d+)E", name)
    return ops.get(int(m.group(1))) if m else None


def cuda_kernels(root: Path, arch: int = 90, nvcc: str | None = None) -> list[dict]:
    """Resources and whole-kernel instruction mix of the bf16 kernels of ``CUDA_OPS`` (``nvcc -cubin`` of
    ``CUDA_SOURCE``, the flags of ``scripts/nvcc_check.sh``). Their loops are unrolled over alignment cases, so no
    single loop is read per element here: the counts are static instructions of the whole kernel."""
    import os

    from .aot_check import parse_resource_usage, tool

    nvcc = nvcc or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    ops = cuda_op_names(root)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "launchers.cubin"
        subprocess.run([nvcc, "-cubin", "-o", str(cubin), str(root / CUDA_SOURCE), "-std=c++17", "-O3",
                        "--use_fast_math", f"-I{root / 'csrc/include'}", f"-arch=sm_{arch}"], check=True,
                       capture_output=True)
        usage = parse_resource_usage(subprocess.run([tool("cuobjdump"), "--dump-resource-usage", str(cubin)],
                                                    check=True, capture_output=True, text=True).stdout)
        sass = parse_sass(subprocess.run([tool("cuobjdump"), "-sass", str(cubin)], check=True,
                                         capture_output=True, text=True).stdout)
        for op in CUDA_OPS:
            for name, instrs in sass.items():
                if _op_of(name, ops) != op or "bf16" not in _demangle_hint(name):
                    continue
                counts = collections.Counter(i.op for i in instrs if i.base != "NOP")
                loads = collections.Counter()
                for instr, n in counts.items():
                    if instr.startswith("LDG"):
                        loads[load_bytes(instr)] += n
                u = usage.get(name, {})
                out.append(dict(op=op, kernel=_short(name), regs=u.get("REG"), stack=u.get("STACK"),
                                shared=u.get("SHARED"), instructions=sum(counts.values()),
                                loads=", ".join(f"{n} x {w} B" for w, n in sorted(loads.items(), reverse=True)),
                                ex2=counts.get("MUFU.EX2", 0),
                                other_mufu=sum(n for i, n in counts.items()
                                               if i.startswith("MUFU.") and i != "MUFU.EX2")))
    return out


def _demangle_hint(name: str) -> str:
    return name.replace("NS0_4bf16", "bf16")


def _short(name: str) -> str:
    """``row_kernel<bf16, (Op)1, 0, true>`` from the mangled name (``c++filt`` when there is one)."""
    try:
        text = subprocess.run(["c++filt", name], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return name
    text = text.replace("gtl::cuda::", "").removeprefix("void ")
    return text.split("(Problem")[0] if "(Problem" in text else text


# ---------------------------------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------------------------------


def predict(summary: dict, bytes_per_element: float, card: str = "H100") -> dict:
    """Time per element of each limit (picoseconds) and the bound: memory, issue or the SFU."""
    c = CARDS[card]
    memory = bytes_per_element / c["bandwidth"]
    issue = summary["instr_hot"] / (c["sms"] * c["issue"] * c["clock"])
    mufu = (summary["ex2"] + _other_mufu(summary)) / (c["sms"] * c["mufu"] * c["clock"])
    bound = max(("memory", memory), ("issue", issue), ("SFU", mufu), key=lambda kv: kv[1])
    return dict(memory_ps=memory * 1e12, issue_ps=issue * 1e12, mufu_ps=mufu * 1e12, bound=bound[0],
                vs_read=bound[1] / memory)


def _other_mufu(summary: dict) -> float:
    if summary["other_mufu"] == "none":
        return 0.0
    return sum(float(part.split()[-1]) for part in summary["other_mufu"].split(", "))


def report(cuda: bool = False, root: Path | None = None) -> str:
    """The markdown section: one row per hot loop, per element, with the H100 prediction."""
    import time

    import triton

    rows = triton_costs()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Generated by `python -m gtl_kernels.triton.sass{' --cuda' if cuda else ''} --markdown docs/PERF.md` on "
        f"{stamp} (sm_90 SASS, Triton {triton.__version__}; no GPU). Per element of the row: instructions of the "
        "loop's hot path (all warps' work divided by the elements they cover), global load instructions and their "
        "width, `MUFU` instructions. Prediction for the H100 SXM (132 SMs x 128 instructions per clock at 1.755 GHz, "
        "16 `MUFU` per SM per clock, 3.35 TB/s): picoseconds per element for the memory read (the bytes loaded per "
        "element), the issue of the hot path and the SFU; the largest is the bound, `x read` is the bound over the "
        "pure read time (1.00: memory-bound, as `torch.argmax`).",
        "",
        "| backend | loop | regs | elements/thread/iter | instr/elem (hot) | instr/elem (whole loop) | loads/elem "
        "(ops in the hot path) | MUFU.EX2/elem | other MUFU/elem | B/elem | read ps | issue ps | SFU ps | bound "
        "| x read |",
        "|" + "---|" * 15,
    ]
    for label, s, res in rows:
        p = predict(s, res["bytes_per_element"])
        lines.append(
            f"| Triton | {label} | {res['regs']} | {s['elements_per_thread']:g} | {s['instr_hot']:.1f} | "
            f"{s['instr_body']:.1f} | {s['loads_per_element']:.3f} ({s['load_ops']}) | {s['ex2']:.2f} | "
            f"{s['other_mufu']} | {res['bytes_per_element']} | {p['memory_ps']:.3f} | {p['issue_ps']:.3f} | "
            f"{p['mufu_ps']:.3f} | {p['bound']} | {p['vs_read']:.2f} |")
    if cuda:
        lines += ["", "The CUDA C++ kernels of the same ops (bf16 instantiations, `nvcc -cubin -arch=sm_90` with the flags "
                  "of `scripts/nvcc_check.sh`): resources and the static instruction mix of the whole kernel (their "
                  "loops are unrolled over alignment cases, so no per-element count is read from them here).", "",
                  "| op | kernel | regs | stack B | static shared B | SASS instructions | global loads by width "
                  "| MUFU.EX2 | other MUFU |", "|" + "---|" * 9]
        for k in cuda_kernels(root or Path(__file__).resolve().parents[2]):
            lines.append(f"| {k['op']} | `{k['kernel']}` | {k['regs']} | {k['stack']} | {k['shared']} | "
                         f"{k['instructions']} | {k['loads']} | {k['ex2']} | {k['other_mufu']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from . import aot_check

    if aot_check.interpreter_on():
        aot_check.reexec_without_interpreter("gtl_kernels.triton.sass")
    p = argparse.ArgumentParser(prog="python -m gtl_kernels.triton.sass", description=__doc__.split("\n")[0])
    p.add_argument("--cuda", action="store_true", help="also the CUDA C++ kernels (nvcc -cubin, slow)")
    p.add_argument("--markdown", help="write the section into this file (between the triton-sass markers)")
    args = p.parse_args(argv)
    with aot_check.fresh_cache():
        text = report(cuda=args.cuda)
    print(text)
    if args.markdown:
        aot_check.write_section(args.markdown, MARK, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
