"""A one-minute look at the kernels: guided sampling from a small distribution, expected vs observed frequencies.

    python -m gtl_kernels.demo [--backend auto] [--draws 200000]
"""

import argparse

import torch

import gtl_kernels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--draws", type=int, default=200_000)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args(argv)

    tokens = ["the", "cat", "dog", "sat", "ran", "on", "mat", "<mask>"]
    mask_id = len(tokens) - 1
    logits = torch.tensor([[2.0, 1.5, 1.4, 0.5, 0.4, 0.1, -1.0, 0.0]])
    bias = torch.tensor([[-2.0, 0.0, 1.5, 0.0, 0.5, 0.0, 3.0, 0.0]])  # a log density ratio favouring "dog", "mat"
    n = args.draws
    x_t = torch.full((n,), mask_id)
    out = gtl_kernels.masked_transition(
        x_t,
        logits.expand(n, -1),
        bias.expand(n, -1),
        gamma=args.gamma,
        temperature=args.temperature,
        stay_prob=0.25,
        mask_id=mask_id,
        seeds=torch.arange(n),
        backend=args.backend,
    )
    guided = (logits + args.gamma * bias) / args.temperature
    guided[0, mask_id] = -float("inf")
    expected = 0.75 * torch.softmax(guided.double(), -1)[0]
    expected[mask_id] = 0.25
    observed = torch.bincount(out, minlength=len(tokens)).double() / n
    print(f"masked_transition: {n} masked positions, stay_prob 0.25, gamma {args.gamma}, T {args.temperature}")
    print(f"backends: {', '.join(k for k, v in gtl_kernels.available_backends().items() if v.available)}")
    print(f"{'token':>8} {'logit':>6} {'bias':>6} {'expected':>9} {'observed':>9} {'z-score':>8}")
    for i, name in enumerate(tokens):
        p = expected[i].item()
        z = (observed[i].item() - p) / max((p * (1 - p) / n) ** 0.5, 1e-12)
        print(f"{name:>8} {logits[0, i].item():6.2f} {bias[0, i].item():6.2f} {p:9.5f} {observed[i].item():9.5f} {z:8.2f}")


if __name__ == "__main__":
    main()
