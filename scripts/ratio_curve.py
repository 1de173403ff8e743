"""Held-out guided NLL of the conditional ratio network during its training, against the exact ratio's, on one
chain pair of the suite (docs/GTL.md, "The ratio's budget re-chosen").

    python scripts/ratio_curve.py PAIR N[,N...] [gtl-markov training flags]
    python scripts/ratio_curve.py "banded->sparse" 20,1000

Trains the source denoiser and, per target size N, the ratio network exactly as `gtl-markov suite` does on a dev
pair (dev seed, keyed draws, the flags' budgets), and prints ``step:held-out NLL/training-set NLL`` twelve times
during training: a curve still falling at the end means an under-trained ratio, a held-out NLL rising while the
training one falls means it fits the noise of its N sequences.
"""

import sys

import torch

from gtl_kernels.experiments import markov as M
from gtl_kernels.experiments import suite as S
from gtl_kernels.gtl import chains as mk
from gtl_kernels.gtl.nets import Denoiser
from gtl_kernels.gtl.training import conditional_nll, train_denoiser, train_ratio_conditional


def main(argv: list[str]) -> None:
    name, sizes, flags = argv[0], [int(v) for v in argv[1].split(",")], argv[2:]
    pair = next((p for p in S.family() if p["name"] == name), None)
    if pair is None:
        raise SystemExit(f"no pair {name!r}; pairs: {', '.join(p['name'] for p in S.family())}")
    torch.set_num_threads(1)
    args = M.parse_args(M.build_parser(), ["suite", "--no-progress"] + flags)
    seed = S.DEV_SEEDS[0]
    ctx = M.Context(args, pair["source"], pair["target"], seed, {})
    xs = M.draw_source(pair["source"], args.n_source, args.length, seed)
    xt_all = M.draw_target(pair["target"], max(sizes), args.length, seed)
    held = M.draw_heldout(pair["target"], 1000, args.length, seed)  # the curve uses its first 300
    den = ctx.model(Denoiser, ctx.trunk(args.layers), ("source denoiser",))
    train_denoiser(den, xs, ctx.train_cfg(args.denoiser_steps, ("source denoiser",), n_data=len(xs)), progress=False)
    k = M.key(seed, "heldout nll")
    exact = conditional_nll(mk.MarkovOracleRatio(pair["source"], pair["target"]), den, held, seed=k)
    none = conditional_nll(lambda z: torch.zeros(z.shape[0]), den, held, seed=k)
    print(f"{name}: held-out guided NLL with the exact ratio {exact:.4f}, with no guidance {none:.4f}")
    for n in sizes:
        xt = xt_all[:n]
        ratio, cfg = M.new_ratio(ctx, "conditional", n, len(xs))
        curve = []

        def record(step: int) -> None:
            if step % max(1, cfg.steps // 12) == 0 or step == cfg.steps:
                curve.append(f"{step}:{conditional_nll(ratio, den, held[:300], seed=k):.4f}/"
                             f"{conditional_nll(ratio, den, xt, seed=k):.4f}")

        train_ratio_conditional(ratio, den, xt, cfg, progress=False, callback=record)
        print(f"n={n} " + " ".join(curve), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
