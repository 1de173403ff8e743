"""The PNG of a run: time per row vs vocabulary size, one panel per op.

Each panel shows the cases of one logits dtype without bias (the first dtype of the run; the guided cases when
there are no others), at the largest N measured for each V (the throughput regime). Lines: every implementation
that ran; ``torch.argmax`` (the one-read floor) dashed black; the bandwidth line, the time to move the op's bytes at
the measured copy bandwidth, dotted grey.
"""

from __future__ import annotations

from pathlib import Path

from .report import OP_ORDER, impl_columns


def _panel_cases(cases: list[dict]) -> list[dict]:
    dtype = cases[0]["dtype"]
    chosen = [c for c in cases if c["dtype"] == dtype]
    unguided = [c for c in chosen if not c["bias"]]
    chosen = unguided or chosen
    by_v: dict[int, dict] = {}
    for c in chosen:  # largest N per V; the first variant (kind, k) seen
        if c["v"] not in by_v or c["n"] > by_v[c["v"]]["n"]:
            by_v[c["v"]] = c
    return [by_v[v] for v in sorted(by_v)]


def draw(doc: dict, path: Path) -> Path:
    """Write the PNG to ``path`` (parent folders are created); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_op: dict[str, list[dict]] = {}
    for c in doc["cases"]:
        by_op.setdefault(c["op"], []).append(c)
    ops = sorted(by_op, key=lambda o: OP_ORDER.index(o) if o in OP_ORDER else 99)
    if not ops:
        raise ValueError("the document holds no cases to plot")
    cols = min(3, len(ops))
    rows = -(-len(ops) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    dev = doc["meta"]["device"]
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [n for n in impl_columns(doc["cases"]) if n not in ("argmax", "copy")]
    color = {n: palette[i % len(palette)] for i, n in enumerate(names)}  # one colour per impl in every panel
    for ax, op in zip(axes.flat, ops):
        cases = _panel_cases(by_op[op])
        for impl in impl_columns(cases):
            pts = [(c["v"], r["time_s"] / c["n"]) for c in cases for r in c["results"]
                   if r["impl"] == impl and r.get("time_s")]
            if not pts or impl == "copy":
                continue
            xs, ys = zip(*pts)
            if impl == "argmax":
                style = dict(color="black", linestyle="--", linewidth=2)
            else:
                style = dict(color=color[impl], marker="o")
            ax.plot(xs, [y * 1e6 for y in ys], label="argmax (floor)" if impl == "argmax" else impl, **style)
        bw = []
        for c in cases:
            copy = next((r for r in c["results"] if r["impl"] == "copy" and r.get("gbps")), None)
            if copy:
                bw.append((c["v"], c["bytes"] / (copy["gbps"] * 1e9) / c["n"]))
        if bw:
            xs, ys = zip(*bw)
            ax.plot(xs, [y * 1e6 for y in ys], color="grey", linestyle=":", linewidth=2, label="bytes at copy BW")
        c0 = cases[0]
        ax.set_title(f"{op} ({c0['dtype']}{', +bias' if c0['bias'] else ''})", fontsize=10)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vocabulary size V")
        ax.set_ylabel("time per row (µs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(ops):]:
        ax.axis("off")
    fig.suptitle(f"gtl-bench on {dev.get('name', dev['type'])} ({doc['meta']['date']}); largest N per V", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
