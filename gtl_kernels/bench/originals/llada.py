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
    """LLaDA's ``generate``: int64 ``prompt [B, Lp]`` -> int64 ``[B, Lp + gen_length]``.

    ``model(x, attention_mask=...)`` returns ``.logits`` or a tensor ``[B, L, V]``. Unlike the original, CFG
    without an attention mask passes ``None`` (the original refers to an unset name there); ``x`` lives on
    ``prompt.device`` (the original: ``model.device``).
    """
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


# ---------------------------------------------------------------------------------------------------------------------
# A stub mask predictor and the side-by-side cases
# ---------------------------------------------------------------------------------------------------------------------


class ContextStub:
    """A small deterministic mask predictor whose logits depend on the whole context: ``model(x) -> [B, L, V]``.

    ``tanh(h + mean(h over the sequence)) @ out + bias`` with ``h = emb[x] + pos``, fixed random weights from
    ``seed``; ``scale`` sets the spread (about 1.5-2 gives top probabilities between 0.1 and 0.9, so confidence
    rankings matter); ``bias [V]`` (zeros) lets a test make tokens likelier or rarer.
    """

    def __init__(self, vocab: int, max_len: int = 64, dim: int = 24, scale: float = 2.0, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(vocab, dim, generator=g)
        self.pos = torch.randn(max_len, dim, generator=g)
        self.out = torch.randn(dim, vocab, generator=g) * (scale / dim**0.5)
        self.bias = torch.zeros(vocab)
        self.calls = 0

    def __call__(self, x, attention_mask=None):
        self.calls += 1
        h = self.emb[x] + self.pos[: x.shape[1]]
        return torch.tanh(h + h.mean(dim=1, keepdim=True)) @ self.out * 3.0 + self.bias


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _step_inputs(batch, prompt_len, gen_len, vocab, block_length, steps_per_block, cfg, seed=0, device=None):
    """One step's state at the first step of the first block: prompt tokens, then ``gen_len`` masks; random
    logits (scaled to a language model's spread, never zeros) for the conditional and, with CFG, the unconditional
    pass; ``num_transfer`` from LLaDA's schedule."""
    device = torch.device(device) if device is not None else _device()
    g = torch.Generator(device=device).manual_seed(seed)
    mask_id = vocab - 1 if vocab < MASK_ID else MASK_ID
    x = torch.full((batch, prompt_len + gen_len), mask_id, dtype=torch.int64, device=device)
    x[:, :prompt_len] = torch.randint(0, mask_id, (batch, prompt_len), generator=g, device=device)
    shape = (batch, prompt_len + gen_len, vocab)
    logits = torch.randn(shape, generator=g, device=device) * 3.0
    un_logits = torch.randn(shape, generator=g, device=device) * 3.0 if cfg else None
    num_transfer = get_num_transfer_tokens(x[:, prompt_len : prompt_len + block_length] == mask_id, steps_per_block)
    return dict(x=x, logits=logits, un_logits=un_logits, block_end=prompt_len + block_length,
                num_transfer=num_transfer[:, 0], mask_id=mask_id)


def bench_cases(quick: bool, device="cpu") -> list[CompatCase]:
    """One LLaDA step outside the model at ``B * L = 1024`` (prompt 512 + gen 512, V = 126464; quick: B = 2,
    prompt 16 + gen 16, V = 1000), blocks of 32 and 128, temperature 0 and 1, with and without CFG (scale 1.5)."""
    from ...compat import llada as dropin

    batch, prompt_len, gen_len, vocab = (2, 16, 16, 1000) if quick else (1, 512, 512, 126464)
    cases = []
    for block_length in ((8, 16) if quick else (32, 128)):
        steps_per_block = block_length  # LLaDA's usual steps = gen_length: one token per step
        for temperature in (0.0, 1.0):
            for cfg in (0.0, 1.5):
                def make(bl=block_length, spb=steps_per_block, c=cfg):
                    inputs = _step_inputs(batch, prompt_len, gen_len, vocab, bl, spb, c > 0, device=device)
                    inputs["keys"] = dropin.row_keys(7, None, batch, inputs["x"].shape[1], inputs["x"].device)
                    return inputs

                def original(d, t=temperature, c=cfg):
                    return step(d["x"].clone(), d["logits"], d["un_logits"], block_end=d["block_end"],
                                num_transfer=d["num_transfer"], temperature=t, cfg_scale=c, mask_id=d["mask_id"])

                def fused(d, t=temperature, c=cfg):
                    return dropin.step(d["x"], d["logits"], d["un_logits"], block_end=d["block_end"],
                                       num_transfer=d["num_transfer"], keys=d["keys"], offset=0, temperature=t,
                                       cfg_scale=c, mask_id=d["mask_id"])

                temps = "1 (fp32 softmax)" if temperature == 0 else (
                    "8 (float64 copy, rand, log, neg, pow, exp, div; fp32 softmax)")
                if cfg:
                    temps += " + 3 fp32 for CFG (sub, mul, add)"
                cases.append(CompatCase(
                    codebase="llada",
                    name=f"step B*L={batch * (prompt_len + gen_len)} V={vocab} block={block_length} T={temperature:g}"
                         + (f" cfg={cfg:g}" if cfg else ""),
                    make_inputs=make, original=original, dropin=fused,
                    floor=lambda d: torch.amax(d["logits"], -1),
                    logits_bytes=4 * batch * (prompt_len + gen_len) * vocab,
                    temporaries=temps,
                ))
    return cases
