"""gtl-bench: measure every op against the one-read floor, the PyTorch way and the peers; table, JSON, PNG.

Examples::

    gtl-bench                                   # default case set of the device (CPU: issue 3's shapes)
    gtl-bench --quick                           # a small set, seconds
    gtl-bench --ops sample --shapes 8192x128256 --dtypes bf16 --backends triton,cuda
    gtl-bench --json results/bench.json --markdown docs/PERF.md
    gtl-bench --from-json results/bench.json --markdown docs/PERF.md   # regenerate reports without measuring
    gtl-bench --preset cpu-ratios               # named runs (presets.py): cpu-ratios, gpu-quick, triton-sweep

Exit status 1 when an implementation failed its correctness check or raised an error.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from . import baselines as bl
from . import cases as cs
from . import presets
from . import report
from .runner import BASELINE_ORDER, RunConfig, run, select_backends


def _list(text: str | None, allowed, what: str) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]`` checked against ``allowed``; ``None``/``"all"`` -> ``None`` (everything)."""
    if text is None or text == "all":
        return None
    if text == "none":
        return []
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if allowed is not None and x not in allowed]
    if bad:
        raise SystemExit(f"gtl-bench: unknown {what} {bad}; choose from {list(allowed)}")
    return items


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gtl-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--preset", choices=tuple(presets.PRESETS),
                   help="a named run (gtl_kernels/bench/presets.py); flags after it override its own")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--set", dest="case_set", default="default", choices=("default", "quick", "smoke"),
                   help="case set of the device (shapes, dtypes); flags below override parts of it")
    p.add_argument("--quick", action="store_true", help="same as --set quick (and the tiny end-to-end models)")
    p.add_argument("--ops", help=f"comma list of {', '.join(cs.OPS)} (default all)")
    p.add_argument("--backends", help="comma list of backends (default: every available one for the device)")
    p.add_argument("--baselines", help=f"comma list of {', '.join(BASELINE_ORDER)}, all or none (default: all; "
                   "compile only in the default set, since each compiled variant costs seconds to tens of seconds)")
    p.add_argument("--compile-ops", default=",".join(bl.DEFAULT_COMPILE_OPS),
                   help="ops whose PyTorch way is also timed under torch.compile (default: the sampling ops; 'all')")
    p.add_argument("--shapes", help="comma list of NxV, e.g. 8192x30522,1x128256")
    p.add_argument("--dtypes", help="comma list of fp32, bf16, fp16")
    p.add_argument("--bias", choices=("none", "dense", "both"), help="guidance bias variants (default both)")
    p.add_argument("--kinds", help=f"confidence kinds: comma list of {', '.join(cs.CONFIDENCE_KINDS)} or all")
    p.add_argument("--k", type=int, help="k of topk_log_softmax (default 512)")
    p.add_argument("--top-k", type=int, help="top_k of the sampling ops (default 0: none)")
    p.add_argument("--e2e", dest="e2e", action=argparse.BooleanOptionalAction, default=True,
                   help="also time one ancestral and one scheduled sampler step (default on)")
    p.add_argument("--e2e-size", choices=("paper", "cpu", "tiny"),
                   help="end-to-end model sizes (default: paper on CUDA, cpu on the CPU, tiny with --quick)")
    p.add_argument("--e2e-batch", type=int, help="sequences per end-to-end step (default from the size)")
    p.add_argument("--json", type=Path, default=Path("results/bench.json"), help="JSON output (default %(default)s)")
    p.add_argument("--png", type=Path, help="PNG output (default: the JSON path with .png)")
    p.add_argument("--no-png", action="store_true")
    p.add_argument("--markdown", type=Path, help="update the generated section of this markdown file")
    p.add_argument("--section", help="marker key of that section (default: the device type)")
    p.add_argument("--from-json", type=Path, help="load a JSON document instead of measuring")
    p.add_argument("--min-time", type=float,
                   help="seconds of timed calls per implementation (default 0.5 on the CPU, 0.1 on CUDA)")
    p.add_argument("--max-runs", type=int, default=25, help="CPU: at most this many timed calls")
    p.add_argument("--slow-s", type=float, default=0.5, help="a call slower than this is timed once (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    p.add_argument("--interleave", action="store_true",
                   help="time a case's implementations round-robin; ratios are medians of per-round ratios (CPU)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list", action="store_true", help="print the cases and implementations, measure nothing")
    return p


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gtl-bench: --device cuda but CUDA is not available")
    return device


def case_set(args, device: torch.device) -> cs.CaseSet:
    """The preset of ``--set``/``--quick`` with the dimension flags applied."""
    cset = cs.preset("quick" if args.quick else args.case_set, device.type)
    if args.ops:
        cset.ops = tuple(_list(args.ops, cs.OPS, "op") or cs.OPS)
    if args.shapes:
        try:
            cset.shapes = cs.parse_shapes(args.shapes)
        except ValueError as exc:
            raise SystemExit(f"gtl-bench: {exc}") from None
    if args.dtypes:
        cset.dtypes = tuple(_list(args.dtypes, tuple(cs.DTYPES), "dtype") or cs.DTYPES)
    if args.bias:
        cset.bias = {"none": (False,), "dense": (True,), "both": (False, True)}[args.bias]
    if args.kinds:
        cset.kinds = tuple(_list(args.kinds, cs.CONFIDENCE_KINDS, "kind") or cs.CONFIDENCE_KINDS)
    if args.k is not None:
        cset.k = args.k
    if args.top_k is not None:
        cset.top_k = args.top_k
    return cset


def measure(args, argv: list[str]) -> dict:
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        backends, skipped = select_backends(_list(args.backends, None, "backend"), device)
    except ValueError as exc:
        raise SystemExit(f"gtl-bench: {exc}") from None
    baselines = _list(args.baselines, BASELINE_ORDER, "baseline")
    if args.baselines == "all":
        baselines = list(BASELINE_ORDER)
    elif baselines is None:
        full = args.case_set == "default" and not args.quick
        baselines = [b for b in BASELINE_ORDER if full or b != "compile"]
    compile_ops = _list(args.compile_ops, cs.OPS, "op")
    config = RunConfig(
        device=device,
        cases=case_set(args, device).cases(),
        backends=backends,
        baselines=baselines,
        compile_ops=cs.OPS if compile_ops is None else tuple(compile_ops),
        check=not args.no_check,
        min_time=args.min_time or (0.1 if device.type == "cuda" else 0.5),
        max_runs=args.max_runs,
        slow_s=args.slow_s,
        seed=args.seed,
        progress=not args.no_progress,
        command=" ".join(["gtl-bench", *map(shlex.quote, argv)]),
        interleave=args.interleave,
    )
    for name, why in skipped.items():
        print(f"gtl-bench: backend {name} skipped: {why}", file=sys.stderr)
    if args.list:
        from .runner import impls_for

        for case in config.cases:
            print(f"{case.label}: {', '.join(i.name for i in impls_for(case, config))}")
        raise SystemExit(0)
    doc = run(config, skipped)
    if args.e2e:
        from .e2e import run_e2e

        size = args.e2e_size or ("tiny" if args.quick else "paper" if device.type == "cuda" else "cpu")
        impls = backends + (["pytorch"] if "pytorch" in baselines else [])
        bar = None
        if not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=2 * len(impls), desc="end-to-end steps", unit="step", file=sys.stderr)
        doc["e2e"] = run_e2e(device, impls, size, batch=args.e2e_batch, seed=args.seed,
                             progress=None if bar is None else lambda: bar.update(1))
        if bar is not None:
            bar.close()
    return doc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--compat" in argv:  # the drop-ins against the original formulas: a separate runner with its own flags
        from .compat import main as compat_main

        return compat_main([a for a in argv if a != "--compat"])
    argv = list(sys.argv[1:] if argv is None else argv)
    preset, argv = presets.expand(argv)
    if preset == "triton-sweep":
        return presets.triton_sweep()
    args = parser().parse_args(argv)
    if args.from_json:
        doc = json.loads(args.from_json.read_text())
        source = str(args.from_json)
    else:
        doc = measure(args, argv)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        source = str(args.json)
    print(report.text_table(doc))
    if doc.get("e2e"):
        for e in doc["e2e"]:
            if e.get("status") == "ok":
                print(f"e2e {e['step']:<9} {e['impl']:<8} step {report.fmt_time(e['step_s']):>9}  forward "
                      f"{report.fmt_time(e['forward_s']):>9}  outside forward {e['outside_share']:.1%}"
                      f"  ({e['models']}, B={e['batch']} L={e['length']} V={e['vocab']})")
            else:
                print(f"e2e {e['step']:<9} {e['impl']:<8} {e.get('status')}: {e.get('reason', '')}")
    if not args.from_json:
        print(f"JSON: {args.json}")
    # Reports of a loaded document draw only on request: its folder may be read-only (fetched results).
    png = args.png or (None if args.from_json else args.json.with_suffix(".png"))
    if png is not None and not args.no_png and doc["cases"]:
        from .plot import draw

        print(f"PNG: {draw(doc, png)}")
    if args.markdown:
        report.update_markdown(args.markdown, report.markdown_section(doc, source=source),
                               args.section or report.section_key(doc))
        print(f"markdown: {args.markdown} (section {args.section or report.section_key(doc)})")
    bad = [r for c in doc["cases"] for r in c["results"] if r["status"] in ("failed", "error")]
    bad += [e for e in doc.get("e2e", []) if e.get("status") == "error"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
