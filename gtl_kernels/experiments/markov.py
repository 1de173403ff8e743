"""The paper's synthetic experiment: transfer from an anti-sticky to a sticky Markov chain.

    python -m gtl_kernels.experiments.markov            # the default comparison (see --help)
    python -m gtl_kernels.experiments.markov --quick    # a small smoke run
    python -m gtl_kernels.experiments.markov failure    # the poor-overlap failure mode (gamma sweep)
    python -m gtl_kernels.experiments.markov suite      # every method on a family of chain pairs (experiments/suite.py)

Compare (default): for every seed, a source denoiser is trained on ``--n-source`` source sequences; for each target
size n, three methods generate ``--samples`` sequences: *vanilla* (the same denoiser trained on the n target
sequences only), *finetuned* (the source denoiser trained further on them) and *gtl* (the frozen source denoiser
guided by a ratio network trained on source and target data). Each is scored by the transition matrix estimated from
its samples against the true target (mean diagonal, mean absolute error, row-averaged KL) and by its copy rate (the
share of samples identical to a training target sequence), printed next to the paper's values; JSON and a PNG of the
estimated matrices go to ``--out``. The default run (3 seeds, one worker process per seed, ``--jobs``) takes about
5-7 minutes on a 2-core CPU; its results and the design behind its defaults are in ``docs/GTL.md``.

Failure: the source never emits one state that the target uses; GTL is swept over gamma (see ``failure`` below).

Every random draw is keyed by (seed, component, n) (:func:`key`), so a subset of ``--n-target``, ``--methods``,
``--ratio-loss`` or ``--order`` reproduces the corresponding cells of a full run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from ..gtl import chains as mk
from ..gtl import progress
from ..gtl.nets import Denoiser, Planner, ScorerEnsemble, SequenceScorer, TrunkConfig, n_params
from ..gtl.samplers import (AncestralSampler, ConstantGamma, GuidedAncestralSampler, PiecewiseLinearGamma,
                            ScheduledSampler)
from ..gtl.training import (TrainConfig, conditional_nll, train_denoiser, train_domain_classifier, train_planner,
                            train_ratio_classifier, train_ratio_conditional, train_ratio_paper, train_ratio_selected)
from . import reporting

RATIO_LOSSES = ("conditional", "classifier", "paper")
DEFAULT_STATES = 5
TARGET_BLOCK = 1000  # target sequences are drawn in blocks of this many, each block from its own key


def key(*parts) -> int:
    """A 63-bit seed for the random draw identified by ``parts`` (e.g. ``(seed, "vanilla", n, "init")``).

    Every draw of the experiment (data sets, initializations, training batches) gets its own key, so a cell's result
    does not depend on which other target sizes, methods, estimators or orders the same run computes."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def draw_source(chain: mk.MarkovChain, n: int, length: int, seed: int) -> torch.Tensor:
    """The ``n`` source training sequences of ``seed``: int64 ``[n, length]``."""
    return chain.sample(n, length, generator=torch.Generator().manual_seed(key(seed, "source")))


def draw_target(chain: mk.MarkovChain, n: int, length: int, seed: int) -> torch.Tensor:
    """The first ``n`` target training sequences of ``seed``: int64 ``[n, length]``.

    Sets are nested (the ``n = 20`` set is the first 20 of the ``n = 100`` set) and the first ``n`` rows do not depend
    on how many more are drawn: block ``b`` of :data:`TARGET_BLOCK` sequences has its own key."""
    blocks = [chain.sample(TARGET_BLOCK, length, generator=torch.Generator().manual_seed(key(seed, "target", b)))
              for b in range(-(-n // TARGET_BLOCK))]
    return torch.cat(blocks)[:n] if blocks else torch.empty(0, length, dtype=torch.int64)


def draw_heldout(chain: mk.MarkovChain, n: int, length: int, seed: int) -> torch.Tensor:
    """Held-out target sequences (diagnostics only, never trained on): int64 ``[n, length]``."""
    return chain.sample(n, length, generator=torch.Generator().manual_seed(key(seed, "heldout")))


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


# Under --ratio-layers auto, ratio networks (and the paper recipe's classifiers) for fewer target sequences than this
# have one block, the others two (chosen on the suite's dev pairs at n = 20 and 100; docs/GTL.md).
SMALL_TARGET_SET = 50
# Under --ratio-edges auto, ratio networks and classifiers for at least this many target sequences carry edge
# embeddings (chosen on the dev pairs: better at n = 1000, a tie at 100, worse at 20; sizes between not measured).
EDGES_TARGET_SET = 300


def layers_arg(text: str):
    """``--ratio-layers`` and ``--ratio-ensemble``: ``auto`` or a positive number (of blocks, of networks)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}")
    return value


def ratio_blocks(args, n: int | None = None) -> int:
    """Blocks of a ratio network or classifier trained on ``n`` target sequences (``None``: the planner, which
    sees no target data), from ``--ratio-layers``."""
    if args.ratio_layers != "auto":
        return args.ratio_layers
    return 1 if n is not None and n < SMALL_TARGET_SET else 2


def ratio_edges(args, n: int) -> bool:
    """Whether a ratio network or classifier trained on ``n`` target sequences has edge embeddings (``TrunkConfig.
    edges``), from ``--ratio-edges``."""
    value = getattr(args, "ratio_edges", "off")
    if value != "auto":
        return value == "on"
    return n >= EDGES_TARGET_SET


def ratio_members(args, n: int) -> int:
    """Ratio networks averaged for ``n`` target sequences (conditional loss), from ``--ratio-ensemble``."""
    value = getattr(args, "ratio_ensemble", 1)
    if value != "auto":
        return value
    return 2 if n < SMALL_TARGET_SET else 1


def add_training_args(g, *, batch_size: int, lr: float, denoiser_steps: int, vanilla_steps: int, finetune_steps: int,
                      finetune_lr: float, ratio_steps: int, ratio_batch: int, classifier_steps: int,
                      planner_steps: int, ratio_layers="auto", ratio_ensemble="auto", edges="off") -> None:
    """The training options every GTL experiment shares (architecture below the width, optimizer budgets), with the
    experiment's own defaults."""
    g.add_argument("--layers", type=int, default=2, help="blocks of the denoisers")
    g.add_argument("--ratio-layers", type=layers_arg, default=ratio_layers,
                   help=f"blocks of the ratio net, classifiers and planner; auto: 1 for the ratio net and classifiers "
                        f"of target sets under {SMALL_TARGET_SET} sequences, else 2")
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--dropout", type=float, default=0.0, help="dropout of the ratio net and classifiers")
    g.add_argument("--ratio-window", type=int, default=1,
                   help="local attention window of the ratio net and classifiers (0 = global attention)")
    g.add_argument("--ratio-edges", default=edges, choices=("auto", "on", "off"),
                   help="learned embeddings at the first and last position of the ratio net and classifiers (a local "
                        "network cannot otherwise tell the sequence's start from its inside); auto: for target sets "
                        f"of at least {EDGES_TARGET_SET} sequences")
    g.add_argument("--ratio-init", default="scratch", choices=("scratch", "source"),
                   help="the ratio net's trunk: fresh, or the source denoiser's weights where the shapes match "
                        "(its head starts at zero either way)")
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help="batch of the denoisers, classifiers and planner")
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--ratio-lr", type=float, default=None,
                   help="learning rate of the ratio net and the domain classifiers (default: --lr)")
    g.add_argument("--denoiser-steps", type=int, default=denoiser_steps, help="source denoiser")
    g.add_argument("--vanilla-steps", type=int, default=vanilla_steps, help="denoiser trained on the target only")
    g.add_argument("--finetune-steps", type=int, default=finetune_steps,
                   help="source denoiser trained further on the target")
    g.add_argument("--finetune-lr", type=float, default=finetune_lr)
    g.add_argument("--ratio-steps", type=int, default=ratio_steps, help="ratio network")
    g.add_argument("--ratio-batch", type=int, default=ratio_batch,
                   help="target sequences per step of the conditional ratio loss")
    g.add_argument("--ratio-weight-decay", type=float, default=0.0)
    g.add_argument("--ratio-holdout", type=float, default=0.0,
                   help="conditional ratio: hold out this fraction of the target set and keep the weights of the "
                        "step with the lowest guided NLL on it, step 0 (no guidance) included (0 = off)")
    g.add_argument("--ratio-ensemble", type=layers_arg, default=ratio_ensemble,
                   help="conditional ratio: the mean of this many ratio networks, each with its own initialization "
                        "and batches; auto = 2 for target sets under 50 sequences, else 1 (docs/GTL.md, 'ratio "
                        "ensembles')")
    g.add_argument("--ratio-ensemble-data", default="full", choices=("full", "bootstrap"),
                   help="--ratio-ensemble: every member trained on the whole target set, or each on a resample "
                        "with replacement (bagging)")
    g.add_argument("--classifier-weight", type=float, default=0.0,
                   help="add the noisy-classifier loss to the conditional ratio loss with this weight")
    g.add_argument("--classifier-steps", type=int, default=classifier_steps,
                   help="each domain classifier (paper recipe)")
    g.add_argument("--planner-steps", type=int, default=planner_steps)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gtl-markov", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("mode", nargs="?", default="compare", choices=("compare", "failure", "suite"),
                   help="compare = vanilla / fine-tuned / GTL over target sizes; failure = poor-overlap gamma sweep; "
                        "suite = all methods on a seeded family of chain pairs (dev / test split)")
    g = p.add_argument_group("chains")
    g.add_argument("--states", type=int, default=None,
                   help=f"number of states: of the built-in chains (default {DEFAULT_STATES}), and, when given, the "
                        "size the matrix files must have")
    g.add_argument("--source-diag", type=float, default=0.10, help="diagonal of the built-in source chain")
    g.add_argument("--target-diag", type=float, default=0.80, help="diagonal of the built-in target chain")
    g.add_argument("--source-matrix", type=Path, help="source transition matrix file (.npy, .json, .txt/.csv)")
    g.add_argument("--target-matrix", type=Path, help="target transition matrix file (.npy, .json, .txt/.csv)")
    g.add_argument("--length", type=int, default=20, help="sequence length L")
    g.add_argument("--n-source", type=int, default=10_000, help="source training sequences")
    g.add_argument("--n-target", type=int, nargs="+", default=[1000, 100, 20], help="target set sizes")
    g = p.add_argument_group("methods and sampling")
    g.add_argument("--methods", nargs="+", default=["vanilla", "finetuned", "gtl"],
                   choices=("vanilla", "finetuned", "gtl", "oracle", "gtl-exact-denoiser", "gtl-exact-ratio"),
                   help="oracle = exact source denoiser + exact ratio (the ceiling of guidance); gtl-exact-denoiser "
                        "= the learned ratio on the exact source denoiser, gtl-exact-ratio = the learned source "
                        "denoiser with the exact ratio (which of the two learned parts GTL's error comes from)")
    g.add_argument("--ratio-loss", nargs="+", default=["conditional"], choices=RATIO_LOSSES,
                   help="ratio estimator(s); several give one GTL row each, trained on the same data")
    g.add_argument("--samples", type=int, default=500, help="generated sequences per method and n")
    g.add_argument("--sampler", default="scheduled", choices=("scheduled", "ancestral"),
                   help="scheduled = one position per step (L steps); ancestral = T-step grid (--steps)")
    g.add_argument("--order", nargs="+", default=["left_to_right"], choices=ScheduledSampler.ORDERS,
                   help="position order(s) of the scheduled sampler; several give one GTL row each (one training). "
                        "The baselines use the first (random instead of planner)")
    g.add_argument("--steps", type=int, default=20, help="steps of the ancestral samplers")
    g.add_argument("--mode-ancestral", dest="anc_mode", default="exact", choices=("exact", "topn"),
                   help="candidate mode of the guided ancestral sampler")
    g.add_argument("--gamma", type=float, default=1.0, help="guidance strength (constant schedule)")
    g.add_argument("--gamma-schedule", default="constant", choices=("constant", "piecewise"),
                   help="piecewise = 1 early, 2 late (the paper's schedule)")
    g.add_argument("--n-ratio", type=int, default=512, help="candidates scored by the ratio net (capped at V)")
    g.add_argument("--top-k", type=int, default=0, help="keep the top-k guided tokens (0 = all)")
    g.add_argument("--planner-temperature", type=float, default=0.5)
    g.add_argument("--sample-batch", type=int, default=1000, help="sequences per sampler batch")
    g = p.add_argument_group("training")
    g.add_argument("--d-model", type=int, default=32, help="width of every network")
    g.add_argument("--epochs", nargs="+", default=None, metavar="E|PART=E",
                   help="budgets as passes over each network's training data instead of the --*-steps (batches of at "
                        "most the data's size; fine-tuning gets min(max(N_source / n, 1), 2) times the passes, as in "
                        f"the authors' scripts): one number for all, then PART=E to change a part ({', '.join(PARTS)})")
    add_training_args(g, batch_size=128, lr=6e-3, denoiser_steps=600, vanilla_steps=250, finetune_steps=250,
                      finetune_lr=3e-3, ratio_steps=900, ratio_batch=64, classifier_steps=300, planner_steps=300,
                      edges="auto")
    g = p.add_argument_group("run")
    g.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="one full run per seed; mean ± std reported (default 0 1 2; suite: 0 on test pairs, dev pairs "
                        "always use their own seeds)")
    g.add_argument("--split", default="test", choices=("dev", "test", "all", "dev2"),
                   help="suite: which pairs to run (all = dev and test; dev2 = a second draw of all 12 kinds, dev "
                        "pairs only)")
    g.add_argument("--dev-seeds", type=int, nargs="+", default=None,
                   help="suite: the seeds of the dev pairs (default 100); never one of the reported --seeds")
    g.add_argument("--failure-gammas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0, 8.0, 16.0],
                   help="gamma values of the failure-mode sweep")
    g.add_argument("--failure-n", type=int, default=100, help="target sequences in the failure mode")
    g.add_argument("--jobs", type=int, default=0,
                   help="seeds run in this many processes at once (0 = one per seed, at most the CPU count + 1; "
                        "each process uses --threads threads)")
    g.add_argument("--device", default="cpu")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 2 is ~1.6x faster on an idle 2-core CPU, but several times slower than 1 "
                        "when other jobs share it (OpenMP threads spin while they wait)")
    g.add_argument("--out", type=Path, default=Path("results/markov"), help="output folder (JSON, PNG)")
    g.add_argument("--quick", action="store_true", help="small data, short training, few samples")
    g.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="paper: the paper's architecture, ratio recipe, sampler and budgets in epochs on the paper's "
                        "pair (options given on the command line still win; see docs/GTL.md)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


# The paper's synthetic setup (../shared/GTL_METHOD.md, Experiment 1, and the authors' released scripts): AdaLN
# denoisers of width 256, 4 heads, 4 layers (AdamW 3e-4, batch 256); ratio net and classifiers of width 256, 2 layers
# (Adam 1e-4); the paper's ratio recipe (clean classifier with label smoothing, regression on noised source, 0.1 x the
# noisy classifier on noised target); 20 ancestral steps with every one-token substitution scored; gamma 2 (the
# comparison script's); 30 epochs for every network.
PRESETS = {
    "paper": dict(states=None, source_diag=0.10, target_diag=0.80, source_matrix=None, target_matrix=None,
                  d_model=256, heads=4, layers=4, ratio_layers=2, ratio_ensemble=1, ratio_edges="off", ratio_window=0,
                  batch_size=256, lr=3e-4, finetune_lr=3e-4, ratio_lr=1e-4, epochs=["30"], ratio_loss=["paper"],
                  sampler="ancestral", steps=20, anc_mode="exact", gamma=2.0),
}


# the parts of an --epochs budget, by the first element of a component's key (Context.train_cfg)
PARTS = ("denoiser", "vanilla", "finetune", "ratio", "classifier", "planner")
_PART_OF = {"source denoiser": "denoiser", "finetuned": "finetune", "clean classifier": "classifier",
            "noisy classifier": "classifier"}


def parse_epochs(parser: argparse.ArgumentParser, values: list[str] | None) -> dict[str, float] | None:
    """``--epochs 30 ratio=3`` -> ``{"denoiser": 30.0, ..., "ratio": 3.0}``; a bad value is a usage error."""
    if not values:
        return None
    out: dict[str, float] = {}
    for v in values:
        part, _, num = v.rpartition("=")
        if part and part not in PARTS:
            parser.error(f"argument --epochs: unknown part {part!r} (choose from {', '.join(PARTS)})")
        try:
            e = float(num)
        except ValueError:
            e = -1.0
        if not e > 0 or not math.isfinite(e):
            parser.error(f"argument --epochs: {v!r} is not a positive number of epochs")
        out.update({part: e} if part else dict.fromkeys(PARTS, e))
    missing = [p for p in PARTS if p not in out]
    if missing:
        parser.error(f"argument --epochs: no budget for {', '.join(missing)} (start with one number for all)")
    return out


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """``argv`` parsed; with ``--preset`` its values become the defaults, so that options given explicitly win."""
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
    args.epochs = parse_epochs(parser, args.epochs)
    return args


def apply_quick(args) -> None:
    """--quick: a smoke run of the whole pipeline (about 45 seconds on 2 cores): less data, a tenth of the training, few samples."""
    args.n_source = min(args.n_source, 1000)
    args.samples = min(args.samples, 200)
    for name in ("denoiser_steps", "vanilla_steps", "finetune_steps", "ratio_steps", "classifier_steps",
                 "planner_steps"):
        setattr(args, name, max(10, getattr(args, name) // 10))
    args.epochs = args.epochs and {part: e / 10 for part, e in args.epochs.items()}
    args.seeds = args.seeds[:1]
    args.failure_gammas = args.failure_gammas[:3]


def build_chains(args) -> tuple[mk.MarkovChain, mk.MarkovChain]:
    """The source and target chains of ``args``; a bad matrix file exits with a message naming the file and row."""
    def chain(path, diag):
        if path is None:
            return mk.MarkovChain.sticky(args.states or DEFAULT_STATES, diag)
        try:
            trans = mk.load_matrix(path, args.states)
        except ValueError as e:
            raise SystemExit(f"gtl-markov: error: {e}") from None
        return mk.MarkovChain(torch.full((trans.shape[0],), 1.0 / trans.shape[0], dtype=torch.float64), trans)

    source, target = chain(args.source_matrix, args.source_diag), chain(args.target_matrix, args.target_diag)
    if source.n_states != target.n_states:
        raise SystemExit(f"gtl-markov: error: the source has {source.n_states} states, the target "
                         f"{target.n_states}: they must match")
    return source, target


def is_paper_pair(source: mk.MarkovChain, target: mk.MarkovChain) -> bool:
    """Whether the chains are the paper's (5 states, diagonal 0.10 -> 0.80): only then are its values shown."""
    return (source.n_states == DEFAULT_STATES
            and torch.allclose(source.trans, mk.MarkovChain.sticky(DEFAULT_STATES, 0.10).trans)
            and torch.allclose(target.trans, mk.MarkovChain.sticky(DEFAULT_STATES, 0.80).trans))


# ---------------------------------------------------------------------------------------------------------------------
# One seed
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    source: mk.MarkovChain
    target: mk.MarkovChain
    seed: int
    timings: dict
    budgets: dict = dataclasses.field(default_factory=dict)  # optimizer steps and batch of each component trained

    @property
    def vocab(self) -> int:
        return self.source.n_states

    def trunk(self, layers: int, dropout: float = 0.0, window: int = 0, edges: bool = False) -> TrunkConfig:
        a = self.args
        return TrunkConfig(self.vocab, a.length, a.d_model, a.heads, layers, dropout=dropout, window=window,
                           edges=edges)

    def scorer_trunk(self, n: int) -> TrunkConfig:
        """The trunk of the ratio network and the classifiers for ``n`` target sequences."""
        a = self.args
        return self.trunk(ratio_blocks(a, n), a.dropout, a.ratio_window, ratio_edges(a, n))

    def train_cfg(self, steps: int, part: tuple, *, lr=None, batch=None, weight_decay=0.0,
                  n_data: int | None = None, passes: float = 1.0) -> TrainConfig:
        """Optimizer settings of component ``part`` (e.g. ``("vanilla", n)``); its batches are keyed by it.

        With ``--epochs`` (and ``n_data``, the size of the component's training set) the budget is ``passes x
        --epochs`` passes over that set in batches of at most its size, instead of ``steps``."""
        a = self.args
        batch = batch or a.batch_size
        epochs = getattr(a, "epochs", None)
        if epochs and n_data:
            batch = min(batch, n_data)
            steps = max(1, round(passes * epochs[_PART_OF.get(part[0], part[0])] * math.ceil(n_data / batch)))
        self.budgets[" ".join(map(str, part))] = {"steps": steps, "batch": batch}
        return TrainConfig(steps=steps, batch_size=batch, lr=lr or a.lr, weight_decay=weight_decay,
                           seed=key(self.seed, *part, "train"))

    def model(self, cls, cfg: TrunkConfig, part: tuple):
        """A freshly initialized network, seeded by (seed, part): each component's initialization is the same
        whichever other components a run trains before it."""
        torch.manual_seed(key(self.seed, *part, "init"))
        return cls(cfg).to(self.args.device)

    def timed(self, key: str, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        dt = time.perf_counter() - t0
        self.timings[key] = self.timings.get(key, 0.0) + dt
        if getattr(self.args, "phase_lines", False):
            print(f"seed {self.seed}: {key} done in {dt:.1f} s", file=sys.stderr, flush=True)
        return out


def gamma_schedule(args, gamma: float | None = None):
    if args.gamma_schedule == "piecewise":
        return PiecewiseLinearGamma()
    return ConstantGamma(args.gamma if gamma is None else gamma)


def make_sampler(args, denoiser, ratio=None, planner=None, gamma=None, order=None):
    """The sampler of the chosen family; ``ratio=None`` gives its unguided version (used by the baselines).
    ``order`` defaults to the first ``--order``; without a planner, ``planner`` order falls back to random."""
    mask_id = denoiser.mask_id
    if args.sampler == "ancestral":
        if ratio is None:
            return AncestralSampler(denoiser, mask_id, args.steps, device=args.device)
        return GuidedAncestralSampler(denoiser, ratio, mask_id, args.steps, mode=args.anc_mode, n_ratio=args.n_ratio,
                                      gamma=gamma_schedule(args, gamma), top_k=args.top_k, device=args.device)
    order = order or args.order[0]
    order = "random" if (order == "planner" and planner is None) else order
    return ScheduledSampler(denoiser, mask_id, ratio, planner=planner if order == "planner" else None, order=order,
                            planner_temperature=args.planner_temperature, n_ratio=args.n_ratio,
                            gamma=gamma_schedule(args, gamma), top_k=args.top_k, device=args.device)


def draw(ctx: Context, sampler, key: str):
    """``(x, stats)``: ``args.samples`` sequences of ``sampler``, timed as ``sample {key}``."""
    a = ctx.args
    return ctx.timed(f"sample {key}", sampler, a.samples, a.length, seed=ctx.seed, batch_size=a.sample_batch,
                     progress=not a.no_progress)


def evaluate(ctx: Context, sampler, train_target: torch.Tensor, key: str) -> dict:
    """Samples of ``sampler`` scored against the target chain (:func:`score`)."""
    return score(ctx, draw(ctx, sampler, key), train_target)


def score(ctx: Context, drawn, train_target: torch.Tensor) -> dict:
    """Metrics of drawn samples ``(x, stats)`` against the target chain; ``train_target`` only enters the copy
    rate."""
    a = ctx.args
    x, stats = drawn
    est = mk.estimate_transitions(x, ctx.vocab)
    metrics = mk.transition_metrics(est, ctx.target.trans)
    # longer-range structure: the 2-step transition matrix against trans @ trans
    metrics["mae_2step"] = mk.transition_metrics(mk.estimate_transitions(x, ctx.vocab, lag=2),
                                                 ctx.target.trans @ ctx.target.trans)["mae"]
    # the exact per-token log-likelihood under the target (a transition the target never makes counts as 1e-6)
    metrics["loglik_per_token"] = float(mk.log_likelihood(ctx.target, x, floor=1e-6).mean()) / a.length
    # are the samples draws from the target at all? (uniform under an exact sampler; the suite's oracle check)
    metrics["fit_pvalue"] = mk.fit_test(ctx.target, x)["pvalue"]
    train_set = {tuple(r) for r in train_target.tolist()}
    metrics["copy_rate"] = sum(tuple(r) in train_set for r in x.tolist()) / len(x)
    return {"metrics": metrics, "matrix": est, "sampler": stats.as_dict()}


def new_ratio(ctx: Context, loss: str, n: int, n_source: int, tag=None) -> tuple[SequenceScorer, TrainConfig]:
    """A freshly initialized ratio network for ``loss`` and its training settings, for ``n`` target and ``n_source``
    source sequences; its random draws are keyed by ``tag`` (default: ``n``)."""
    a = ctx.args
    tag = n if tag is None else tag
    ratio = ctx.model(SequenceScorer, ctx.scorer_trunk(n), ("ratio", tag))
    # with --epochs: the conditional loss passes over the target set, the paper's recipe over the source set (its
    # loader cycles the smaller target set alongside), a classifier (the ratio as one, or the recipe's two) over both
    n_data = {"conditional": n, "classifier": n_source + n, "paper": n_source}[loss]
    cfg = ctx.train_cfg(a.ratio_steps, ("ratio", tag), lr=a.ratio_lr, weight_decay=a.ratio_weight_decay,
                        batch=a.ratio_batch if loss == "conditional" else None, n_data=n_data)
    return ratio, cfg


def init_from(trunk, source_trunk) -> None:
    """Copy ``source_trunk``'s weights into ``trunk`` where names and shapes match (embedding, attention, MLP,
    position bias; not the time conditioning, which ``trunk`` lacks)."""
    mine = trunk.state_dict()
    trunk.load_state_dict({k: v for k, v in source_trunk.state_dict().items()
                           if k in mine and mine[k].shape == v.shape}, strict=False)


def train_ratio(ctx: Context, loss: str, denoiser, xs, xt, tag=None, ensemble: bool = True):
    """A ratio network for ``loss`` in ``RATIO_LOSSES``, trained on source ``xs`` and target ``xt``; its random draws
    are keyed by ``tag`` (default: the target size). The conditional loss scores ``args.ratio_candidates``
    candidates per example when the namespace has it (``gtl-language learned``; 0 or absent: all ``V``). With
    ``--ratio-holdout`` the returned network carries what the early stopping chose as ``.selection``. With
    ``B = ratio_members(args, n) > 1`` (conditional loss) a :class:`ScorerEnsemble` of ``B`` networks, member ``j``
    keyed by ``(tag, "bag", j)`` and trained on ``xt`` (``--ratio-ensemble-data bootstrap``: on a resample of it with
    replacement)."""
    a, prog = ctx.args, not ctx.args.no_progress
    n = len(xt)
    tag = n if tag is None else tag
    members = ratio_members(a, n)
    if ensemble and loss == "conditional" and members > 1:
        nets = []
        for j in range(members):
            data = xt
            if getattr(a, "ratio_ensemble_data", "full") == "bootstrap":
                pick = torch.randint(0, n, (n,), generator=torch.Generator().manual_seed(key(ctx.seed, tag, "bag", j)))
                data = xt[pick.to(xt.device)]
            nets.append(train_ratio(ctx, loss, denoiser, xs, data, (tag, "bag", j), ensemble=False))
        return ScorerEnsemble(nets).eval()
    ratio, cfg = new_ratio(ctx, loss, n, len(xs), tag)
    if getattr(a, "ratio_init", "scratch") == "source" and denoiser is not None:
        init_from(ratio.trunk, denoiser.trunk)
    if loss == "conditional":
        holdout = getattr(a, "ratio_holdout", 0.0)
        train, extra = (train_ratio_selected, {"holdout": holdout}) if holdout > 0 else (train_ratio_conditional, {})
        out = ctx.timed(f"ratio {n}", train, ratio, denoiser, xt, cfg, source=xs,
                        n_candidates=getattr(a, "ratio_candidates", 0), classifier_weight=a.classifier_weight,
                        desc=f"ratio[conditional] n={n}", progress=prog, **extra)
        if holdout > 0:
            ratio.selection = out
    elif loss == "classifier":
        ctx.timed(f"ratio {n}", train_ratio_classifier, ratio, xs, xt, cfg, mask_id=ctx.vocab,
                  desc=f"ratio[classifier] n={n}", progress=prog)
    else:
        ccfg, nccfg = (ctx.train_cfg(a.classifier_steps, (name, tag), lr=a.ratio_lr,
                                     weight_decay=a.ratio_weight_decay, n_data=len(xs) + n)
                       for name in ("clean classifier", "noisy classifier"))
        clean = ctx.model(SequenceScorer, ctx.scorer_trunk(n), ("clean classifier", tag))
        noisy = ctx.model(SequenceScorer, ctx.scorer_trunk(n), ("noisy classifier", tag))
        ctx.timed(f"ratio {n}", train_domain_classifier, clean, xs, xt, ccfg, noisy=False, mask_id=ctx.vocab,
                  label_smoothing=0.1, desc=f"clean classifier n={n}", progress=prog)
        ctx.timed(f"ratio {n}", train_domain_classifier, noisy, xs, xt, nccfg, noisy=True, mask_id=ctx.vocab,
                  desc=f"noisy classifier n={n}", progress=prog)
        ctx.timed(f"ratio {n}", train_ratio_paper, ratio, xs, xt, clean, noisy, cfg, mask_id=ctx.vocab,
                  desc=f"ratio[paper] n={n}", progress=prog)
    ratio.eval()
    return ratio


def run_seed(args, source: mk.MarkovChain, target: mk.MarkovChain, seed: int) -> dict:
    """All methods for every n, one seed: ``{n: {method: {"metrics", "matrix", "sampler", ...}}}``."""
    ctx = Context(args, source, target, seed, {})
    prog = not args.no_progress
    xs = draw_source(source, args.n_source, args.length, seed).to(args.device)
    xt_all = draw_target(target, max(args.n_target), args.length, seed).to(args.device)
    heldout = draw_heldout(target, 1000, args.length, seed).to(args.device)

    needs_source = any(m in args.methods for m in ("finetuned", "gtl", "gtl-exact-denoiser", "gtl-exact-ratio"))
    learned_ratio = any(m in args.methods for m in ("gtl", "gtl-exact-denoiser"))
    src_den = None
    if needs_source:
        src_den = ctx.model(Denoiser, ctx.trunk(args.layers), ("source denoiser",))
        ctx.timed("source denoiser", train_denoiser, src_den, xs,
                  ctx.train_cfg(args.denoiser_steps, ("source denoiser",), n_data=len(xs)),
                  desc=f"source denoiser (seed {seed})", progress=prog)
    planner = None
    guided = learned_ratio or "gtl-exact-ratio" in args.methods
    if guided and args.sampler == "scheduled" and "planner" in args.order:
        planner = ctx.model(Planner, ctx.trunk(ratio_blocks(args)), ("planner",))
        ctx.timed("planner", train_planner, planner, src_den, xs,
                  ctx.train_cfg(args.planner_steps, ("planner",), n_data=len(xs)), desc="planner", progress=prog)

    results: dict = {}
    oracle_drawn = None
    for n in sorted(args.n_target, reverse=True):
        xt = xt_all[:n]
        res: dict = {}
        if "vanilla" in args.methods:
            van = ctx.model(Denoiser, ctx.trunk(args.layers), ("vanilla", n))
            ctx.timed(f"vanilla {n}", train_denoiser, van, xt,
                      ctx.train_cfg(args.vanilla_steps, ("vanilla", n), n_data=n), desc=f"vanilla n={n}", progress=prog)
            res["vanilla"] = evaluate(ctx, make_sampler(args, van), xt, f"vanilla {n}")
        if "finetuned" in args.methods:
            ft = copy.deepcopy(src_den)
            ctx.timed(f"finetuned {n}", train_denoiser, ft, xt,
                      ctx.train_cfg(args.finetune_steps, ("finetuned", n), lr=args.finetune_lr, n_data=n,
                                    passes=min(max(len(xs) / n, 1.0), 2.0)), desc=f"fine-tune n={n}",
                      progress=prog)
            res["finetuned"] = evaluate(ctx, make_sampler(args, ft), xt, f"finetuned {n}")
        if learned_ratio:
            orders = args.order if args.sampler == "scheduled" else [None]
            for loss in args.ratio_loss:
                ratio = train_ratio(ctx, loss, src_den, xs, xt)
                diagnostics = {
                    "loss": loss,
                    "heldout_conditional_nll": conditional_nll(ratio, src_den, heldout, seed=key(seed, "heldout nll")),
                    "vs_oracle": mk.ratio_quality(ratio, source, target, heldout.cpu(),
                                                  generator=torch.Generator().manual_seed(key(seed, "ratio quality"))),
                    "params": n_params(ratio),
                }
                if getattr(ratio, "selection", None) is not None:
                    diagnostics["selection"] = dataclasses.asdict(ratio.selection)
                if isinstance(ratio, ScorerEnsemble) and all(hasattr(m, "selection") for m in ratio.members):
                    diagnostics["member_selections"] = [dataclasses.asdict(m.selection) for m in ratio.members]
                tag = f"[{loss}]" if len(args.ratio_loss) > 1 else ""
                for order in orders if "gtl" in args.methods else []:
                    name = "gtl" + tag + (f"/{order}" if len(orders) > 1 else "")
                    r = evaluate(ctx, make_sampler(args, src_den, ratio, planner, order=order), xt, f"{name} {n}")
                    res[name] = r | {"ratio": diagnostics}
                if "gtl-exact-denoiser" in args.methods:
                    name = "gtl-exact-denoiser" + tag
                    r = evaluate(ctx, make_sampler(args, mk.MarkovOracleDenoiser(source), ratio, planner), xt,
                                 f"{name} {n}")
                    res[name] = r | {"ratio": diagnostics}
        if "gtl-exact-ratio" in args.methods:
            r = evaluate(ctx, make_sampler(args, src_den, mk.MarkovOracleRatio(source, target), planner), xt,
                         f"gtl-exact-ratio {n}")
            res["gtl-exact-ratio"] = r
        if "oracle" in args.methods:  # exact parts: the same samples at every n (drawn once, scored per n)
            if oracle_drawn is None:
                oden, orat = mk.MarkovOracleDenoiser(source), mk.MarkovOracleRatio(source, target)
                oracle_drawn = draw(ctx, make_sampler(args, oden, orat), f"oracle {n}")
            res["oracle"] = score(ctx, oracle_drawn, xt)
        results[str(n)] = res
    results["_timings"] = ctx.timings
    results["_budgets"] = ctx.budgets
    if src_den is not None:
        results["_source_denoiser"] = {"params": n_params(src_den),
                                       "heldout_nll_vs_oracle": denoiser_gap(src_den, source, args, seed)}
    return results


def _seed_worker(line: int, args, source, target, seed: int) -> dict:
    torch.set_num_threads(max(1, args.threads))  # a spawned process starts with torch's default thread count
    progress.set_line(line)
    return run_seed(args, source, target, seed)


def run_seeds(args, source: mk.MarkovChain, target: mk.MarkovChain) -> list[dict]:
    """:func:`run_seed` for every seed of ``--seeds``, in ``--jobs`` worker processes when that is above 1 (the
    results do not depend on it: every random choice is seeded by the seed and the component)."""
    jobs = min(args.jobs or (os.cpu_count() or 1) + 1, len(args.seeds))
    if jobs <= 1 or args.device != "cpu":
        return [run_seed(args, source, target, seed) for seed in args.seeds]
    # spawn, not fork: a forked child would inherit the parent's OpenMP and tqdm state
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_seed_worker, i % jobs, args, source, target, seed)
                   for i, seed in enumerate(args.seeds)]
        return [f.result() for f in futures]


@torch.no_grad()
def denoiser_gap(den, chain: mk.MarkovChain, args, seed: int) -> float:
    """Mean KL(exact posterior || denoiser) over masked positions of fresh noised source sequences (nats)."""
    gen = torch.Generator().manual_seed(key(seed, "denoiser gap"))
    x0 = chain.sample(1000, args.length, generator=gen)
    t = torch.rand(1000, generator=gen)
    z = torch.where(torch.rand(x0.shape, generator=gen) < t[:, None], torch.full_like(x0, chain.n_states), x0)
    exact = mk.MarkovOracleDenoiser(chain)(z).double()[..., : chain.n_states]
    learned = den(z.to(args.device), t.to(args.device)).double().cpu()[..., : chain.n_states]
    masked = z == chain.n_states
    kl = (exact.exp() * (exact - learned)).sum(-1)
    return float(kl[masked].mean())


# ---------------------------------------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------------------------------------


def compare(args) -> dict:
    source, target = build_chains(args)
    t0 = time.perf_counter()
    per_seed = run_seeds(args, source, target)
    wall = time.perf_counter() - t0
    runs = [{k: v for k, v in r.items() if not k.startswith("_")} for r in per_seed]
    agg = reporting.aggregate(runs)
    print(f"\nsource diag {float(source.trans.diagonal().mean()):.3f} -> target diag "
          f"{float(target.trans.diagonal().mean()):.3f}; L = {args.length}; {args.n_source} source sequences; "
          f"{args.samples} samples per cell; sampler {args.sampler}"
          + (f"/{','.join(args.order)}" if args.sampler == "scheduled" else f"/{args.steps} steps"))
    paper = reporting.PAPER if is_paper_pair(source, target) else None
    print(reporting.format_table(agg, len(args.seeds), paper))
    for n, methods in runs[0].items():
        shown = set()
        for m, r in methods.items():
            if "ratio" in r and r["ratio"]["loss"] not in shown:
                shown.add(r["ratio"]["loss"])
                q = r["ratio"]["vs_oracle"]
                print(f"  n={n:>5} {m}: held-out guided NLL {r['ratio']['heldout_conditional_nll']:.3f} nats; "
                      f"vs exact ratio: slope {q['slope']:.2f}, R^2 {q['r2']:.2f}, TV {q['tv']:.3f} (seed {args.seeds[0]})"
                      + (f"; kept step {r['ratio']['selection']['step']}" if "selection" in r["ratio"] else ""))
    phases: dict = {}
    for r in per_seed:
        for k, v in r["_timings"].items():
            phase = k.split(" ")[0] if not k.startswith("sample") else "sampling"
            phases[phase] = phases.get(phase, 0.0) + v
    print(f"wall time {wall:.1f} s for {len(args.seeds)} seed(s); by phase: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
    if args.epochs:
        print("budgets (steps x batch): "
              + ", ".join(f"{k} {b['steps']} x {b['batch']}" for k, b in per_seed[0]["_budgets"].items()))
    mats = {m: {n: torch.stack([r[n][m]["matrix"] for r in runs]).mean(0) for n in runs[0]} for m in runs[0][next(iter(runs[0]))]}
    out = {"config": vars(args), "paper": paper, "aggregate": agg, "per_seed": per_seed,
           "wall_s": wall, "target": target.trans, "source": source.trans}
    reporting.write_json(args.out / "markov.json", out)
    reporting.heatmaps(args.out / "markov.png", mats, target.trans,
                       f"Estimated transition matrices (mean over {len(args.seeds)} seed(s))")
    print(f"wrote {args.out / 'markov.json'} and {args.out / 'markov.png'}")
    return out


def failure(args) -> dict:
    """Poor overlap: the target uses a state the source never emits; GTL is swept over gamma.

    The source is the compare-mode source chain padded with one extra state it never visits; the target is a sticky
    chain over all ``S + 1`` states, so about ``1/(S + 1)`` of its tokens are the new state. The source denoiser
    learns to give that state (almost) no probability, and guidance only reweights the denoiser's proposals: with
    top-``S`` candidates the new state is never even scored, and with all candidates it can appear only through an
    extreme ratio. A control pair with full overlap (the compare-mode chains) is swept alongside.
    """
    src_base, tgt_base = build_chains(args)
    s = src_base.n_states + 1
    pairs = {
        "no overlap": (src_base.pad_states(s), mk.MarkovChain.sticky(s, args.target_diag)),
        "control": (src_base, tgt_base),
    }
    n = args.failure_n
    seed = args.seeds[0]
    rows = []
    t0 = time.perf_counter()
    for name, (src, tgt) in pairs.items():
        fargs = copy.copy(args)
        ctx = Context(fargs, src, tgt, seed, {})
        xs = draw_source(src, args.n_source, args.length, seed).to(args.device)
        xt = draw_target(tgt, n, args.length, seed).to(args.device)
        den = ctx.model(Denoiser, ctx.trunk(args.layers), ("source denoiser",))
        train_denoiser(den, xs, ctx.train_cfg(args.denoiser_steps, ("source denoiser",), n_data=len(xs)),
                       desc=f"source denoiser ({name})", progress=not args.no_progress)
        candidate_sets = {"all": ctx.vocab, f"top-{ctx.vocab - 1}": ctx.vocab - 1} if name == "no overlap" else {
            "all": ctx.vocab}
        for loss in args.ratio_loss:
            ratio = train_ratio(ctx, loss, den, xs, xt)
            for cand_name, n_ratio in candidate_sets.items():
                fargs.n_ratio = n_ratio
                for gamma in args.failure_gammas:
                    sampler = make_sampler(fargs, den, ratio, gamma=gamma)
                    x, _ = sampler(args.samples, args.length, seed=seed, batch_size=args.sample_batch)
                    m = mk.transition_metrics(mk.estimate_transitions(x, tgt.n_states), tgt.trans)
                    new = float((x == s - 1).float().mean()) if name == "no overlap" else math.nan
                    rows.append({"pair": name, "ratio_loss": loss, "candidates": cand_name, "gamma": gamma,
                                 **m, "new_state_freq": new})
    wall = time.perf_counter() - t0
    print(f"\nFailure mode: the target uses state {s - 1} (frequency {1 / s:.3f} in the target), which the source "
          f"never emits; n = {n} target sequences, {args.samples} samples per row; control = the compare-mode pair")
    print(f"{'pair':<11} {'ratio':<12} {'candidates':<10} {'gamma':>6} {'diag':>6} {'MAE':>6} {'row KL':>7} "
          f"{'new-state freq':>15}")
    for r in rows:
        print(f"{r['pair']:<11} {r['ratio_loss']:<12} {r['candidates']:<10} {r['gamma']:>6.1f} {r['mean_diag']:>6.3f} "
              f"{r['mae']:>6.3f} {r['row_kl']:>7.3f} {r['new_state_freq']:>15.3f}")
    print(f"wall time {wall:.1f} s")
    out = {"config": vars(args), "rows": rows, "wall_s": wall}
    reporting.write_json(args.out / "failure.json", out)
    series = {}
    for r in rows:
        series.setdefault(f"{r['pair']} [{r['ratio_loss']}, {r['candidates']}]", []).append(r["mae"])
    reporting.line_plot(args.out / "failure.png", args.failure_gammas, series, "gamma", "MAE vs target",
                        "GTL under poor overlap (lower is better)")
    print(f"wrote {args.out / 'failure.json'} and {args.out / 'failure.png'}")
    return out


def run(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` (``None``: the command line), run the chosen mode and return its results (what the JSON
    holds)."""
    args = parse_args(build_parser(), argv)
    if args.seeds is None:
        args.seeds = [0] if args.mode == "suite" else [0, 1, 2]
    if args.mode == "suite":
        from .suite import dev_seeds

        if set(dev_seeds(args)) & set(args.seeds):  # the default dev seeds too, not only --dev-seeds
            raise SystemExit(f"the dev seeds {dev_seeds(args)} (--dev-seeds) must not share a seed with the "
                             f"reported --seeds {args.seeds}")
    if args.quick:
        apply_quick(args)
    # Not a terminal (a log, CI): one line per phase instead of the bars' control codes.
    args.phase_lines = not args.no_progress and not sys.stderr.isatty()
    args.no_progress = args.no_progress or args.phase_lines
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seeds[0])
    if args.mode == "suite":
        from .suite import suite

        return suite(args)
    return failure(args) if args.mode == "failure" else compare(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gtl-markov`` and ``python -m gtl_kernels.experiments.markov``; returns the exit status."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
