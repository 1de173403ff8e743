"""Fast-dLLM's parallel decoding for LLaDA (``llada/generate.py`` of the Fast-dLLM release), in plain PyTorch.

Written from the published semantics, formula for formula:

- ``get_transfer_index``: ``x0`` = argmax of LLaDA's Gumbel scores (float64 ``[B, L, V]`` at temperature > 0),
  confidence = float64 ``softmax(logits)`` at ``x0`` (or a uniform for ``"random"``), ``-inf`` off the candidates
  (``mask_index``). Without ``threshold``: the ``num_transfer_tokens[b]`` most confident candidates. With it: all
  candidates sorted by confidence; the first is always revealed, each later one only if its confidence is
  ``>= threshold``.
- ``get_transfer_index_dynamic`` (``factor``): sorted confidences ``c_0 >= c_1 >= ...`` of the ``n`` candidates
  against thresholds ``-1, 1 - factor/3, 1 - factor/4, ..., 1 - factor/(n+1)``; ``t`` is the first index whose
  confidence is below its threshold (``n - 1`` if none); the top ``t`` are revealed, except that ``t = n - 1``
  (the last index failing, or none) reveals all ``n`` and ``n = 1`` reveals the one.
- ``generate``: LLaDA's blocks; within a block, steps until the block has no mask left (``nfe`` counts model calls);
  candidates are the masked positions before the end of the current block.

Deviation, stated: a sequence with no candidate left (a batch whose rows finish at different steps) reveals nothing
in the factor rule, where the original indexes an empty list.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from . import CompatCase
from .llada import MASK_ID, add_gumbel_noise, get_num_transfer_tokens


def _confidence(logits, temperature, remasking, mask_index, x, generator):
    x0 = torch.argmax(add_gumbel_noise(logits, temperature, generator), dim=-1)
    if remasking == "low_confidence":
        p = F.softmax(logits.to(torch.float64), dim=-1)
        x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
    elif remasking == "random":
        x0_p = torch.rand((x0.shape[0], x0.shape[1]), device=x0.device, generator=generator)
    else:
        raise NotImplementedError(remasking)
    return torch.where(mask_index, x0, x), torch.where(mask_index, x0_p, -np.inf)


def get_transfer_index(
    logits, temperature, remasking, mask_index, x, num_transfer_tokens, threshold=None, *, generator=None
):
    """logits ``[B, L, V]``, bool ``mask_index [B, L]``, int64 ``x [B, L]``, ``num_transfer_tokens`` int64 ``[B]``
    (ignored with ``threshold``) -> (int64 ``x0 [B, L]``, bool ``transfer_index [B, L]``)."""
    x0, confidence = _confidence(logits, temperature, remasking, mask_index, x, generator)
    transfer_index = torch.zeros_like(x0, dtype=torch.bool, device=x0.device)
    if threshold is not None:
        num_transfer_tokens = mask_index.sum(dim=1, keepdim=True)
    for j in range(confidence.shape[0]):
        _, select_index = torch.topk(confidence[j], k=int(num_transfer_tokens[j]))
        transfer_index[j, select_index] = True
        if threshold is not None:
            for k in range(1, int(num_transfer_tokens[j])):
                if confidence[j, select_index[k]] < threshold:
                    transfer_index[j, select_index[k]] = False
    return x0, transfer_index


def get_transfer_index_dynamic(logits, temperature, remasking, mask_index, x, num_transfer_tokens, factor=1, *,
                               generator=None):
    """As :func:`get_transfer_index`, with the factor rule deciding how many to reveal."""
    x0, confidence = _confidence(logits, temperature, remasking, mask_index, x, generator)
    transfer_index = torch.zeros_like(x0, dtype=torch.bool, device=x0.device)
    num_transfer_tokens = mask_index.sum(dim=1, keepdim=True)
    for j in range(confidence.shape[0]):
        n = int(num_transfer_tokens[j])
        if n == 0:
            continue
        threshs = [1 - factor / (k + 1) for k in range(1, n + 1)]
        threshs[0] = -1
        sorted_conf = torch.sort(confidence[j][mask_index[j]], dim=-1, descending=True)[0]
        for top_i in range(n):
            if sorted_conf[top_i] < threshs[top_i]:
                break
        if top_i == 0 or top_i == n - 1:
            top_i += 1
        _, select_index = torch.topk(confidence[j], k=top_i)
        transfer_index[j, select_index] = True
    return x0, transfer_index


@torch.no_grad()
def generate(model, prompt, steps=128, gen_length=128, block_length=128, temperature=0.0,
             remasking="low_confidence", mask_id=MASK_ID, threshold=None, factor=None, step_callback=None, *,
             generator=None):
    """Fast-dLLM's ``generate`` (no cache): int64 ``prompt [B, Lp]`` -> (int64 ``[B, Lp + gen_length]``, nfe)."""
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, : prompt.shape[1]] = prompt.clone()
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps_per_block = steps // num_blocks
    nfe = step_idx = 0
    for num_block in range(num_blocks):
        start = prompt.shape[1] + num_block * block_length
        end = start + block_length
        num_transfer_tokens = get_num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        i = 0
        while True:
            nfe += 1
            mask_index = x == mask_id
            out = model(x)
            logits = out.logits if hasattr(out, "logits") else out
            mask_index[:, end:] = 0
            if factor is None:
                count = num_transfer_tokens[:, i] if threshold is None else None
                x0, transfer_index = get_transfer_index(
                    logits, temperature, remasking, mask_index, x, count, threshold, generator=generator
                )
            else:
                x0, transfer_index = get_transfer_index_dynamic(
                    logits, temperature, remasking, mask_index, x, None, factor, generator=generator
                )
            x[transfer_index] = x0[transfer_index]
            if callable(step_callback):
                step_callback(step_idx)
            step_idx += 1
            i += 1
            if (x[:, start:end] == mask_id).sum() == 0:
                break
    return x, nfe


def bench_cases(quick: bool, device="cpu") -> list[CompatCase]:
    """One Fast-dLLM step outside the model, the same tensors to both sides.

    No-cache decoding (``generate``): logits of the whole sequence, ``B * L = 1024`` (prompt 512 + gen 512,
    V = 126464; quick: B = 2, 16 + 16, V = 1000), candidates = the first block (32) — threshold 0.9 at temperature
    0 and 1, and the factor rule (1.0) at temperature 0. Dual-cache decoding passes only the block's logits: one
    case with ``[B = 32, block = 32]`` (quick: ``[4, 8]``), every row a candidate, so no rows are skipped.
    """
    from ...compat import fast_dllm as dropin
    from .llada import _step_inputs

    batch, prompt_len, gen_len, vocab = (2, 16, 16, 1000) if quick else (1, 512, 512, 126464)
    block = 8 if quick else 32
    cache_batch = 4 if quick else 32
    variants = [("threshold=0.9", 0.0, 0.9, None, False), ("threshold=0.9", 1.0, 0.9, None, False),
                ("factor=1", 0.0, None, 1.0, False), ("threshold=0.9 dual-cache", 0.0, 0.9, None, True)]
    cases = []
    for label, temperature, threshold, factor, cached in variants:
        def make(cached=cached):
            if cached:  # only the block's logits: every position a candidate
                d = _step_inputs(cache_batch, 0, block, vocab, block, block, False, device=device)
            else:
                d = _step_inputs(batch, prompt_len, gen_len, vocab, block, block, False, device=device)
            d["mask_index"] = d["x"] == d["mask_id"]
            d["mask_index"][:, d["block_end"]:] = False
            return d

        def run(impl, d, t=temperature, th=threshold, f=factor):
            if f is not None:
                return impl.get_transfer_index_dynamic(d["logits"], t, "low_confidence", d["mask_index"], d["x"],
                                                       None, f)
            return impl.get_transfer_index(d["logits"], t, "low_confidence", d["mask_index"], d["x"], None, th)

        n_rows = cache_batch * block if cached else batch * (prompt_len + gen_len)
        temps = "2 (float64 copy, float64 softmax)" if temperature == 0 else (
            "9 (float64 copy, rand, log, neg, pow, exp, div; float64 copy, float64 softmax)")
        cases.append(CompatCase(
            codebase="fast_dllm",
            name=f"step {label} B*L={n_rows} V={vocab} T={temperature:g}",
            make_inputs=make,
            original=functools.partial(run, _Original),
            dropin=functools.partial(run, dropin),
            floor=lambda d: torch.amax(d["logits"], -1),
            logits_bytes=4 * n_rows * vocab,
            temporaries=temps,
        ))
    return cases


class _Original:
    """This module's two step functions under the drop-in's names, for :func:`bench_cases`."""

    get_transfer_index = staticmethod(get_transfer_index)
    get_transfer_index_dynamic = staticmethod(get_transfer_index_dynamic)
