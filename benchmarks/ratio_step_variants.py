"""One training step of ``gtl-markov``'s conditional ratio network, with the candidates scored three ways, timed
alternately in one run (docs/PERF.md):

- whole sequences: every substituted sequence through the network;
- local crops (the shortcut until 2026-12-03): the trunk once per sequence and on a ``4 * w * blocks + 1``-token crop
  around the substituted position per candidate;
- changed positions (``SequenceScorer.score_substitutions``): the trunk once per sequence, keeping every block's
  input, and per candidate each block at the positions the substitution changes only.

    python benchmarks/ratio_step_variants.py [STATES]

The ratio network and step of the default run: window 1, 2 blocks, d = 32, L = 20, batch 64, every one of the
``STATES`` (default 6) tokens a candidate; a random source denoiser (its forward is part of the step, as in
training). One torch thread. The variants start from the same weights and draws and are checked to give the same
losses (to float rounding) before timing.
"""

import sys
import time

import torch

from gtl_kernels.gtl.nets import Denoiser, SequenceScorer, TrunkConfig
from gtl_kernels.gtl.samplers import one_token_substitutions
from gtl_kernels.gtl.training import TrainConfig, train_ratio_conditional


class WholeSequences(SequenceScorer):
    """The same network, without a shortcut: the training step builds every substituted sequence."""

    score_substitutions = None


class LocalCrops(SequenceScorer):
    """The same network, candidates scored on crops: a substitution at ``pos`` changes the final features within
    ``r = w * blocks`` of it, and those depend on the tokens within ``2r``."""

    def _score_substitutions_locally(self, z, seq, pos, cand):
        m, k = cand.shape
        length, r = z.shape[1], self.cfg.window * self.cfg.n_layers
        crop = 4 * r + 1
        feats = self.trunk(z)  # [B, L, d]
        changed = pos.unsqueeze(1) + torch.arange(-r, r + 1)  # [M, 2r + 1]
        inside = (changed >= 0) & (changed < length)
        kept = feats.sum(1)[seq] - (feats[seq.unsqueeze(1), changed.clamp(0, length - 1)]
                                    * inside.unsqueeze(-1)).sum(1)  # [M, d]
        start = (pos - 2 * r).clamp(0, length - crop)
        tokens = z[seq.unsqueeze(1), start.unsqueeze(1) + torch.arange(crop)]  # [M, crop]
        tokens = one_token_substitutions(tokens, pos - start, cand)  # [M, K, crop]
        crop_feats = self.trunk(tokens.view(m * k, crop)).view(m, k, crop, -1)
        at = (changed - start.unsqueeze(1)).clamp(0, crop - 1)
        picked = crop_feats.gather(2, at.view(m, 1, -1, 1).expand(m, k, at.shape[1], crop_feats.shape[-1]))
        return self._score((kept.unsqueeze(1) + (picked * inside.view(m, 1, -1, 1)).sum(2)) / length)


VARIANTS = {"whole sequences": WholeSequences, "local crops": LocalCrops, "changed positions": SequenceScorer}


def main(states: int = 6, length: int = 20, steps: int = 40, rounds: int = 5) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TrunkConfig(states, length, 32, 4, 2, window=1)
    den = Denoiser(cfg).eval()
    target = torch.randint(0, states, (100, length))
    init = SequenceScorer(cfg).state_dict()

    def run(cls, n):
        model = cls(cfg)
        model.load_state_dict(init)
        t0 = time.perf_counter()
        losses = train_ratio_conditional(model, den, target, TrainConfig(steps=n, batch_size=64, lr=3e-3),
                                         progress=False)
        return (time.perf_counter() - t0) / n, losses

    _, want = run(WholeSequences, 5)
    for cls in VARIANTS.values():
        got = run(cls, 5)[1]
        assert max(abs(x - y) for x, y in zip(got, want)) < 1e-4, (cls.__name__, got, want)
    times = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, cls in VARIANTS.items():
            times[name].append(run(cls, steps)[0])
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    for k, v in med.items():
        print(f"V = {states}: {k:<17} median {v:6.1f} ms per step ({v / med['whole sequences']:.2f}x whole sequences)")


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1:2]))
