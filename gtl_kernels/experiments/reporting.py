"""Tables, JSON and figures for the Markov-chain experiments."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
from pathlib import Path

import torch

# The paper's Markov-chain figure (GTL_METHOD.md): mean diagonal and mean absolute error per target size n.
PAPER = {
    1000: {"vanilla": (0.668, 0.053), "finetuned": (0.628, 0.069), "gtl": (0.710, 0.045)},
    100: {"vanilla": (0.512, 0.116), "finetuned": (0.496, 0.122), "gtl": (0.608, 0.077)},
    20: {"vanilla": (0.326, 0.190), "finetuned": (0.332, 0.187), "gtl": (0.506, 0.124)},
}
METRICS = ("mean_diag", "mae", "row_kl", "mae_2step", "copy_rate")


def loadavg() -> float:
    """The machine's 1-minute load average (NaN where the platform has none), recorded beside timings."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return math.nan


def paper_key(method: str) -> str:
    """``gtl[conditional]`` -> ``gtl``: every GTL variant is compared with the paper's GTL."""
    return method.split("[")[0]


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(per_seed: list[dict]) -> dict:
    """``per_seed[i][n][method][metric]`` -> ``{n: {method: {metric: [mean, std]}}}`` (n as a string key)."""
    out: dict = {}
    for n in per_seed[0]:
        out[n] = {}
        for method in per_seed[0][n]:
            rows = [seed_res[n][method] for seed_res in per_seed]
            out[n][method] = {m: list(mean_std([r["metrics"][m] for r in rows])) for m in METRICS}
            out[n][method]["sample_ms_per_seq"] = list(mean_std([r["sampler"]["per_sequence"]["ms"] for r in rows]))
    return out


def format_table(agg: dict, n_seeds: int, paper: dict | None = None) -> str:
    """A plain-text table of the measured means (± std over seeds); with ``paper`` (:data:`PAPER`, given only for the
    paper's own chain pair) its values are printed next to them."""
    spread = f" (± std over {n_seeds} seeds)" if n_seeds > 1 else ""
    pcol = lambda v: f" {v:>6}" if paper is not None else ""  # noqa: E731
    lines = [
        f"{'n':>6} {'method':<20} {'mean diag' + spread:>26}{pcol('paper')} {'MAE':>17}{pcol('paper')} "
        f"{'row KL':>16} {'2-step MAE':>11} {'copies':>7}",
    ]
    for n, methods in agg.items():
        for method, m in methods.items():
            ref = (paper or {}).get(int(n), {}).get(paper_key(method))
            pd, pm = (f"{ref[0]:.3f}", f"{ref[1]:.3f}") if ref else ("-", "-")
            lines.append(
                f"{n:>6} {method:<20} {m['mean_diag'][0]:>18.3f} ± {m['mean_diag'][1]:.3f}{pcol(pd)} "
                f"{m['mae'][0]:>9.3f} ± {m['mae'][1]:.3f}{pcol(pm)} {m['row_kl'][0]:>8.3f} ± {m['row_kl'][1]:.3f} "
                f"{m['mae_2step'][0]:>11.3f} {m['copy_rate'][0]:>7.2f}"
            )
    return "\n".join(lines)


def machine() -> dict:
    """What a result's last bits depend on besides the code and the seeds: PyTorch's version and the CPU kernels it
    dispatched to (``AVX512``, ``AVX2``, ...; overridable with ``ATEN_CPU_CAPABILITY``), and the CPU. Trained
    networks follow the rounding of those kernels, so a cell reproduces bit for bit only where these agree (an
    ``ATEN_CPU_CAPABILITY=avx2`` run on an AVX-512 machine gives different ratio networks; docs/GTL.md)."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def write_json(path: Path, obj: dict) -> None:
    """``obj`` as indented JSON at ``path`` (tensors as lists), with :func:`machine` under ``"machine"``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**obj, "machine": machine()}, indent=2, default=_jsonable))


def _jsonable(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


@contextlib.contextmanager
def figure(path: Path, *, dpi: int = 120, **subplots):
    """``plt.subplots(**subplots)`` on the Agg backend, yielding ``(fig, axes)``; on exit the figure is laid out,
    written to ``path`` (its folder created) and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def heatmaps(path: Path, matrices: dict, target: torch.Tensor, title: str) -> None:
    """A grid of transition-matrix heatmaps: rows = methods (first row: the true target), columns = target sizes.

    ``matrices[method][n]`` is a ``[S, S]`` tensor (seed-averaged estimate).
    """
    methods = list(matrices)
    ns = list(next(iter(matrices.values())))
    with figure(path, nrows=len(methods) + 1, ncols=len(ns), figsize=(2.6 * len(ns), 2.5 * (len(methods) + 1)),
                squeeze=False) as (fig, axes):
        rows = [("target (true)", {n: target for n in ns})] + [(m, matrices[m]) for m in methods]
        for i, (name, by_n) in enumerate(rows):
            for j, n in enumerate(ns):
                ax = axes[i][j]
                mat = by_n[n].numpy()
                ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
                if mat.shape[0] <= 8:
                    for a in range(mat.shape[0]):
                        for b in range(mat.shape[1]):
                            ax.text(b, a, f"{mat[a, b]:.2f}", ha="center", va="center", fontsize=6,
                                    color="white" if mat[a, b] < 0.5 else "black")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"n = {n}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(name, fontsize=8)
        fig.suptitle(title, fontsize=10)


def line_plot(path: Path, xs: list, series: dict, xlabel: str, ylabel: str, title: str) -> None:
    """One line per entry of ``series`` (name -> list of y values over ``xs``)."""
    with figure(path, figsize=(5, 3.5)) as (fig, ax):
        for name, ys in series.items():
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
