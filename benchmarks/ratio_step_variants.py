"""One training step of ``gtl-markov``'s conditional ratio network, with the candidates scored on whole sequences
and on local crops (``SequenceScorer.score_substitutions``), timed alternately in one run (docs/PERF.md).

    python benchmarks/ratio_step_variants.py [STATES]

The ratio network and step of the default run: window 1, 2 blocks, d = 32, L = 20, batch 64, every one of the
``STATES`` (default 6) tokens a candidate; a random source denoiser (its forward is part of the step, as in
training). One torch thread. Both variants start from the same weights and draws and are checked to give the same
losses (to float rounding) before timing.
"""

import sys
import time

import torch

from gtl_kernels.gtl.nets import Denoiser, SequenceScorer, TrunkConfig
from gtl_kernels.gtl.training import TrainConfig, train_ratio_conditional


class WholeSequences(SequenceScorer):
    """The same network, without the crop shortcut: the training step builds every substituted sequence."""

    score_substitutions = None


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

    _, a = run(SequenceScorer, 5)
    _, b = run(WholeSequences, 5)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    times = {"whole sequences": [], "local crops": []}
    for _ in range(rounds):
        times["whole sequences"].append(run(WholeSequences, steps)[0])
        times["local crops"].append(run(SequenceScorer, steps)[0])
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    for k, v in med.items():
        print(f"V = {states}: {k:<16} median {v:6.1f} ms per step")
    print(f"crops / whole sequences: {med['local crops'] / med['whole sequences']:.2f}")


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1:2]))
