"""Measured backend choices for ``auto`` (KERNEL_SPEC §5): which backend is faster per op and row class.

``auto`` takes the highest-priority backend that can run a call, unless ``gtl_kernels/auto_table.json`` names a
measured winner for the call's device type, op and row class (:func:`gtl_kernels.backends.row_class`). This module
makes that table from a ``gtl-bench`` JSON run:

    python -m gtl_kernels.bench.auto_table results/bench-cuda.json            # print the choices
    python -m gtl_kernels.bench.auto_table results/bench-cuda.json --write    # and store them in the package

Per (op, row class), each backend's times are compared as ratios to ``torch.argmax`` over the same logits in the same
case; the winner has the lowest geometric mean over the cases where every compared backend ran and passed its check.
The table keeps the evidence (geometric means, case count, device, date) next to each choice.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..backends import AUTO_TABLE, row_class

REFERENCE = "torch"  # the float64 oracle is never an ``auto`` candidate on a device with a fast backend


def choose(run: dict) -> tuple[str, dict, dict]:
    """``(device_type, choices, evidence)`` from one gtl-bench run: ``choices[op][row_class]`` is a backend name,
    ``evidence[op][row_class]`` the geometric-mean ratios to argmax per backend and the number of cases.

    A backend that failed its check (or did not run) in any case of a class is not chosen for that class; the others
    are compared over the cases where all of them ran. A class where a single fast backend was ever measured has no
    entry (nothing to choose)."""
    device_type = run["meta"]["device"]["type"]
    classes: dict[tuple[str, str], list[dict]] = {}
    for case in run["cases"]:
        results = [r for r in case["results"] if r.get("role") == "backend" and r["impl"] != REFERENCE]
        if results:
            classes.setdefault((case["op"], row_class(case["n"])), []).append(
                {r["impl"]: r["ratio"]["argmax"] if r.get("status") == "ok" and "argmax" in r.get("ratio", {})
                 else None for r in results})
    choices: dict = {}
    evidence: dict = {}
    for (op, cls), cases in sorted(classes.items()):
        seen = set().union(*cases)
        failed = {b for c in cases for b, ratio in c.items() if ratio is None}
        # candidates: never failed in the class; compared on the cases where all of them ran
        candidates = sorted(seen - failed)
        timed = [c for c in cases if all(c.get(b) is not None for b in candidates)]
        if len(seen) < 2 or not candidates or not timed:
            continue
        geo = {b: math.exp(sum(math.log(c[b]) for c in timed) / len(timed)) for b in candidates}
        choices.setdefault(op, {})[cls] = min(geo, key=geo.get)
        evidence.setdefault(op, {})[cls] = {"geomean_ratio_to_argmax": geo, "cases": len(timed),
                                            "not_chosen_failed": sorted(failed),
                                            "device": run["meta"]["device"].get("name"), "date": run["meta"]["date"]}
    return device_type, choices, evidence


def merge(table: dict, device_type: str, choices: dict, evidence: dict) -> dict:
    """``table`` with the choices of ``device_type`` replaced (other device types kept)."""
    out = dict(table)
    out["choices"] = {**table.get("choices", {}), device_type: choices}
    out["evidence"] = {**table.get("evidence", {}), device_type: evidence}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gtl_kernels.bench.auto_table", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a gtl-bench JSON file")
    p.add_argument("--write", nargs="?", const=AUTO_TABLE, type=Path, default=None,
                   help=f"store the choices in this table (default {AUTO_TABLE})")
    args = p.parse_args(argv)
    device_type, choices, evidence = choose(json.loads(args.run.read_text()))
    for op, classes in choices.items():
        for cls, name in classes.items():
            geo = evidence[op][cls]["geomean_ratio_to_argmax"]
            print(f"{device_type} {op:<20} {cls:<9} -> {name:<7} "
                  + ", ".join(f"{b} {g:.3f}x argmax" for b, g in geo.items()))
    if not choices:
        print(f"{device_type}: no op was measured on two or more fast backends; nothing to choose")
    if args.write is not None:
        table = json.loads(args.write.read_text()) if args.write.exists() else {}
        args.write.write_text(json.dumps(merge(table, device_type, choices, evidence), indent=2) + "\n")
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
