"""Generate with a masked-diffusion language model, LLaDA-style, with the original sampler and with the drop-in.

The model is a small DiT-style transformer with random weights (token and position embeddings, pre-LN blocks with
adaLN conditioning on the masked fraction, an output layer over V = 30522 tokens, L = 256): what is measured is
the sampler around it, not the text. Both samplers run the same model on the same prompt, one after the other:

    original  the LLaDA sampler's formulas in plain PyTorch (``gtl_kernels.bench.originals.llada.generate``)
    drop-in   ``gtl_kernels.compat.llada.generate`` (the same arguments)

For each it prints generated tokens per second and the share of the time spent outside the model (sampling,
confidence, bookkeeping). At ``--temperature 0`` both must produce the same tokens, and the script says whether
they do. Run ``python examples/diffusion_lm.py --help`` for the sizes; ``make example`` runs the defaults.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from gtl_kernels.bench.originals import llada as original
from gtl_kernels.compat import llada as dropin


class Block(nn.Module):
    """Pre-LN transformer block; adaLN: the conditioning vector sets each norm's shift and scale and gates both
    residual branches."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.ada = nn.Linear(dim, 6 * dim)

    def forward(self, h, cond, key_padding_mask):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond).unsqueeze(1).chunk(6, dim=-1)
        a = self.norm1(h) * (1 + scale1) + shift1
        h = h + gate1 * self.attn(a, a, a, key_padding_mask=key_padding_mask, need_weights=False)[0]
        m = self.norm2(h) * (1 + scale2) + shift2
        return h + gate2 * self.mlp(m)


class DiffusionLM(nn.Module):
    """``model(x, attention_mask=None) -> logits [B, L, V]``; conditioned on the masked fraction of each sequence."""

    def __init__(self, vocab: int, length: int, dim: int, layers: int, heads: int, mask_id: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.mask_id = mask_id
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Parameter(torch.randn(length, dim) * 0.02)
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm, self.out = nn.LayerNorm(dim), nn.Linear(dim, vocab)
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10_000.0) * torch.arange(half) / half))

    def forward(self, x, attention_mask=None):
        t = (x == self.mask_id).float().mean(1, keepdim=True)
        cond = self.time(torch.cat([torch.sin(t * 1000 * self.freqs), torch.cos(t * 1000 * self.freqs)], -1))
        h = self.tok(x) + self.pos[: x.shape[1]]
        padding = None if attention_mask is None else attention_mask == 0
        for block in self.blocks:
            h = block(h, cond, padding)
        return self.out(self.norm(h)) * 4.0  # a trained model's spread of logits


class Timed:
    """Wraps the model and adds up the time spent inside it."""

    def __init__(self, model):
        self.model, self.seconds, self.calls = model, 0.0, 0

    def __call__(self, x, attention_mask=None):
        start = time.perf_counter()
        out = self.model(x, attention_mask=attention_mask)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def run(name, generate, model, prompt, args, **extra):
    timed = Timed(model)
    start = time.perf_counter()
    out = generate(timed, prompt, steps=args.steps, gen_length=args.gen_length, block_length=args.block_length,
                   temperature=args.temperature, cfg_scale=args.cfg_scale, mask_id=args.mask_id, **extra)
    total = time.perf_counter() - start
    outside = total - timed.seconds
    tokens = prompt.shape[0] * args.gen_length
    print(f"{name:9s} {tokens / total:8.1f} tokens/s   {total:6.2f} s for {timed.calls} steps   "
          f"outside the model: {outside / total:6.1%} ({1e3 * outside / timed.calls:.2f} ms per step)")
    return out, outside / total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--length", type=int, default=256, help="prompt + generated tokens")
    p.add_argument("--gen-length", type=int, default=128)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--cfg-scale", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.mask_id = args.vocab - 1  # the last id plays [MASK]
    model = DiffusionLM(args.vocab, args.length, args.dim, args.layers, args.heads, args.mask_id).eval()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, args.mask_id, (args.batch, args.length - args.gen_length), generator=g)
    print(f"model: V={args.vocab} L={args.length} dim={args.dim} layers={args.layers}, random weights; "
          f"batch {args.batch}, {args.gen_length} tokens in blocks of {args.block_length}, {args.steps} steps, "
          f"temperature {args.temperature:g}, cfg {args.cfg_scale:g}, {torch.get_num_threads()} threads")
    with torch.no_grad():
        ours, ours_share = run("drop-in", dropin.generate, model, prompt, args, seeds=0)
        theirs, theirs_share = run("original", original.generate, model, prompt, args,
                                   generator=torch.Generator().manual_seed(0))
    if args.temperature == 0:
        print(f"identical tokens (greedy): {'yes' if torch.equal(ours, theirs) else 'NO'}")
    print(f"time outside the model, drop-in: {ours_share:.1%} (goal: under 5%); original: {theirs_share:.1%}")
    return ours, theirs


if __name__ == "__main__":
    main()
