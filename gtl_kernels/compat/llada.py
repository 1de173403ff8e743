"""Drop-in for LLaDA's sampler (``generate.py``): ``generate``, ``get_num_transfer_tokens``, ``add_gumbel_noise``.

Same arguments, shapes and meaning as LLaDA's current ``generate`` (semi-autoregressive blocks, a fixed number of
tokens revealed per block step, Gumbel-max sampling at ``temperature`` and greedy at 0, ``"low_confidence"`` /
``"random"`` remasking, classifier-free guidance with the prompt masked in the unconditional pass, the
``logits_eos_inf`` / ``confidence_eos_eot_inf`` switches), on the ``gtl_kernels`` ops:

- only the rows that can change are read: the masked positions up to the end of the current block (the original
  gives every other position ``-inf`` confidence), or the window between them where that saves a copy; no
  ``[B, L, V]`` float64 noise, no full softmax;
- draws are exact (64-bit Philox exponential race) and reproducible: ``seeds=`` (int or int64 ``[B]`` per-sequence
  seeds) or ``generator=``; a sequence's draws depend only on its seed and positions, not on its batch;
- CFG is fused: ``un + (c + 1)(cond - un) = (c + 1) * (cond + gamma * un)`` with ``gamma = -c / (c + 1)``, so the
  kernels read ``cond`` as logits and ``un`` as bias at temperature ``T / (c + 1)`` (confidence at ``1 / (c + 1)``);
- the untempered probability of the drawn token needs no softmax: at ``temperature`` 0 it is ``confidence``'s p1
  (one read), at 1 the log-probability ``sample`` returns with the draw (one read), otherwise, with
  ``(a, p1) = confidence(s)``, ``p(x0) = p1 * exp(s[x0] - s[a])`` (a second read and two gathers).

At ``temperature = 0`` the result is token-identical to the original on inputs without near-ties; at
``temperature > 0`` the draws differ from ``torch.rand``'s but have the same distribution. Confidence is computed
in float32 (the original's softmax runs in the logits' dtype, bf16 for bf16 models).
"""

from __future__ import annotations

import numbers

import torch

from .. import ops, reference
from ._common import sequence_seeds

EOS_ID, EOT_ID, MASK_ID = 126081, 126348, 126336
REMASKING = ("low_confidence", "random")
_STREAM_REMASK = 5  # Philox stream of the "random" remasking uniforms (0-3 belong to the ops, KERNEL_SPEC §3)
_FLOATS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


# ---------------------------------------------------------------------------------------------------------------------
# Argument checks and randomness
# ---------------------------------------------------------------------------------------------------------------------


def _int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _nonneg(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def check_schedule(prompt, steps, gen_length, block_length):
    """Validate the shared schedule arguments; return (num_blocks, steps_per_block)."""
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.dtype != torch.int64:
        got = f"{prompt.dtype} {tuple(prompt.shape)}" if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise ValueError(f"prompt must be an int64 tensor [B, L_prompt], got {got}")
    if prompt.shape[0] < 1:
        raise ValueError("prompt must hold at least one sequence")
    steps, gen_length = _int("steps", steps, 1), _int("gen_length", gen_length, 1)
    block_length = _int("block_length", block_length, 1)
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({num_blocks})")
    return num_blocks, steps // num_blocks


def row_keys(seeds, generator, batch: int, length: int, device) -> torch.Tensor:
    """Per-position Philox keys int64 ``[batch, length]``: position ``l`` of sequence ``b`` gets
    ``derive_keys(seed_b, l)`` (see :func:`~gtl_kernels.compat._common.sequence_seeds`), so a sequence's draws never depend on its batch."""
    seq = sequence_seeds(batch, seeds, generator, device)
    return ops.derive_keys(seq.unsqueeze(-1), torch.arange(length, device=device))


def model_logits(model, x, batch: int, name: str = "model", **kwargs) -> torch.Tensor:
    """``model(x, **kwargs)`` -> its logits ``[batch, L, V]`` (``.logits`` or the tensor), checked."""
    out = model(x, **kwargs)
    logits = out.logits if hasattr(out, "logits") else out
    if not isinstance(logits, torch.Tensor) or logits.dtype not in _FLOATS:
        got = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must return float logits (or an output with .logits), got {got}")
    if logits.dim() != 3 or logits.shape[:2] != (batch, x.shape[1]):
        raise ValueError(f"{name} must return logits [{batch}, {x.shape[1]}, V], got {tuple(logits.shape)}")
    return logits


def check_token_ids(v: int, mask_id: int, **ids) -> None:
    """Every named token id (``mask_id`` and the ones in use) must lie in ``[0, V)``."""
    for name, value in dict(mask_id=mask_id, **ids).items():
        if not 0 <= value < v:
            raise ValueError(f"{name} ({value}) must be a token id in [0, {v}) for this model's vocabulary")


# ---------------------------------------------------------------------------------------------------------------------
# The formulas
# ---------------------------------------------------------------------------------------------------------------------


def get_num_transfer_tokens(mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to reveal per step: bool ``[B, block]`` -> int64 ``[B, steps]``; the masked count split evenly, the
    remainder one each to the first steps."""
    if not isinstance(mask_index, torch.Tensor) or mask_index.dim() != 2:
        raise ValueError("mask_index must be a bool tensor [B, block_length]")
    steps = _int("steps", steps, 1)
    mask_num = mask_index.sum(dim=1, keepdim=True).to(torch.int64)
    first = torch.arange(steps, device=mask_index.device) < mask_num % steps
    return mask_num // steps + first.to(torch.int64)


def add_gumbel_noise(logits: torch.Tensor, temperature: float, *, seeds=None, generator=None, offset: int = 0):
    """Noisy scores whose argmax over V is an exact draw from ``softmax(logits / temperature)``.

    ``[B, L, V]`` -> float32 ``logits - temperature * log(E)`` with ``E`` exact 64-bit exponentials (the log of the
    original's ``exp(logits) / E ** temperature``, which overflows float64 above logit 709); the logits themselves
    at temperature 0. It materializes ``[B, L, V]``: to draw tokens, :func:`gtl_kernels.sample` does not.
    """
    temperature = _nonneg("temperature", temperature)
    if temperature == 0:
        return logits
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError("logits must be a tensor [B, L, V]")
    b, length, v = logits.shape
    keys = row_keys(seeds, generator, b, length, logits.device).reshape(-1)
    ids = torch.arange(v, device=logits.device).expand(keys.numel(), v)
    e = reference.exponential64(keys, ids, torch.tensor(offset, device=logits.device), reference.STREAM_TOKEN)
    return (logits.double() - temperature * e.log().reshape(logits.shape)).float()


def step(
    x: torch.Tensor,
    logits: torch.Tensor,
    un_logits: torch.Tensor | None = None,
    *,
    block_end: int,
    num_transfer: torch.Tensor,
    keys: torch.Tensor,
    offset: int,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    mask_id: int = MASK_ID,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    eos_id: int = EOS_ID,
    eot_id: int = EOT_ID,
) -> torch.Tensor:
    """One LLaDA step outside the model; reads only the rows of ``logits`` at (or between) the candidates.

    Args:
        x: int64 ``[B, L]`` current tokens. logits: ``[B, L, V]`` (the conditional pass when ``cfg_scale > 0``,
            ``un_logits`` the unconditional one); not modified.
        block_end: end of the current block; candidates are the masked positions before it.
        num_transfer: int64 ``[B]`` tokens to reveal in each sequence this step.
        keys: int64 ``[B, L]`` row keys (:func:`row_keys`); offset: the step counter (one per step).
    Returns:
        int64 ``[B, L]``, a new tensor.
    """
    cand_b, cand_l = (x[:, :block_end] == mask_id).nonzero(as_tuple=True)
    x_new = x.clone()
    if cand_b.numel() == 0:
        return x_new
    x0, conf = candidate_draws(
        logits, un_logits, cand_b, cand_l, keys[cand_b, cand_l], offset, temperature=temperature,
        cfg_scale=cfg_scale, remasking=remasking, logits_eos_inf=logits_eos_inf,
        confidence_eos_eot_inf=confidence_eos_eot_inf, eos_id=eos_id, eot_id=eot_id,
    )
    # Rank the candidates of each sequence (non-candidates -inf, as in the original) and reveal the top ones.
    conf_full = torch.full((x.shape[0], block_end), -torch.inf, dtype=torch.float64, device=x.device)
    conf_full[cand_b, cand_l] = conf.double()
    x0_full = torch.full((x.shape[0], block_end), -1, dtype=torch.int64, device=x.device)
    x0_full[cand_b, cand_l] = x0
    reveal_top(x_new, conf_full, x0_full, num_transfer)
    return x_new


def candidate_draws(
    logits: torch.Tensor,
    un_logits: torch.Tensor | None,
    cand_b: torch.Tensor,
    cand_l: torch.Tensor,
    row_key: torch.Tensor,
    offset: int,
    *,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    remasking: str = "low_confidence",
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: bool = False,
    eos_id: int = EOS_ID,
    eot_id: int = EOT_ID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The draw ``x0`` and its confidence at the candidate positions ``(cand_b, cand_l)`` (int64 ``[M]`` each).

    ``logits`` (and ``un_logits`` for CFG) ``[B, L, V]`` are read at those positions (or at the window of rows
    around them, see :func:`candidate_rows`) and never modified; ``row_key`` int64 ``[M]``. Returns (int64 ``[M]``
    tokens, float ``[M]`` confidence: the untempered probability of the drawn token under the (guided) logits, or a
    uniform for ``"random"``).
    """
    edits = logits_eos_inf or confidence_eos_eot_inf
    z, pick = candidate_rows(logits, cand_b, cand_l, copy=edits)
    u = candidate_rows(un_logits, cand_b, cand_l, copy=edits)[0] if cfg_scale > 0 else None
    if z.dtype == torch.float64:
        z, u = z.float(), (None if u is None else u.float())
    keys = window_keys(z, pick, row_key)
    scale = cfg_scale + 1.0
    gamma = -cfg_scale / scale if cfg_scale > 0 else 1.0
    if logits_eos_inf:
        z[:, eos_id] = -torch.inf
    fused = remasking == "low_confidence" and not confidence_eos_eot_inf and temperature in (0, 1)
    if fused and temperature == 0:
        x0, conf = ops.confidence(z, u, gamma, 1.0 / scale)  # x0 is the argmax, its probability p1: one read
    elif fused:  # sampled at the untempered distribution: the draw's own log-probability is the confidence
        x0, logp = ops.sample(z, u, gamma, 1.0 / scale, seeds=keys, offset=offset, return_logprob=True)
        conf = logp.exp()
    else:
        x0 = ops.sample(z, u, gamma, temperature / scale, seeds=keys, offset=offset)
    x0_c = x0 if pick is None else x0[pick]
    if (x0_c < 0).any():
        raise ValueError("model returned logits with a NaN or no finite value at a masked position")
    if remasking == "random":
        step_counter = torch.tensor(offset, device=x0.device)
        conf = reference.uniform64(row_key, torch.zeros_like(x0_c).unsqueeze(-1), step_counter, _STREAM_REMASK)
        return x0_c, conf[:, 0]
    if not fused:
        if confidence_eos_eot_inf:  # as in the original: EOT always, EOS too when the noisy scores are the logits
            z[:, eot_id] = -torch.inf
            if temperature == 0:
                z[:, eos_id] = -torch.inf
        top, p1 = ops.confidence(z, u, gamma, 1.0 / scale)
        conf = p1 * torch.exp(scale * (_score_at(z, u, gamma, x0) - _score_at(z, u, gamma, top)))
    return x0_c, (conf if pick is None else conf[pick])


def candidate_rows(t: torch.Tensor, b: torch.Tensor, l: torch.Tensor, copy: bool = False):
    """The rows of ``t [B, L, V]`` the kernels read for candidates ``(b, l)``, and where each candidate is in them.

    On the CPU a fresh copy of many rows costs about as much as the kernels' reads (page faults included), so where
    the span of positions ``[min l, max l]`` is at most twice the number of candidates, the kernels read that
    window: a view when ``B = 1`` (no copy) and ``pick`` locates each candidate in it. Otherwise (or with ``copy``,
    when columns are to be edited) the candidate rows are copied, ``pick = None``.
    Returns (``[R, V]`` rows, int64 ``[M]`` pick or None).
    """
    batch, length, v = t.shape
    lo, hi = int(l.min()), int(l.max()) + 1
    if not copy and batch * (hi - lo) <= 2 * b.numel():
        # The choice depends only on (b, l, shape, copy), so logits and un_logits get the same rows and pick.
        return t[:, lo:hi].reshape(-1, v), b * (hi - lo) + (l - lo)  # a view when B = 1
    if t.stride(0) == length * t.stride(1) and t.stride(1) == v * t.stride(2):
        return t.reshape(-1, v).index_select(0, b * length + l), None
    return t[b, l], None


def window_keys(rows: torch.Tensor, pick: torch.Tensor | None, row_key: torch.Tensor) -> torch.Tensor:
    """The keys of the rows the kernels read (:func:`candidate_rows`): ``row_key`` itself, or placed at ``pick`` in
    the window of ``rows.shape[0]`` rows (rows outside the candidates are computed and dropped: any key)."""
    if pick is None:
        return row_key
    return torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device).index_put_((pick,), row_key)


def _score_at(z, u, gamma, ids):
    """``z + gamma * u`` at one column per row: float32 ``[M]``."""
    s = z.gather(-1, ids.unsqueeze(-1)).float()
    if u is not None:
        s = s + gamma * u.gather(-1, ids.unsqueeze(-1)).float()
    return s[:, 0]


def reveal_top(x_new, conf_full, x0_full, num_transfer) -> None:
    """Write ``x0_full`` into ``x_new`` at the ``num_transfer[b]`` highest ``conf_full`` positions of each row."""
    k_max = int(num_transfer.max()) if num_transfer.numel() else 0
    if k_max == 0:
        return
    order = torch.topk(conf_full, k_max, dim=1).indices
    keep = torch.arange(k_max, device=x_new.device) < num_transfer.unsqueeze(-1)
    keep &= torch.isfinite(conf_full.gather(1, order))  # never a non-candidate, whatever the counts say
    rows = torch.arange(x_new.shape[0], device=x_new.device).unsqueeze(-1).expand_as(order)
    b, pos = rows[keep], order[keep]
    x_new[b, pos] = x0_full[b, pos]


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
    seeds=None,
    generator=None,
    eos_id=EOS_ID,
    eot_id=EOT_ID,
):
    """LLaDA's ``generate`` on the fused ops.

    Args:
        model: callable ``model(x, attention_mask=...)`` returning ``.logits`` or a tensor ``[B, L, V]``
            (``[2B, L, V]`` for the doubled CFG batch).
        prompt: int64 ``[B, L_prompt]``; attention_mask: optional ``[B, L_prompt]`` (extended with ones).
        steps, gen_length, block_length: total steps (a multiple of the number of blocks), generated length (a
            multiple of block_length), block length.
        temperature (>= 0), cfg_scale (>= 0), remasking (``"low_confidence"`` / ``"random"``), mask_id,
        logits_eos_inf, confidence_eos_eot_inf: as in LLaDA.
        seeds / generator: reproducible draws (int or int64 ``[B]``; or a ``torch.Generator``).
        eos_id, eot_id: the ids the two switches act on (LLaDA's 126081 / 126348 by default).
    Returns:
        int64 ``[B, L_prompt + gen_length]``.
    """
    num_blocks, steps_per_block = check_schedule(prompt, steps, gen_length, block_length)
    temperature, cfg_scale = _nonneg("temperature", temperature), _nonneg("cfg_scale", cfg_scale)
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    mask_id = _int("mask_id", mask_id, 0)
    batch, prompt_len = prompt.shape
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != prompt.shape:
            raise ValueError(f"attention_mask must be a tensor of the prompt's shape {tuple(prompt.shape)}")
        ones = torch.ones((batch, gen_length), dtype=attention_mask.dtype, device=attention_mask.device)
        attention_mask = torch.cat([attention_mask, ones], dim=-1)
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.int64, device=prompt.device)
    x[:, :prompt_len] = prompt
    prompt_index = x != mask_id
    keys = row_keys(seeds, generator, batch, x.shape[1], x.device)
    ids = dict(eos_id=eos_id) if logits_eos_inf or confidence_eos_eot_inf else {}
    ids.update(dict(eot_id=eot_id) if confidence_eos_eot_inf else {})
    offset = 0
    for block in range(num_blocks):
        start = prompt_len + block * block_length
        end = start + block_length
        num_transfer = get_num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        for i in range(steps_per_block):
            un_logits = None
            if cfg_scale > 0:
                un_x = torch.where(prompt_index, mask_id, x)
                mask2 = None if attention_mask is None else torch.cat([attention_mask, attention_mask], dim=0)
                both = model_logits(model, torch.cat([x, un_x], dim=0), 2 * batch, attention_mask=mask2)
                logits, un_logits = both[:batch], both[batch:]
            else:
                logits = model_logits(model, x, batch, attention_mask=attention_mask)
            if offset == 0:
                check_token_ids(logits.shape[-1], mask_id, **ids)
            x = step(
                x, logits, un_logits, block_end=end, num_transfer=num_transfer[:, i], keys=keys, offset=offset,
                temperature=temperature, cfg_scale=cfg_scale, remasking=remasking, mask_id=mask_id,
                logits_eos_inf=logits_eos_inf, confidence_eos_eot_inf=confidence_eos_eot_inf, eos_id=eos_id,
                eot_id=eot_id,
            )
            offset += 1
    return x
