"""Reports from a ``gtl-bench`` JSON document: the terminal table and generated sections of ``docs/PERF.md``.

A generated section sits between ``<!-- gtl-bench:begin KEY -->`` and ``<!-- gtl-bench:end KEY -->`` (``KEY``
defaults to the device type, so a CPU run and a GPU run each own one section); everything outside the markers is
hand-written and kept as it is.

    python -m gtl_kernels.bench.report results/bench.json                       # print the markdown section
    python -m gtl_kernels.bench.report results/bench.json --markdown docs/PERF.md [--section cuda-h100]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from . import goals as goals_mod

FLOORS = ("argmax", "amax")  # reported as times; every other implementation as a multiple of argmax
OP_ORDER = ("sample", "masked_transition", "guided_log_softmax", "confidence", "topk_log_softmax")
PERF_TITLE = "# Performance"
PERF_PREAMBLE = (
    "Sections between `gtl-bench` markers are generated from the benchmark JSON (`gtl-bench --markdown` or\n"
    "`python -m gtl_kernels.bench.report`); never edit them by hand. Analysis goes outside the markers.\n"
)


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}x" if x < 100 else f"{x:.0f}x"


def impl_columns(cases: list[dict]) -> list[str]:
    """Implementation names in first-seen order (floor, copy, backends, baselines)."""
    cols: list[str] = []
    for c in cases:
        for r in c["results"]:
            if r["impl"] not in cols:
                cols.append(r["impl"])
    return cols


def _result(case: dict, impl: str) -> dict | None:
    return next((r for r in case["results"] if r["impl"] == impl), None)


def _cell_short(r: dict | None) -> str:
    """Terminal cell: the ratio to argmax (argmax itself: its time)."""
    if r is None:
        return ""
    if r["status"] != "ok":
        return {"skipped": "skip", "failed": "FAIL", "error": "ERR"}.get(r["status"], r["status"])
    if r["impl"] in FLOORS:
        return fmt_time(r["time_s"])
    return fmt_ratio(r.get("ratio", {}).get("argmax"))


def text_table(doc: dict) -> str:
    """Compact terminal table: one row per case; ``argmax`` column in time, the others as multiples of it."""
    cases = doc["cases"]
    if not cases:
        return "(no cases)"
    cols = impl_columns(cases)
    width = max(len(c["label"]) for c in cases)
    head = f"{'case':<{width}}  " + "  ".join(f"{c:>11}" for c in cols) + "  best: x amax, GB/s, Gelem/s"
    lines = [head, "-" * len(head)]
    for c in cases:
        cells = "  ".join(f"{_cell_short(_result(c, col)):>11}" for col in cols)
        best = goals_mod.best_backend(c) or _result(c, "torch")
        gbps = ""
        if best and best.get("gbps"):
            cpu_amax = best.get("ratio_cpu", {}).get("amax")
            gbps = (f"{fmt_ratio(best.get('ratio', {}).get('amax')):>6}"
                    + (f" (cpu {fmt_ratio(cpu_amax)})" if cpu_amax else "")
                    + f" {best['gbps']:6.3g} {best.get('elems_per_s', 0) / 1e9:6.3g} ({best['impl']})")
        lines.append(f"{c['label']:<{width}}  {cells}  {gbps}")
    problems = [(c["label"], r) for c in cases for r in c["results"] if r["status"] in ("failed", "error")]
    for label, r in problems:
        lines.append(f"{r['status'].upper()}: {label} | {r['impl']}: {r.get('reason', '')}")
    lines.append("cells: time / torch.argmax time on the same logits in the same run (argmax and amax columns: their "
                 "time); best: the fastest backend's time / torch.amax time (one streaming read; with --interleave "
                 "also in process CPU time), bytes and logits elements per second")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------------------


def _md_cell(r: dict | None) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return r["status"]
    if r["impl"] in FLOORS:
        return fmt_time(r["time_s"])
    return f"{fmt_time(r['time_s'])} ({fmt_ratio(r.get('ratio', {}).get('argmax'))})"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _meta_lines(doc: dict, source: str | None) -> list[str]:
    m, s = doc["meta"], doc["settings"]
    dev, mach, ver = m["device"], m["machine"], m["versions"]
    versions = ", ".join(f"{k} {v}" for k, v in ver.items() if v)
    measured = ", ".join(s["backends"]) or "none"
    skipped = "; ".join(f"{k} ({_clip(v)})" for k, v in s.get("skipped_backends", {}).items())
    timing = ("`triton.testing.do_bench` medians (CUDA events, L2 cleared before each call)" if dev["type"] == "cuda"
              else f"wall-clock medians (a call over {s.get('slow_s', 1.0)} s is timed once)")
    lines = [
        f"- date: {m['date']}" + (f"; commit {m['git']}" if m.get("git") else ""),
        f"- command: `{m['command']}`" if m.get("command") else "- command: (not recorded)",
        f"- device: {dev.get('name', dev['type'])}"
        + (f", {dev['threads']} torch threads" if "threads" in dev else "")
        + (f", {dev['memory_gib']} GiB, compute capability {dev['capability']}" if dev["type"] == "cuda" else ""),
        f"- machine: {mach['platform']}, {mach['cpu']} x {mach['cpu_count']}, {mach.get('memory_gib')} GiB RAM"
        + (f", load average {mach['load_avg_1min']} at the start and {mach.get('load_avg_1min_end')} at the end"
           if mach.get("load_avg_1min") is not None else ""),
        f"- versions: {versions}",
        f"- backends measured: {measured}" + (f"; not measured: {skipped}" if skipped else ""),
        f"- timing: {timing}; correctness checked before timing against the `torch` reference on the first "
        f"{s['check_rows']} rows (samplers with their own noise: valid tokens only)",
    ]
    if source:
        lines.append(f"- generated from `{source}` by `python -m gtl_kernels.bench.report`")
    return lines


def _clip(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _op_section(device_type: str, op: str, cases: list[dict]) -> list[str]:
    cols = impl_columns(cases)
    variant = any(_variant(c) for c in cases)
    has_best = any(goals_mod.best_backend(c) for c in cases)  # only the reference measured: no such columns
    header = ["N", "V", "dtype", "bias"] + (["variant"] if variant else []) + cols
    header += ["best GB/s (% copy), Gelem/s", "goal"] if has_best else []
    rows = []
    for c in cases:
        best = goals_mod.best_backend(c)
        gb = ""
        if best and best.get("gbps"):
            gb = f"{best['gbps']:.3g} ({best['impl']}" + (
                f", {best['bw_fraction']:.0%})" if best.get("bw_fraction") else ")")
            gb += f", {best['elems_per_s'] / 1e9:.3g}" if best.get("elems_per_s") else ""
        goal_text = "; ".join(f"{t}: {v} {'✓' if ok else '✗'}" for t, v, ok in
                              (goals_mod.evaluate(device_type, c, best) if best else []))
        row = [str(c["n"]), str(c["v"]), c["dtype"], "dense" if c["bias"] else "—"]
        row += [_variant(c)] if variant else []
        row += [_md_cell(_result(c, col)) for col in cols] + ([gb, goal_text] if has_best else [])
        rows.append(row)
    lines = [f"#### `{op}`", ""] + _md_table(header, rows)
    notes = {}
    for c in cases:
        for r in c["results"]:
            if r["status"] != "ok":
                notes.setdefault((r["impl"], r["status"], r.get("reason", "")), []).append(c["label"])
    if notes:
        lines.append("")
        for (impl, status, reason), labels in notes.items():
            where = "all cases" if len(labels) == len(cases) else f"{len(labels)} case(s), e.g. {labels[0]}"
            lines.append(f"- {impl}: {status} in {where}: {reason}")
    return lines + [""]


def _variant(c: dict) -> str:
    if c["op"] == "topk_log_softmax":
        return f"k={min(c['k'], c['v'])}"
    if c["op"] == "confidence":
        return c["kind"]
    return f"top_k={c['top_k']}" if c.get("top_k") else ""


def _e2e_section(rows: list[dict]) -> list[str]:
    header = ["step", "models", "B x L", "V", "impl", "step time", "forward passes", "outside forward"]
    table = []
    for e in rows:
        if e.get("status", "ok") != "ok":
            reason = _clip(e.get("reason", ""))
            table.append([e["step"], e.get("models", ""), "", "", e.get("impl", ""), e["status"], "", reason])
            continue
        table.append([
            e["step"], f"{e['models']} ({e.get('size', '?')}, n_ratio {e.get('n_ratio', '?')})",
            f"{e['batch']} x {e['length']}", str(e["vocab"]), e["impl"],
            fmt_time(e["step_s"]), fmt_time(e["forward_s"]), f"{e['outside_share']:.1%}",
        ])
    lines = ["#### End-to-end sampler steps", ""] + _md_table(header, table) + [""]
    params = {(e["models"], e.get("size")): e.get("params") for e in rows if e.get("params")}
    for (name, size), p in params.items():
        lines.append(f"- {name} ({size}): " + ", ".join(f"{k} {v / 1e6:.3g}M parameters" for k, v in p.items()))
    lines.append("- outside forward: 1 - (time in model forward passes) / (step time); each model call is bracketed "
                 "by device synchronizations")
    return lines + [""]


def markdown_section(doc: dict, source: str | None = None) -> str:
    """The generated markdown for one run (without markers)."""
    dev = doc["meta"]["device"]
    title = f"### {dev['type'].upper()}: {dev.get('name', '')}"
    lines = [title, "", *_meta_lines(doc, source), ""]
    lines += [
        "Cells: median time and (in parentheses) its ratio to `torch.argmax` over the same logits in the same run. "
        "`copy`: a copy of the logits (its GB/s counts read + write). Best GB/s: bytes that must move (logits and "
        "bias read once, outputs written once) / time, for the fastest backend other than the `torch` reference.",
        "",
    ]
    by_op: dict[str, list[dict]] = {}
    for c in doc["cases"]:
        by_op.setdefault(c["op"], []).append(c)
    for op in sorted(by_op, key=lambda o: OP_ORDER.index(o) if o in OP_ORDER else 99):
        lines += _op_section(dev["type"], op, by_op[op])
    if doc.get("e2e"):
        lines += _e2e_section(doc["e2e"])
    return "\n".join(lines).rstrip() + "\n"


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- gtl-bench:begin {key} -->", f"<!-- gtl-bench:end {key} -->"


def update_markdown(path: Path, section: str, key: str) -> None:
    """Replace the ``key`` section of ``path`` (create the file, or append the section, if absent)."""
    begin, end = _markers(key)
    block = f"{begin}\n{section.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else f"{PERF_TITLE}\n\n{PERF_PREAMBLE}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def section_key(doc: dict) -> str:
    return doc["meta"]["device"]["type"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gtl_kernels.bench.report", description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="a gtl-bench JSON document")
    p.add_argument("--markdown", type=Path, help="update this markdown file (else print the section)")
    p.add_argument("--section", help="marker key of the section (default: the device type, e.g. cpu or cuda)")
    p.add_argument("--table", action="store_true", help="print the terminal table instead")
    args = p.parse_args(argv)
    doc = json.loads(args.json.read_text())
    if args.table:
        print(text_table(doc))
        return 0
    section = markdown_section(doc, source=str(args.json))
    if args.markdown is None:
        print(section, end="")
    else:
        update_markdown(args.markdown, section, args.section or section_key(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
