"""GTL at language scale with an exact ground truth: the ``n_ratio`` ablation on a 30k-token synthetic language.

    gtl-language            # the full ablation (V = 30522, L = 128; see --help)
    gtl-language --quick    # a small smoke run (L = 16, few sequences)
    gtl-language learned    # learned models: vanilla / fine-tuned / GTL over target fractions
                            # (gtl_kernels/experiments/language_learned.py; see gtl-language learned --help)

The source and target chains are :func:`~gtl_kernels.gtl.language.make_language`'s. The scheduled sampler with a
left-to-right order runs on the exact source denoiser and the exact ratio (:class:`LeftToRightDenoiser`,
:class:`LeftToRightRatio`), so only the sampler's approximations remain: ``n_ratio`` candidates (the source row's
most likely tokens) and ``top_k``. Per setting, on the same seeds:

* ``target_ll``: exact per-token log-likelihood of the samples under the target chain;
* ``rb_target_ll``, ``entropy_rate``, ``kl_rate``: per-token averages over the samples' positions of
  ``E_pi[log q]``, ``H(pi)`` and ``KL(pi || q)``, where ``pi`` is the law the sampler draws each token from (exact,
  :func:`sampler_conditional`) and ``q`` the target row: the same mean as ``target_ll`` with less noise, the
  sampler's entropy (collapse shows as a drop) and its divergence from the target (0 for exact guidance);
* ``target_only_share``: share of drawn transitions that are target-only successors;
* time per sequence: wall, inside the oracles ("models"), outside them ("sampler"), and per ``gtl_kernels`` op.

References in the same run: the target chain sampled directly, and the unguided sampler (the source).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import gtl_kernels as gk

from ..gtl.language import (LanguageConfig, LeftToRightDenoiser, LeftToRightRatio, make_language,
                            sampler_conditional)
from ..gtl.samplers import ScheduledSampler
from .reporting import figure, loadavg, write_json

TIMED_OPS = ("sample", "topk_log_softmax", "derive_keys", "masked_transition", "confidence")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gtl-language", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: L = 16, 4 sequences per setting")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--overlap", type=float, default=0.8, help="target mass on the successors it shares")
    p.add_argument("--n-ratio", type=int, nargs="+", default=[8, 64, 512, 0], help="candidates; 0 = all V")
    p.add_argument("--top-k", type=int, nargs="+", default=[0, 8], help="guided top-K (0 = all)")
    p.add_argument("--samples", type=int, default=8, help="sequences per setting")
    p.add_argument("--reference-samples", type=int, default=64, help="target-chain sequences for the reference")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per sampler batch")
    p.add_argument("--seed", type=int, default=1, help="sampler seed (the language has its own, --language-seed)")
    p.add_argument("--language-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription when shared)")
    p.add_argument("--timing-repeats", type=int, default=0,
                   help="then rerun the unguided sampler and the settings with n_ratio <= 512 this many times, "
                        "interleaved, and report median sampler ms per sequence (timings on a shared machine)")
    p.add_argument("--out", type=Path, default=Path("results/language"))
    return p


@contextlib.contextmanager
def timed_ops(seconds: dict):
    """Time every call of the ``gtl_kernels`` ops in :data:`TIMED_OPS` (the samplers call them through the module)
    into ``seconds[name]``; the module is restored on exit."""
    originals = {name: getattr(gk, name) for name in TIMED_OPS}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return timed

    try:
        for name, fn in originals.items():
            setattr(gk, name, wrap(name, fn))
        yield seconds
    finally:
        for name, fn in originals.items():
            setattr(gk, name, fn)


def exact_rates(lang, x: torch.Tensor, *, n_ratio, top_k: int, gamma: float = 1.0, chunk: int = 256) -> dict:
    """Per-token ``E_pi[log q]``, ``H(pi)``, ``KL(pi || q)`` averaged over the positions of ``x`` int64 ``[N, L]``
    (``pi`` = the sampler's law at each position given its left neighbour, ``q`` = the target row)."""
    sums = {"rb_target_ll": 0.0, "entropy_rate": 0.0, "kl_rate": 0.0}
    prevs = [None] + [x[:, l - 1] for l in range(1, x.shape[1])]
    for prev in prevs:
        for i in range(0, len(x), chunk):
            n = min(chunk, len(x) - i)
            p_prev = None if prev is None else prev[i : i + n]
            log_pi = sampler_conditional(lang, p_prev, n, n_ratio=n_ratio, top_k=top_k, gamma=gamma)
            log_q = lang.log_first("target", n) if p_prev is None else lang.log_rows("target", p_prev)
            pi = log_pi.exp()
            safe_pi = torch.where(pi > 0, log_pi, torch.zeros_like(log_pi))
            sums["rb_target_ll"] += float((pi * log_q).sum())
            sums["entropy_rate"] -= float((pi * safe_pi).sum())
            sums["kl_rate"] += float((pi * (safe_pi - log_q)).sum())
    return {k: v / x.numel() for k, v in sums.items()}


def target_entropy_rate(lang, x: torch.Tensor) -> float:
    """Per-token entropy of the target chain along ``x`` (``E[H(q(. | prev))]`` averaged over positions)."""
    return exact_rates(lang, x, n_ratio=None, top_k=0)["entropy_rate"]  # pi = q there


def run_setting(lang, name: str, *, n_ratio, top_k: int, args, guided: bool) -> dict:
    """Sample ``args.samples`` sequences with one sampler setting and score them (see the module doc)."""
    den, rat = LeftToRightDenoiser(lang), LeftToRightRatio(lang)
    sampler = ScheduledSampler(den, lang.vocab, rat if guided else None, order="left_to_right",
                               n_ratio=(lang.vocab if not n_ratio else n_ratio), top_k=top_k, gamma=1.0)
    ops: dict = {}
    with timed_ops(ops):
        t0 = time.perf_counter()
        x, stats = sampler(args.samples, args.length, seed=args.seed, batch_size=args.batch_size)
        wall = time.perf_counter() - t0
    n = args.samples
    models = den.seconds + rat.seconds
    ops_s = sum(ops.values())
    rates = exact_rates(lang, x, n_ratio=(n_ratio or None) if guided else None, top_k=top_k,
                        gamma=1.0 if guided else 0.0)
    return {
        "setting": name,
        "n_ratio": (n_ratio or "all") if guided else None,
        "top_k": top_k,
        "target_ll": float(lang.log_likelihood("target", x).mean()) / args.length,
        **rates,
        "target_only_share": lang.target_only_share(x),
        "ms_per_seq": {
            "wall": 1e3 * wall / n,
            "models": 1e3 * models / n,
            "denoiser": 1e3 * den.seconds / n,
            "ratio": 1e3 * rat.seconds / n,
            "sampler": 1e3 * (wall - models) / n,
            "ops": {k: 1e3 * v / n for k, v in sorted(ops.items())},
            "sampler_other": 1e3 * (wall - models - ops_s) / n,
        },
        "ratio_passes_per_seq": stats.ratio_passes / n,
    }


def summarize(rows: list[dict]) -> dict:
    """The goals: the n_ratio within 1% of exact guidance (per top-K), time growth, GTL-at-8 vs unguided."""
    unguided = next(r for r in rows if r["setting"] == "unguided")
    exact = next((r for r in rows if r["n_ratio"] == "all" and r["top_k"] == 0), None)
    out: dict = {}
    if exact is not None:
        ref = exact["rb_target_ll"]
        for k in sorted({r["top_k"] for r in rows if r["n_ratio"] is not None}):
            grid = [r for r in rows if r["n_ratio"] is not None and r["top_k"] == k]
            within = [r["n_ratio"] for r in grid if abs(r["rb_target_ll"] - ref) <= 0.01 * abs(ref)]
            out[f"n_ratio_within_1pct[top_k={k}]"] = within[0] if within else None
    for r in rows:
        if r["n_ratio"] == 8 and r["top_k"] == 0:
            out["sampler_time_ratio_gtl8_vs_unguided"] = r["ms_per_seq"]["sampler"] / unguided["ms_per_seq"]["sampler"]
    num = [r for r in rows if isinstance(r["n_ratio"], int) and r["top_k"] == 0]
    if len(num) >= 2:
        a, b = num[0], num[-1]
        out["sampler_ms_slope_per_candidate"] = (
            (b["ms_per_seq"]["sampler"] - a["ms_per_seq"]["sampler"]) / (b["n_ratio"] - a["n_ratio"]))
    return out


def timing_medians(lang, rows: list[dict], args) -> dict:
    """Median over ``args.timing_repeats`` interleaved reruns of the sampler time (outside the oracles) per sequence
    of the unguided sampler and of the guided settings with ``n_ratio <= 512``, and their ratio to the unguided."""
    cheap = [r for r in rows if r["n_ratio"] is None or (r["n_ratio"] != "all" and r["n_ratio"] <= 512)]
    times: dict = {r["setting"]: [] for r in cheap}
    for _ in range(args.timing_repeats):
        for r in cheap:
            again = run_setting(lang, r["setting"], n_ratio=r["n_ratio"], top_k=r["top_k"], args=args,
                                guided=r["n_ratio"] is not None)
            times[r["setting"]].append(again["ms_per_seq"]["sampler"])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"repeats": args.timing_repeats, "sampler_ms_median": med,
            "ratio_to_unguided": {k: v / med["unguided"] for k, v in med.items()}}


def plot(path: Path, rows: list[dict], reference: dict, vocab: int) -> None:
    panels = (("rb_target_ll", "target log-lik. per token"), ("entropy_rate", "entropy rate (nats/token)"),
              ("kl_rate", "KL(sampler || target) per token"), ("sampler", "sampler ms / sequence (outside models)"))
    unguided = next(r for r in rows if r["setting"] == "unguided")
    with figure(path, dpi=110, nrows=1, ncols=4, figsize=(17, 3.8)) as (fig, axes):
        for ax, (key, label) in zip(axes, panels):
            for k in sorted({r["top_k"] for r in rows if r["n_ratio"] is not None}):
                grid = [r for r in rows if r["n_ratio"] is not None and r["top_k"] == k]
                xs = [vocab if r["n_ratio"] == "all" else r["n_ratio"] for r in grid]
                ys = [r["ms_per_seq"]["sampler"] if key == "sampler" else r[key] for r in grid]
                ax.plot(xs, ys, "o-", label=f"GTL, top-K={k or 'all'}")
            base = unguided["ms_per_seq"]["sampler"] if key == "sampler" else unguided[key]
            ax.axhline(base, color="gray", ls="--", label="unguided (source)")
            if key in reference:
                ax.axhline(reference[key], color="k", ls=":", label="target chain")
            ax.set_xscale("log")
            ax.set_xlabel("n_ratio (rightmost: all V)")
            ax.set_title(label, fontsize=9)
        axes[0].legend(fontsize=7)


def main(argv=None) -> int:
    rest = list(sys.argv[1:] if argv is None else argv)
    if rest[:1] == ["learned"]:
        from .language_learned import main as learned

        return learned(rest[1:])
    args = build_parser().parse_args(argv)
    if args.quick:
        args.length, args.samples, args.reference_samples = 16, 4, 64
        args.batch_size = min(args.batch_size, 4)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cfg = LanguageConfig(vocab=args.vocab, overlap=args.overlap, seed=args.language_seed)
    lang = make_language(cfg)
    x_ref = lang.sample("target", args.reference_samples, args.length, seed=args.seed + 1000)
    h_ref = target_entropy_rate(lang, x_ref)
    reference = {
        "target_ll": float(lang.log_likelihood("target", x_ref).mean()) / args.length,
        "rb_target_ll": -h_ref,  # E_q[log q] = -H(q)
        "entropy_rate": h_ref,
        "kl_rate": 0.0,
        "target_only_share": lang.target_only_share(x_ref),
    }
    print(f"target chain: ll/token {reference['target_ll']:.4f}, entropy rate {reference['entropy_rate']:.4f}, "
          f"target-only share {reference['target_only_share']:.3f}", flush=True)
    rows = [run_setting(lang, "unguided", n_ratio=None, top_k=0, args=args, guided=False)]
    for k in args.top_k:
        for n in args.n_ratio:
            rows.append(run_setting(lang, f"gtl[n_ratio={n or 'all'},top_k={k}]", n_ratio=n, top_k=k, args=args,
                                    guided=True))
            write_json(args.out / "language.partial.json", {"reference": reference, "rows": rows})
            print(f"  done {rows[-1]['setting']} at {time.perf_counter() - t_start:.0f} s", flush=True)
    header = f"{'setting':<30} {'ll/tok':>8} {'E_pi ll':>8} {'H rate':>7} {'KL rate':>8} {'T-only':>7} " \
             f"{'wall ms':>9} {'models':>9} {'sampler':>9}"
    print(header)
    for r in rows:
        t = r["ms_per_seq"]
        print(f"{r['setting']:<30} {r['target_ll']:>8.4f} {r['rb_target_ll']:>8.4f} {r['entropy_rate']:>7.3f} "
              f"{r['kl_rate']:>8.4f} {r['target_only_share']:>7.3f} {t['wall']:>9.1f} {t['models']:>9.1f} "
              f"{t['sampler']:>9.1f}", flush=True)
    summary = summarize(rows)
    if args.timing_repeats:
        summary["timing_medians"] = timing_medians(lang, rows, args)
    print(summary)
    result = {
        "command": "gtl-language " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads,
                    "loadavg_1min": loadavg()},
        "config": {**vars(cfg), "length": args.length, "samples": args.samples, "seed": args.seed,
                   "reference_samples": args.reference_samples, "batch_size": args.batch_size},
        "reference": reference,
        "rows": rows,
        "summary": summary,
        "total_s": time.perf_counter() - t_start,
    }
    write_json(args.out / "language.json", result)
    plot(args.out / "language-n_ratio.png", rows, reference, lang.vocab)
    print(f"wrote {args.out / 'language.json'} and {args.out / 'language-n_ratio.png'} "
          f"({result['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
