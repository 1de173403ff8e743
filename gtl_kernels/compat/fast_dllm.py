"""Drop-in for Fast-dLLM's parallel decoding of LLaDA (``llada/generate.py``): ``generate``,
``get_transfer_index`` (fixed count or ``threshold``) and ``get_transfer_index_dynamic`` (``factor``).

Same arguments and meaning as Fast-dLLM's, on the ``gtl_kernels`` ops (see :mod:`gtl_kernels.compat.llada` for how
a step reads only the candidate rows and draws exactly):

- fixed count (``threshold=None``): the ``num_transfer_tokens[b]`` most confident candidates;
- ``threshold``: the most confident candidate always, and every other one whose confidence is ``>= threshold``;
- ``factor``: with the candidates' confidences sorted, ``c_0 >= c_1 >= ...`` (``n`` of them), ``t`` = the first
  ``k >= 1`` with ``c_k < 1 - factor / (k + 2)`` (``n - 1`` if none); the top ``t`` are revealed, all ``n`` when
  ``t = n - 1`` (as in the original, where the last candidate is revealed even if it fails its threshold).

The KV-cache variants (``generate_with_prefix_cache``, ``generate_with_dual_cache``) need the model's cache
interface and are not re-implemented; they call ``get_transfer_index`` / ``get_transfer_index_dynamic`` with the
same arguments, so these two drop-ins replace their sampling step (``docs/MIGRATING.md``).
Confidence is the untempered probability of the drawn token in float32 (the original: float64).
"""

from __future__ import annotations

import numbers

import torch

from .. import ops
from .llada import (
    MASK_ID,
    REMASKING,
    _nonneg,
    candidate_draws,
    check_schedule,
    check_token_ids,
    get_num_transfer_tokens,
    model_logits,
)
from ._common import sequence_seeds

__all__ = ["generate", "get_transfer_index", "get_transfer_index_dynamic", "get_num_transfer_tokens"]


def _check_step_inputs(logits, mask_index, x):
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError("logits must be a float tensor [B, L, V]")
    lead = logits.shape[:2]
    if not isinstance(x, torch.Tensor) or x.dtype != torch.int64 or x.shape != lead:
        raise ValueError(f"x must be an int64 tensor of the logits' leading shape {tuple(lead)}")
    if not isinstance(mask_index, torch.Tensor) or mask_index.dtype != torch.bool or mask_index.shape != lead:
        raise ValueError(f"mask_index must be a bool tensor of the logits' leading shape {tuple(lead)}")


def _draws(logits, temperature, remasking, mask_index, x, seeds, generator, offset):
    """Candidates, the full ``x0`` (x off the candidates) and float64 confidence ``[B, L]`` (-inf off them)."""
    _check_step_inputs(logits, mask_index, x)
    temperature = _nonneg("temperature", temperature)
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    cand_b, cand_l = mask_index.nonzero(as_tuple=True)
    x0 = x.clone()
    conf_full = torch.full(x.shape, -torch.inf, dtype=torch.float64, device=x.device)
    if cand_b.numel():
        seq = sequence_seeds(x.shape[0], seeds, generator, x.device)
        keys = ops.derive_keys(seq[cand_b], cand_l)
        x0_c, conf = candidate_draws(
            logits, None, cand_b, cand_l, keys, offset, temperature=temperature, remasking=remasking
        )
        x0[cand_b, cand_l] = x0_c
        conf_full[cand_b, cand_l] = conf.double()
    return x0, conf_full


def get_transfer_index(
    logits,
    temperature,
    remasking,
    mask_index,
    x,
    num_transfer_tokens,
    threshold=None,
    *,
    seeds=None,
    generator=None,
    offset=0,
):
    """Which candidates to reveal this step, and with which tokens.

    Args:
        logits: float ``[B, L, V]``; read at the candidate rows only. mask_index: bool ``[B, L]`` candidates.
        x: int64 ``[B, L]``. num_transfer_tokens: int64 ``[B]`` (or ``[B, 1]``) count per sequence; ignored
            with ``threshold``. threshold: reveal every candidate at or above it (and always the most confident).
        seeds / generator, offset: reproducible draws (per-sequence seeds, and the step counter).
    Returns:
        (int64 ``x0 [B, L]``: the draw at candidates, ``x`` elsewhere; bool ``transfer_index [B, L]``).
    """
    x0, conf = _draws(logits, temperature, remasking, mask_index, x, seeds, generator, offset)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise ValueError(f"threshold must be a number or None, got {threshold!r}")
        transfer = (conf >= threshold) & mask_index
        has_any = mask_index.any(dim=1)
        rows = torch.arange(x.shape[0], device=x.device)[has_any]
        transfer[rows, conf.argmax(dim=1)[has_any]] = True
        return x0, transfer
    counts = torch.as_tensor(num_transfer_tokens, device=x.device).reshape(-1).to(torch.int64)
    if counts.shape != (x.shape[0],):
        raise ValueError(f"num_transfer_tokens must hold one count per sequence ([{x.shape[0]}])")
    if bool((counts > mask_index.sum(dim=1)).any()) or bool((counts < 0).any()):
        raise ValueError("num_transfer_tokens must be between 0 and the number of candidates of each sequence")
    return x0, _top(conf, counts)


def _top(conf, counts):
    """bool ``[B, L]``: the ``counts[b]`` highest ``conf`` positions of each row."""
    transfer = torch.zeros(conf.shape, dtype=torch.bool, device=conf.device)
    k_max = int(counts.max()) if counts.numel() else 0
    if k_max:
        order = torch.topk(conf, k_max, dim=1).indices
        keep = torch.arange(k_max, device=conf.device) < counts.unsqueeze(-1)
        transfer.scatter_(1, order, keep)
    return transfer


def get_transfer_index_dynamic(
    logits,
    temperature,
    remasking,
    mask_index,
    x,
    num_transfer_tokens=None,
    factor=1,
    *,
    seeds=None,
    generator=None,
    offset=0,
):
    """As :func:`get_transfer_index`, the count per sequence set by the ``factor`` rule (module docstring);
    ``num_transfer_tokens`` is unused, as in the original."""
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
        raise ValueError(f"factor must be a number, got {factor!r}")
    x0, conf = _draws(logits, temperature, remasking, mask_index, x, seeds, generator, offset)
    n = mask_index.sum(dim=1)
    ranked = torch.sort(conf, dim=1, descending=True).values
    k = torch.arange(conf.shape[1], device=conf.device)
    thresholds = torch.where(k == 0, -1.0, 1.0 - factor / (k + 2.0).double())
    fails = (ranked < thresholds) & (k < n.unsqueeze(-1))
    first_fail = torch.where(fails.any(dim=1), fails.to(torch.int8).argmax(dim=1), n - 1)
    counts = torch.where((first_fail == 0) | (first_fail == n - 1), first_fail + 1, first_fail)
    return x0, _top(conf, torch.where(n > 0, counts, 0))


@torch.no_grad()
def generate(
    model,
    prompt,
    steps=128,
    gen_length=128,
    block_length=128,
    temperature=0.0,
    remasking="low_confidence",
    mask_id=MASK_ID,
    threshold=None,
    factor=None,
    step_callback=None,
    *,
    seeds=None,
    generator=None,
    max_steps_per_block=None,
):
    """Fast-dLLM's ``generate`` (no KV cache) on the fused ops.

    Args:
        model: callable ``model(x)`` returning ``.logits`` or a tensor ``[B, L, V]``.
        prompt: int64 ``[B, L_prompt]``; steps, gen_length, block_length, temperature, remasking, mask_id,
            threshold, factor, step_callback: as in Fast-dLLM.
        seeds / generator: reproducible draws (int or int64 ``[B]``; or a ``torch.Generator``).
        max_steps_per_block: a block that still holds masks after this many steps raises ``RuntimeError`` (default
            ``steps // num_blocks`` for the fixed count, ``16 * block_length`` otherwise), where the original would
            index past its schedule or loop for ever (a model that keeps predicting ``mask_id``).
    Returns:
        (int64 ``[B, L_prompt + gen_length]``, number of model calls).
    """
    num_blocks, steps_per_block = check_schedule(prompt, steps, gen_length, block_length)
    seq = sequence_seeds(prompt.shape[0], seeds, generator, prompt.device)
    if max_steps_per_block is None:
        max_steps_per_block = steps_per_block if threshold is None and factor is None else 16 * block_length
    batch, prompt_len = prompt.shape
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.int64, device=prompt.device)
    x[:, :prompt_len] = prompt
    nfe = 0
    for block in range(num_blocks):
        start, end = prompt_len + block * block_length, prompt_len + (block + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        for i in range(max_steps_per_block):
            logits = model_logits(model, x, batch)
            if nfe == 0:
                check_token_ids(logits.shape[-1], mask_id)
            candidates = x == mask_id
            candidates[:, end:] = False
            if factor is not None:
                x0, transfer = get_transfer_index_dynamic(
                    logits, temperature, remasking, candidates, x, None, factor, seeds=seq, offset=nfe
                )
            else:
                count = num_transfer[:, i] if threshold is None else None
                x0, transfer = get_transfer_index(
                    logits, temperature, remasking, candidates, x, count, threshold, seeds=seq, offset=nfe
                )
            x[transfer] = x0[transfer]
            if callable(step_callback):
                step_callback(nfe)
            nfe += 1
            if not (x[:, start:end] == mask_id).any():
                break
        else:
            raise RuntimeError(f"block {block} still holds masks after {max_steps_per_block} steps")
    return x, nfe
