"""LLaDA's semi-autoregressive sampler (``generate.py`` of the LLaDA release), rendered in plain PyTorch.

Written from the published semantics, kept formula for formula so that its costs are the original's:

- ``get_num_transfer_tokens``: a block's masked count split evenly over its steps, the remainder one each to the
  first steps;
- ``add_gumbel_noise``: at ``temperature > 0``, ``exp(logits) / (-log U) ** temperature`` in float64 over the whole
  ``[B, L, V]`` tensor (its argmax is a draw from ``softmax(logits / temperature)``); at 0 the logits themselves;
- per step: logits (CFG: ``un + (cfg_scale + 1) * (cond - un)``, the prompt masked in the unconditional pass), the
  EOS column set to ``-inf`` in place when ``logits_eos_inf``; ``x0 = argmax`` of the noisy scores; with
  ``confidence_eos_eot_inf`` the original assigns ``-inf`` to the noisy scores' EOS column and to the logits' EOT
  column (a chained assignment), so the confidence softmax loses EOT always and EOS too at temperature 0, where the
  noisy scores *are* the logits; confidence = untempered ``softmax(logits)`` at ``x0`` (``"low_confidence"``) or a
  uniform (``"random"``), ``-inf`` after the current block and at unmasked positions; the ``num_transfer[b]`` most
  confident positions of each sequence take ``x0``.

``eos_id`` / ``eot_id`` default to the original's hard-coded ids (126081 / 126348); they are keywords here so the
rendering runs on small test vocabularies. ``generator`` feeds ``torch.rand`` (the original uses the global RNG).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import CompatCase

EOS_ID, EOT_ID, MASK_ID = 126081, 126348, 126336


def get_num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """bool ``[B, block]`` masked positions -> int64 ``[B, steps]`` tokens to reveal per step."""
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    num_transfer_tokens = torch.zeros(mask_num.size(0), steps, device=mask_index.device, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        num_transfer_tokens[i, : remainder[i]] += 1
    return num_transfer_tokens


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """``[B, L, V]`` -> float64 ``[B, L, V]`` noisy scores (the logits themselves at temperature 0)."""
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    gumbel_noise = (-torch.log(noise)) ** temperature
    return logits.exp() / gumbel_noise


def step(
    x: torch.Tensor,
    logits: torch.Tensor,
    un_logits: torch.Tensor | None = None,
    *,
    block_end: int,
    num_transfer: torch.Tensor,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    mask_id: int = MASK_ID,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    eos_id: int = EOS_ID,
    eot_id: int = EOT_ID,
    generator=None,
) -> torch.Tensor:
    """One step outside the model: int64 ``x [B, L]``, logits ``[B, L, V]`` (``un_logits`` the unconditional pass
    when ``cfg_scale > 0``), int64 ``num_transfer [B]`` -> the new ``x`` (updated in place, as the original)."""
    mask_index = x == mask_id
    if cfg_scale > 0.0:
        logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
    if logits_eos_inf:
        logits[:, :, eos_id] = -torch.inf
    logits_with_noise = add_gumbel_noise(logits, temperature, generator)
    x0 = torch.argmax(logits_with_noise, dim=-1)
    if confidence_eos_eot_inf:
        logits_with_noise[:, :, eos_id] = logits[:, :, eot_id] = -torch.inf
    if remasking == "low_confidence":
        p = F.softmax(logits, dim=-1)
        x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
    elif remasking == "random":
        x0_p = torch.rand((x0.shape[0], x0.shape[1]), device=x0.device, generator=generator)
    else:
        raise NotImplementedError(remasking)
    x0_p[:, block_end:] = -np.inf
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -np.inf)
    transfer_index = torch.zeros_like(x0, dtype=torch.bool, device=x0.device)
    for j in range(confidence.shape[0]):
        _, select_index = torch.topk(confidence[j], k=int(num_transfer[j]))
        transfer_index[j, select_index] = True
    x[transfer_index] = x0[transfer_index]
    return x


def _call(model, x, attention_mask):
    out = model(x, attention_mask=attention_mask)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def generate(
    model,
    prompt,
    attention_mask=None,
    steps=128,
    gen_length=128,
    block_length=128,
    temperature=0.0,
    cfg_scale=0.0,
    remasking="low_confidence",
    mask_id=MASK_ID,
    logits_eos_inf=False,
    confidence_eos_eot_inf=False,
    *,
    eos_id=EOS_ID,
    eot_id=EOT_ID,
    generator=None,
):
    """LLaDA's ``generate``: int64 ``prompt [B, Lp]`` -> int64 ``[B, Lp + gen_length]``; ``model(x, attention_mask=)``
    returns ``.logits`` or a tensor ``[B, L, V]``. Unlike the original, CFG without an attention mask passes ``None``."""
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, : prompt.shape[1]] = prompt.clone()
    if attention_mask is not None:
        ones = torch.ones((prompt.shape[0], gen_length), dtype=attention_mask.dtype, device=prompt.device)
        attention_mask = torch.cat([attention_mask, ones], dim=-1)
    prompt_index = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    for num_block in range(num_blocks):
        start = prompt.shape[1] + num_block * block_length
        num_transfer_tokens = get_num_transfer_tokens(x[:, start : start + block_length] == mask_id, steps)
        for i in range(steps):
            un_logits = None
            if cfg_scale > 0.0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                mask2 = None if attention_mask is None else torch.cat([attention_mask, attention_mask], dim=0)
                logits, un_logits = torch.chunk(_call(model, torch.cat([x, un_x], dim=0), mask2), 2, dim=0)
            else:
                logits = _call(model, x, attention_mask)
            step(
                x, logits, un_logits, block_end=start + block_length, num_transfer=num_transfer_tokens[:, i],
                temperature=temperature, cfg_scale=cfg_scale, remasking=remasking, mask_id=mask_id,
                logits_eos_inf=logits_eos_inf, confidence_eos_eot_inf=confidence_eos_eot_inf, eos_id=eos_id,
                eot_id=eot_id, generator=generator,
            )
    return x
