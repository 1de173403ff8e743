"""Dream's diffusion sampler (``generation_utils.py`` of the Dream 7B release, ``diffusion_generate`` and its
``_sample`` loop), rendered in plain PyTorch.

Written from the published semantics, kept formula for formula so that its costs are the original's:

- ``top_p_logits``: sort each row, ``cumsum(softmax)``, remove a token when the mass before it already exceeds
  ``top_p`` (the first token always stays); removed logits become ``finfo.min``. ``top_k_logits``: remove the
  logits below the row's k-th largest.
- ``sample_tokens``: logits divided by ``temperature`` when it is positive, then top-p, then top-k, then
  ``softmax``; at ``temperature > 0`` a categorical draw and the probability of the drawn token, at 0 the argmax and
  its probability; ``margin_confidence`` replaces the confidence by ``p1 - p2`` (a full sort), ``neg_entropy`` by
  ``sum p log(p + 1e-10)``.
- per step: ``timesteps = linspace(1, eps, steps + 1)``; the logits shifted one position right (Dream predicts the
  token after each position: position ``l`` reads the output at ``l - 1``, position 0 its own); with
  ``alg="origin"`` each masked position is revealed with probability ``1 - s / t`` (1 at the last step) with a token
  drawn by ``sample_tokens``; otherwise ``sample_tokens`` at every masked position gives a confidence (``maskgit_plus``:
  the drawn token's probability, ``topk_margin``, ``entropy``), ``int(mean masked count * (1 - s / t))`` positions
  per sequence (all of them at the last step) are revealed: the most confident, or with ``alg_temp > 0`` drawn
  without replacement from ``softmax(confidence / alg_temp)``.

``generator`` feeds ``torch.rand``, ``torch.multinomial`` and the categorical draws (the original uses the global
RNG through ``torch.distributions.Categorical``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import CompatCase

MASK_ID = 151666
ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


def top_p_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``[N, V]`` -> ``[N, V]``: the logits outside each row's nucleus set to ``finfo.min``."""
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def top_k_logits(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """``[N, V]`` -> ``[N, V]``: the logits below each row's k-th largest set to ``finfo.min``."""
    top_k = min(top_k, logits.size(-1))
    remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, margin_confidence=False, neg_entropy=False,
                  generator=None):
    """``[N, V]`` logits -> (confidence ``[N]``, int64 tokens ``[N]``)."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_logits(logits, top_p)
    if top_k is not None:
        logits = top_k_logits(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        x0 = torch.multinomial(probs, 1, generator=generator)[:, 0]
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin_confidence:
        sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
        confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


def step(x, logits, i, *, steps, eps=1e-3, alg="origin", alg_temp=None, temperature=0.0, top_p=None, top_k=None,
         mask_token_id=MASK_ID, generator=None, shifted=False):
    """Step ``i`` of ``steps`` outside the model: int64 ``x [B, L]`` and the model's logits ``[B, L, V]``
    (unshifted, or ``shifted`` already) -> the new ``x`` (updated in place, as the original)."""
    mask_index = x == mask_token_id
    if not shifted:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    mask_logits = logits[mask_index]
    timesteps = torch.linspace(1, eps, steps + 1, device=x.device)
    t, s = timesteps[i], timesteps[i + 1]
    kw = dict(temperature=temperature, top_p=top_p, top_k=top_k, generator=generator)
    if alg == "origin":
        p_transfer = 1 - s / t if i < steps - 1 else 1
        x0 = torch.zeros_like(x[mask_index]) + mask_token_id
        transfer = torch.rand(x0.shape, device=x.device, generator=generator) < p_transfer
        _, x0[transfer] = sample_tokens(mask_logits[transfer], **kw)
        x[mask_index] = x0.clone()
        return x
    confidence, x0 = sample_tokens(mask_logits, margin_confidence=alg == "topk_margin",
                                   neg_entropy=alg == "entropy", **kw)
    num_mask_token = mask_index.sum() / mask_index.shape[0]
    number_transfer_tokens = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
    full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
    full_confidence[mask_index] = confidence
    if number_transfer_tokens > 0:
        if alg_temp is None or alg_temp == 0:
            _, transfer_index = torch.topk(full_confidence, number_transfer_tokens)
        else:
            weights = F.softmax(full_confidence / alg_temp, dim=-1)
            transfer_index = torch.multinomial(weights, num_samples=number_transfer_tokens, generator=generator)
        x_ = torch.zeros_like(x) + mask_token_id
        x_[mask_index] = x0.clone()
        rows = torch.arange(x.size(0), device=x.device).unsqueeze(1).expand_as(transfer_index)
        x[rows, transfer_index] = x_[rows, transfer_index]
    return x


@torch.no_grad()
def diffusion_generate(model, inputs, attention_mask=None, *, max_new_tokens=None, max_length=None, steps=512,
                       eps=1e-3, alg="origin", alg_temp=None, temperature=0.0, top_p=None, top_k=None,
                       mask_token_id=MASK_ID, generation_tokens_hook_func=None, generation_logits_hook_func=None,
                       generator=None):
    """Dream's ``model.diffusion_generate(inputs, ...)``: int64 ``inputs [B, Lp]`` -> int64 ``[B, max_length]``.

    ``model(x, attention_mask, tok_idx)`` returns ``.logits`` or a tensor ``[B, L, V]``; ``attention_mask`` is
    ``"full"`` and ``tok_idx`` ``None`` unless a padding mask with zeros is given (then a ``[B, 1, L, L]`` bool mask
    and the positions of the kept tokens), as in the original.
    """
    if max_new_tokens is not None:
        max_length = inputs.shape[1] + max_new_tokens
    elif max_length is None:
        max_length = inputs.shape[1] + 20  # the generation config's default max_length, counted after the prompt
    x = F.pad(inputs, (0, max_length - inputs.shape[1]), value=mask_token_id)
    if attention_mask is not None and torch.any(attention_mask == 0.0):
        attention_mask = F.pad(attention_mask, (0, max_length - attention_mask.shape[1]), value=1.0)
        tok_idx = attention_mask.long().cumsum(-1) - 1
        tok_idx.masked_fill_(attention_mask == 0, 1)
        attention_mask = torch.logical_and(attention_mask.unsqueeze(1).unsqueeze(-2),
                                           attention_mask.unsqueeze(1).unsqueeze(-1))
    else:
        tok_idx, attention_mask = None, "full"
    tokens_hook = generation_tokens_hook_func or (lambda step, x, logits: x)
    logits_hook = generation_logits_hook_func or (lambda step, x, logits: logits)
    x = tokens_hook(None, x, None)
    for i in range(steps):
        out = model(x, attention_mask, tok_idx)
        logits = out.logits if hasattr(out, "logits") else out
        logits = logits_hook(i, x, torch.cat([logits[:, :1], logits[:, :-1]], dim=1))
        step(x, logits, i, steps=steps, eps=eps, alg=alg, alg_temp=alg_temp, temperature=temperature, top_p=top_p,
             top_k=top_k, mask_token_id=mask_token_id, generator=generator, shifted=True)
        x = tokens_hook(i, x, logits)
    return x


# ---------------------------------------------------------------------------------------------------------------------
# The side-by-side cases
# ---------------------------------------------------------------------------------------------------------------------


def _step_inputs(batch, prompt_len, gen_len, vocab, seed=0, device="cpu"):
    """A step's state with the whole generated part masked: prompt tokens, then ``gen_len`` masks, and random
    logits scaled to a language model's spread (never zeros)."""
    g = torch.Generator(device=device).manual_seed(seed)
    mask_id = vocab - 1 if vocab <= MASK_ID else MASK_ID
    x = torch.full((batch, prompt_len + gen_len), mask_id, dtype=torch.int64, device=device)
    x[:, :prompt_len] = torch.randint(0, mask_id, (batch, prompt_len), generator=g, device=device)
    logits = torch.randn((batch, prompt_len + gen_len, vocab), generator=g, device=device) * 3.0
    return dict(x=x, logits=logits, mask_id=mask_id)


def bench_cases(quick: bool, device="cpu") -> list[CompatCase]:
    """One Dream step outside the model at ``B * L = 1024`` (prompt 512 + 512 masked, V = 152064, Qwen2.5's padded
    vocabulary; quick: B = 2, prompt 16 + 16 masked, V = 1000), step 0 of 256: ``entropy`` with Dream's usual
    ``temperature = 0.2, top_p = 0.95``, ``maskgit_plus`` at temperature 0, ``origin`` at temperature 1."""
    from ...compat import dream as dropin

    batch, prompt_len, gen_len, vocab = (2, 16, 16, 1000) if quick else (1, 512, 512, 152064)
    steps = 256
    settings = [
        ("entropy", dict(temperature=0.2, top_p=0.95), "~9 fp32 (shifted copy, masked rows, tempered, sort values "
         "and ids, softmax, cumsum, filled copy, softmax; log and product for the entropy) + 2 int64/bool"),
        ("maskgit_plus", dict(temperature=0.0), "3 fp32 (shifted copy, masked rows, softmax)"),
        ("origin", dict(temperature=1.0), "4 fp32 (shifted copy, masked rows, revealed rows, tempered softmax)"),
    ]
    cases = []
    for alg, kw, temps in settings:
        def make():
            inputs = _step_inputs(batch, prompt_len, gen_len, vocab, device=device)
            inputs["keys"] = dropin.row_keys(7, None, batch, inputs["x"].shape[1], inputs["x"].device)
            return inputs

        def original(d, a=alg, k=kw):
            return step(d["x"].clone(), d["logits"], 0, steps=steps, alg=a, mask_token_id=d["mask_id"], **k)

        def fused(d, a=alg, k=kw):
            return dropin.step(d["x"], d["logits"], 0, steps=steps, alg=a, mask_token_id=d["mask_id"],
                               keys=d["keys"], **k)

        cases.append(CompatCase(
            codebase="dream",
            name=f"step B*L={batch * (prompt_len + gen_len)} V={vocab} alg={alg} "
                 + " ".join(f"{n}={v:g}" for n, v in kw.items()),
            make_inputs=make, original=original, dropin=fused,
            floor=lambda d: torch.amax(d["logits"], -1),
            logits_bytes=4 * batch * (prompt_len + gen_len) * vocab,
            temporaries=temps,
        ))
    return cases
