"""GTL at language scale with learned models, scored by the synthetic language's exact likelihoods.

    gtl-language learned            # the full run (V = 30522, L = 16; about 15 minutes on a shared 2-core CPU)
    gtl-language learned --quick    # a smoke run (L = 8, a few training steps)

A small denoiser is trained on source-chain sequences of :func:`~gtl_kernels.gtl.language.make_language`'s language;
target sets are the first ``fraction * --target-budget`` sequences of one target draw (nested). Per fraction, the
methods of ``gtl-markov`` (its training functions and sampler factory are reused): *vanilla* (the denoiser trained on
the target set alone), *finetuned* (the source denoiser trained further on it), *gtl[<estimator>]* (the frozen
source denoiser guided by a ratio network: ``conditional`` = the package default, ``paper`` = the paper's recipe
with its two classifiers), all sampled by the scheduled sampler in ``--order``'s first order. At one fraction
(``--order-fraction``, default the smallest) GTL with the default estimator is also sampled in the other orders
(``max_prob``, ``planner``: a planner trained on the source denoiser).

Every sample set is scored exactly: per-token log-likelihood under the target chain (``target_ll``, with its standard
error over sequences) and the source chain (``source_ll``), the share of target-only successor transitions
(``target_only_share``), the share of samples copied from the training target set (``copy_rate``), and an entropy
estimate per token, ``entropy``: the mean negative log-probability of each drawn token under the law the sampler drew
it from (``SamplerStats.token_nll``; for a left-to-right order its expectation is the sampler's entropy per token;
for token-dependent orders an upper bound, the entropy of the reveal path). References in the same run, scored the
same way: true target and true source sequences (their ``entropy`` is ``-log P(x) / L`` under their own chain, the
same estimator; ``entropy_exact`` is the chain's exact entropy rate along them), the untrained denoiser and the
unguided source denoiser.

Every random draw is keyed by ``(--seed, component, ...)`` (:func:`~gtl_kernels.experiments.markov.key`); all
methods sample with the same sampler seed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..gtl.language import LanguageConfig, MarkovLanguage, make_language
from ..gtl.nets import Denoiser, Planner, n_params
from ..gtl.samplers import ScheduledSampler
from ..gtl.training import conditional_nll, train_denoiser, train_planner
from . import markov
from .language import exact_rates, target_entropy_rate
from .reporting import figure, loadavg, write_json

ESTIMATORS = ("conditional", "classifier", "paper")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gtl-language learned", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: L = 8, a few steps, 8 samples (< 2 minutes)")
    g = p.add_argument_group("language and data")
    g.add_argument("--vocab", type=int, default=30522)
    g.add_argument("--length", type=int, default=16, help="sequence length L")
    g.add_argument("--overlap", type=float, default=0.8, help="target mass on the successors it shares")
    g.add_argument("--language-seed", type=int, default=0)
    g.add_argument("--n-source", type=int, default=20_000, help="source training sequences")
    g.add_argument("--target-budget", type=int, default=1000, help="target sequences at fraction 1")
    g.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="target fractions")
    g = p.add_argument_group("methods and sampling")
    g.add_argument("--methods", nargs="+", default=["vanilla", "finetuned", "gtl"],
                   choices=("vanilla", "finetuned", "gtl"))
    g.add_argument("--ratio-loss", nargs="+", default=["conditional", "paper"], choices=ESTIMATORS,
                   help="ratio estimators; one GTL row each")
    g.add_argument("--order", nargs="+", default=["left_to_right", "max_prob", "planner"],
                   choices=ScheduledSampler.ORDERS,
                   help="the first is every method's order; the others give GTL rows at --order-fraction")
    g.add_argument("--order-fraction", type=float, default=None, help="fraction of the order comparison "
                   "(default: the smallest)")
    g.add_argument("--samples", type=int, default=48, help="generated sequences per method and fraction")
    g.add_argument("--reference-samples", type=int, default=256, help="true target / source sequences scored")
    g.add_argument("--n-ratio", type=int, default=64, help="candidates scored by the ratio net per step")
    g.add_argument("--top-k", type=int, default=0, help="keep the top-k guided tokens (0 = all)")
    g.add_argument("--gamma", type=float, default=1.0)
    g.add_argument("--gamma-schedule", default="constant", choices=("constant", "piecewise"))
    g.add_argument("--planner-temperature", type=float, default=0.5)
    g.add_argument("--sample-batch", type=int, default=64, help="sequences per sampler batch")
    g = p.add_argument_group("training")
    g.add_argument("--d-model", type=int, default=64, help="width of the denoisers")
    g.add_argument("--ratio-d-model", type=int, default=32, help="width of the ratio net, classifiers, planner")
    markov.add_training_args(g, batch_size=16, lr=3e-3, denoiser_steps=400, vanilla_steps=150, finetune_steps=150,
                             finetune_lr=1e-3, ratio_steps=150, ratio_batch=16, classifier_steps=150,
                             planner_steps=100, ratio_layers=2, ratio_ensemble=1)
    g.add_argument("--ratio-candidates", type=int, default=32,
                   help="candidates per example of the conditional loss (the denoiser's top ones plus the true token)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=1, help="the run's seed (hyperparameters were chosen on seed 0)")
    g.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription when shared)")
    g.add_argument("--device", default="cpu")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--out", type=Path, default=Path("results/language-learned"))
    return p


def apply_quick(args) -> None:
    args.length, args.samples, args.reference_samples = 8, 8, 64
    args.n_source, args.target_budget = min(args.n_source, 2000), min(args.target_budget, 200)
    args.fractions = [0.05, 1.0]
    for name, steps in (("denoiser_steps", 30), ("vanilla_steps", 10), ("finetune_steps", 10), ("ratio_steps", 10),
                        ("classifier_steps", 10), ("planner_steps", 10)):
        setattr(args, name, min(getattr(args, name), steps))


@dataclasses.dataclass
class LanguageContext(markov.Context):
    """``gtl-markov``'s per-seed context on the synthetic language: the vocabulary is the language's, and the ratio
    net, classifiers and planner get their own width (``--ratio-d-model``)."""

    lang: MarkovLanguage | None = None

    @property
    def vocab(self) -> int:
        return self.lang.vocab

    def model(self, cls, cfg, part):
        if cls is not Denoiser:
            cfg = dataclasses.replace(cfg, d_model=self.args.ratio_d_model)
        return super().model(cls, cfg, part)


class ZeroRatio:
    """A ratio model that guides nothing (log-ratio 0 for every candidate): with it the guided sampler draws from the
    denoiser's top-``n_ratio`` tokens renormalized, the truncation GTL's candidate set applies without guidance."""

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(z), device=z.device)

    def score_substitutions(self, z, seq, pos, cand) -> torch.Tensor:
        return torch.zeros(cand.shape, device=z.device)


def score(lang: MarkovLanguage, x: torch.Tensor, *, entropy: float, train_target: torch.Tensor | None = None,
          **extra) -> dict:
    """The exact scores of sequences ``x`` int64 ``[N, L]`` (see the module doc); ``entropy`` is the caller's
    per-token entropy estimate."""
    length = x.shape[1]
    tll = lang.log_likelihood("target", x) / length
    out = {
        "target_ll": float(tll.mean()),
        "target_ll_se": float(tll.std() / math.sqrt(len(x))) if len(x) > 1 else math.nan,
        "source_ll": float(lang.log_likelihood("source", x).mean()) / length,
        "entropy": entropy,
        "target_only_share": lang.target_only_share(x),
        "distinct_share": len({tuple(r) for r in x.tolist()}) / len(x),
    }
    if train_target is not None:
        train = {tuple(r) for r in train_target.tolist()}
        out["copy_rate"] = sum(tuple(r) in train for r in x.tolist()) / len(x)
    return out | extra


def run(args) -> dict:
    t_start = time.perf_counter()
    lang = make_language(LanguageConfig(vocab=args.vocab, overlap=args.overlap, seed=args.language_seed))
    ctx = LanguageContext(args, None, None, args.seed, {}, lang=lang)
    prog, key, seed, length = not args.no_progress, markov.key, args.seed, args.length
    xs = lang.sample_sparse("source", args.n_source, length, seed=key(seed, "source"))
    xt_all = lang.sample_sparse("target", args.target_budget, length, seed=key(seed, "target"))
    ref_t = lang.sample_sparse("target", args.reference_samples, length, seed=key(seed, "reference target"))
    ref_s = lang.sample_sparse("source", args.reference_samples, length, seed=key(seed, "reference source"))
    sample_seed = key(seed, "sample")
    h_target = target_entropy_rate(lang, ref_t)
    h_source = exact_rates(lang, ref_s, n_ratio=None, top_k=0, gamma=0.0)["entropy_rate"]
    references = {
        "target": score(lang, ref_t, entropy=float(-lang.log_likelihood("target", ref_t).mean()) / length,
                        entropy_exact=h_target),
        "source": score(lang, ref_s, entropy=float(-lang.log_likelihood("source", ref_s).mean()) / length,
                        entropy_exact=h_source),
    }
    rows: list[dict] = []

    def sample(name: str, sampler, fraction, xt, **extra) -> dict:
        x, stats = ctx.timed(f"sample {name} {fraction}", sampler, args.samples, length, seed=sample_seed,
                             batch_size=args.sample_batch, progress=prog)
        row = {"method": name, "fraction": fraction, "n_target": None if xt is None else len(xt),
               **score(lang, x, entropy=stats.token_nll(), train_target=xt),
               "sampler_s": stats.wall_s, "ratio_passes_per_seq": stats.ratio_passes / args.samples, **extra}
        rows.append(row)
        row["entropy_vs_target"] = row["entropy"] / h_target - 1.0
        print(f"  {name:<28} f={fraction!s:<5} target ll {row['target_ll']:8.4f} ± {row['target_ll_se']:.4f}  "
              f"source ll {row['source_ll']:8.4f}  H {row['entropy']:6.3f} ({100 * row['entropy_vs_target']:+.1f}%)  "
              f"T-only {row['target_only_share']:.3f}  [{time.perf_counter() - t_start:.0f} s]", flush=True)
        write_json(args.out / "language-learned.partial.json", {"references": references, "rows": rows})
        return row

    print(f"true target: ll/token {references['target']['target_ll']:.4f}, entropy rate {h_target:.4f}; true source: "
          f"target ll/token {references['source']['target_ll']:.4f}, entropy rate {h_source:.4f}", flush=True)
    untrained = ctx.model(Denoiser, ctx.trunk(args.layers), ("source denoiser",))
    sample("untrained", markov.make_sampler(args, untrained), None, None)
    src_den = ctx.model(Denoiser, ctx.trunk(args.layers), ("source denoiser",))
    hist = ctx.timed("source denoiser", train_denoiser, src_den, xs,
                     ctx.train_cfg(args.denoiser_steps, ("source denoiser",)), desc="source denoiser", progress=prog)
    diagnostics: dict = {"source_denoiser": {"params": n_params(src_den), "final_loss": _tail(hist)}}
    sample("source model", markov.make_sampler(args, src_den), None, None)
    top_n = f"/top-{args.n_ratio}"
    if "gtl" in args.methods:  # the candidate truncation alone, without guidance
        sample("source model" + top_n, markov.make_sampler(args, src_den, ZeroRatio()), None, None)
    planner = None
    extra_orders = [o for o in args.order[1:]] if "gtl" in args.methods else []
    if "planner" in extra_orders:
        planner = ctx.model(Planner, ctx.trunk(markov.ratio_blocks(args)), ("planner",))
        ctx.timed("planner", train_planner, planner, src_den, xs, ctx.train_cfg(args.planner_steps, ("planner",)),
                  desc="planner", progress=prog)
    order_fraction = args.order_fraction if args.order_fraction is not None else min(args.fractions)
    heldout = ref_t[: min(len(ref_t), 256)]
    for fraction in sorted(args.fractions):
        n = max(1, round(fraction * args.target_budget))
        xt = xt_all[:n]
        print(f"fraction {fraction} ({n} target sequences)", flush=True)
        if "vanilla" in args.methods:
            van = ctx.model(Denoiser, ctx.trunk(args.layers), ("vanilla", n))
            h = ctx.timed(f"vanilla {n}", train_denoiser, van, xt, ctx.train_cfg(args.vanilla_steps, ("vanilla", n)),
                          desc=f"vanilla n={n}", progress=prog)
            sample("vanilla", markov.make_sampler(args, van), fraction, xt, final_loss=_tail(h))
        if "finetuned" in args.methods:
            ft = copy.deepcopy(src_den)
            h = ctx.timed(f"finetuned {n}", train_denoiser, ft, xt,
                          ctx.train_cfg(args.finetune_steps, ("finetuned", n), lr=args.finetune_lr),
                          desc=f"fine-tune n={n}", progress=prog)
            sample("finetuned", markov.make_sampler(args, ft), fraction, xt, final_loss=_tail(h))
            if "gtl" in args.methods:  # fine-tuning with GTL's candidate truncation
                sample("finetuned" + top_n, markov.make_sampler(args, ft, ZeroRatio()), fraction, xt)
        if "gtl" in args.methods:
            for loss in args.ratio_loss:
                ratio = markov.train_ratio(ctx, loss, src_den, xs, xt)
                nll = conditional_nll(ratio, src_den, heldout, n_candidates=args.ratio_candidates,
                                      seed=key(seed, "heldout nll"), batch_size=64)
                orders = [args.order[0]] + (extra_orders if fraction == order_fraction and loss == args.ratio_loss[0]
                                            else [])
                for order in orders:
                    name = f"gtl[{loss}]" + ("" if order == args.order[0] else f"/{order}")
                    sample(name, markov.make_sampler(args, src_den, ratio, planner, order=order), fraction, xt,
                           ratio_loss=loss, order=order, heldout_guided_nll=nll)
    if "gtl" in args.methods:
        # the held-out guided NLL of the unguided source denoiser (a ratio of 0), the baseline of the ratio's
        diagnostics["heldout_guided_nll_unguided"] = conditional_nll(
            ZeroRatio(), src_den, heldout, n_candidates=args.ratio_candidates,
            seed=key(seed, "heldout nll"), batch_size=64)
    return {"references": references, "rows": rows, "diagnostics": diagnostics, "timings": ctx.timings,
            "summary": summarize(rows, references), "total_s": time.perf_counter() - t_start}


def _tail(history: list[float], k: int = 20) -> float:
    return sum(history[-k:]) / max(1, len(history[-k:]))


def summarize(rows: list[dict], references: dict) -> dict:
    """The learned-model goal at the smallest fraction: each GTL row's target log-likelihood above the fine-tuned one's
    with its entropy within 5% of the target's."""
    fracs = sorted({r["fraction"] for r in rows if r["fraction"] is not None})
    if not fracs:
        return {}
    f0 = fracs[0]
    at = {r["method"]: r for r in rows if r["fraction"] == f0}
    ft = at.get("finetuned")
    ft_top = next((r for m, r in at.items() if m.startswith("finetuned/top-")), None)
    out: dict = {"fraction": f0, "target_entropy": references["target"]["entropy_exact"]}
    for name, r in at.items():
        if not name.startswith("gtl"):
            continue
        out[name] = {
            "target_ll_minus_finetuned": None if ft is None else r["target_ll"] - ft["target_ll"],
            "target_ll_minus_finetuned_truncated": None if ft_top is None else r["target_ll"] - ft_top["target_ll"],
            "entropy_vs_target": r["entropy_vs_target"],
            "goal_met": ft is not None and r["target_ll"] > ft["target_ll"] and abs(r["entropy_vs_target"]) <= 0.05,
        }
    return out


def plot(path: Path, rows: list[dict], references: dict) -> None:
    panels = (("target_ll", "target log-lik. per token"), ("entropy", "entropy estimate (nats/token)"),
              ("target_only_share", "target-only successor share"))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["fraction"] is not None))
    with figure(path, dpi=110, nrows=1, ncols=3, figsize=(15, 4)) as (fig, axes):
        for ax, (key, label) in zip(axes, panels):
            for m in methods:
                pts = sorted((r["fraction"], r[key]) for r in rows if r["method"] == m and r["fraction"] is not None)
                if len(pts) == 1:
                    ax.plot(*zip(*pts), "s", label=m)
                else:
                    ax.plot(*zip(*pts), "o-", label=m)
            ax.axhline(references["target"][key], color="k", ls=":", label="true target")
            ax.axhline(references["source"][key], color="gray", ls=":", label="true source")
            for r in rows:
                if r["method"] == "source model":
                    ax.axhline(r[key], color="gray", ls="--", label="source model (unguided)")
                elif r["method"].startswith("source model/"):
                    ax.axhline(r[key], color="tab:brown", ls="-.", label=r["method"] + " (no guidance)")
            ax.set_xscale("log")
            ax.set_xlabel("target fraction")
            ax.set_title(label, fontsize=9)
        axes[0].legend(fontsize=7)


def print_table(rows: list[dict], references: dict) -> None:
    print(f"\n{'method':<28} {'fraction':>8} {'n':>5} {'target ll':>16} {'source ll':>9} {'entropy':>8} "
          f"{'vs H_t':>7} {'T-only':>7} {'copy':>5}")
    for name, r in references.items():
        print(f"{'true ' + name:<28} {'':>8} {'':>5} {r['target_ll']:>8.4f} ± {r['target_ll_se']:.4f} "
              f"{r['source_ll']:>9.4f} {r['entropy']:>8.3f} {'':>7} {r['target_only_share']:>7.3f}")
    for r in rows:
        frac = "" if r["fraction"] is None else f"{r['fraction']:g}"
        n = "" if r["n_target"] is None else str(r["n_target"])
        copy_rate = f"{r['copy_rate']:.2f}" if "copy_rate" in r else ""
        print(f"{r['method']:<28} {frac:>8} {n:>5} {r['target_ll']:>8.4f} ± {r['target_ll_se']:.4f} "
              f"{r['source_ll']:>9.4f} {r['entropy']:>8.3f} {100 * r['entropy_vs_target']:>+6.1f}% "
              f"{r['target_only_share']:>7.3f} {copy_rate:>5}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.quick:
        apply_quick(args)
    # gtl-markov's factories read these
    args.sampler = "scheduled"
    args.phase_lines = not args.no_progress and not sys.stderr.isatty()
    args.no_progress = args.no_progress or args.phase_lines
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    load0 = loadavg()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    res = run(args)
    print_table(res["rows"], res["references"])
    print(f"diagnostics: {res['diagnostics']}")
    print(f"summary: {res['summary']}")
    phases: dict = {}
    for k, v in res["timings"].items():
        phases[k.split(" ")[0]] = phases.get(k.split(" ")[0], 0.0) + v
    print(f"wall time {res['total_s']:.0f} s; by phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
    result = {
        "command": "gtl-language learned " + " ".join(argv),
        "date_utc": started,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads,
                    "loadavg_1min_start": load0, "loadavg_1min_end": loadavg()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        **res,
    }
    write_json(args.out / "language-learned.json", result)
    plot(args.out / "language-learned.png", res["rows"], res["references"])
    print(f"wrote {args.out / 'language-learned.json'} and {args.out / 'language-learned.png'}")
    return 0
