"""Drop-in for Dream's sampler (``generation_utils.py``): ``diffusion_generate``, ``sample_tokens``, ``step``.

Same arguments, shapes and meaning as Dream's ``model.diffusion_generate(inputs, ...)`` with its ``_sample`` loop
(logits shifted one position right; ``alg`` ``"origin"`` / ``"maskgit_plus"`` / ``"topk_margin"`` / ``"entropy"``;
``alg_temp``; ``temperature``, ``top_p``, ``top_k``; ``steps`` over ``linspace(1, eps, steps + 1)``; the mean masked
count per sequence times ``1 - s / t`` revealed per step), on the ``gtl_kernels`` ops:

- only the masked positions' rows are read (through the shift: position ``l`` reads the model's output at
  ``l - 1``), never a shifted ``[B, L, V]`` copy, a sorted copy or a softmax;
- without ``top_p`` / ``top_k`` a step is one read per masked row: the draw and its probability from ``sample``
  (``maskgit_plus``), or ``confidence`` (argmax and ``p1``, ``p1 - p2`` or ``sum p log p``) at temperature 0; a
  sampled ``topk_margin`` / ``entropy`` step reads twice;
- with ``top_p`` (nucleus) or ``top_k`` the kept set comes from :func:`gtl_kernels.nucleus.nucleus` (the same rule:
  ``topk_log_softmax`` candidates, 64 first, 8x more for the rows whose nucleus does not fit); the draw is ``sample``
  over those candidates, and the confidences are those of the renormalized kept set, as in the original;
- draws are exact (64-bit Philox) and reproducible: ``seeds=`` (int or int64 ``[B]`` per-sequence seeds) or
  ``generator=``; a sequence's draws depend only on its seed and positions, not on its batch. ``alg_temp > 0``
  draws the positions without replacement from ``softmax(confidence / alg_temp)`` as Gumbel-top-k keys (the same
  law as ``torch.multinomial`` without replacement).

Deliberate differences, each where the original is ill-defined or rounds: at temperature 0 the result is
token-identical on inputs without near-ties; ``entropy`` without ``top_p`` / ``top_k`` is the exact
``sum p log p`` (the original adds ``1e-10`` inside the log, a change below ``V * 1e-10``); at ``top_k`` ties at the
k-th score keep exactly ``k`` tokens (the lowest ids; the original keeps every tied token); a sequence never gets
more positions than it has masked ones (the original, asked for more by the batch mean, would write the mask token
over unmasked positions); confidences are float32/float64, not the logits' dtype (bf16 models tie more there).
"""

from __future__ import annotations

import dataclasses
import numbers

import torch

from .. import ops, reference
from ..nucleus import nucleus
from .llada import _int, _nonneg, candidate_rows, model_logits, reveal_top, row_keys, window_keys

MASK_ID = 151666
ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
_KINDS = {"maskgit_plus": "max_prob", "topk_margin": "margin", "entropy": "neg_entropy"}
_STREAM_REVEAL, _STREAM_ORDER = 5, 6  # Philox streams of origin's reveal uniforms and alg_temp's Gumbel keys


@dataclasses.dataclass
class DreamOutput:
    """What ``diffusion_generate(..., return_dict_in_generate=True)`` returns, as Dream's ``DreamModelOutput``."""

    sequences: torch.Tensor
    history: list | None = None


def _check_sampling(temperature, top_p, top_k):
    temperature = _nonneg("temperature", temperature)
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or top_p != top_p):
        raise ValueError(f"top_p must be a number or None, got {top_p!r}")
    if top_k is not None:
        _int("top_k", top_k, 1)
    return temperature


def _filtered_confidence(q_log: torch.Tensor, drawn_col: torch.Tensor, kind: str) -> torch.Tensor:
    """Confidences of the renormalized kept set (``q_log`` fp32 ``[N, K]`` log-probabilities, ``-inf`` outside):
    the probability at ``drawn_col``, ``p1 - p2``, or ``sum p log(p + 1e-10)`` (float64 ``[N]``)."""
    q = q_log.double()
    q = (q - torch.logsumexp(q, -1, keepdim=True)).exp()
    if kind == "max_prob":
        return q.gather(-1, drawn_col.unsqueeze(-1))[:, 0]
    if kind == "margin":
        return q[:, 0] - (q[:, 1] if q.shape[1] > 1 else 0.0)
    return (q * torch.log(q + 1e-10)).sum(-1)


def sample_tokens(logits: torch.Tensor, temperature: float = 0.0, top_p: float | None = None,
                  top_k: int | None = None, margin_confidence: bool = False, neg_entropy: bool = False, *,
                  keys: torch.Tensor | None = None, seeds=None, generator=None, offset: int = 0):
    """Dream's ``sample_tokens``: ``[N, V]`` logits -> (float ``[N]`` confidence, int64 ``[N]`` tokens).

    ``keys``: int64 ``[N]`` Philox keys of the rows (else per-row keys from ``seeds`` / ``generator``, see
    :func:`~gtl_kernels.compat._common.sequence_seeds`); ``offset``: the step counter. Rows with a NaN or no finite
    logit raise ``ValueError``.
    """
    temperature = _check_sampling(temperature, top_p, top_k)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError("logits must be a float tensor [N, V]")
    if keys is None:
        keys = row_keys(seeds, generator, logits.shape[0], 1, logits.device)[:, 0]
    kind = "neg_entropy" if neg_entropy else ("margin" if margin_confidence else "max_prob")
    return _draw(logits, keys, offset, temperature, top_p, top_k, kind)


def _draw(z, keys, offset, temperature, top_p, top_k, kind, pick=None):
    """Tokens and confidences of rows ``z [R, V]`` (keys int64 ``[R]``), returned at rows ``pick`` (int64 ``[M]``,
    ``None``: every row); the rows outside ``pick`` are read and dropped (a window of rows around the candidates
    costs less than a copy of them, see :func:`~gtl_kernels.compat.llada.candidate_rows`)."""
    if z.dtype == torch.float64:
        z = z.float()
    tau = temperature if temperature > 0 else 1.0  # the original's softmax is untempered at temperature 0
    if (top_p is None or top_p >= 1) and top_k is None:
        if temperature == 0:
            x0, conf = ops.confidence(z, temperature=1.0, kind=kind)
        else:
            x0, logp = ops.sample(z, temperature=tau, seeds=keys, offset=offset, return_logprob=True)
            conf = logp.exp() if kind == "max_prob" else ops.confidence(z, temperature=tau, kind=kind)[1]
        if pick is not None:
            x0, conf = x0[pick], conf[pick]
    else:
        if pick is not None:
            keys = keys[pick]
        p = None if top_p is None or top_p >= 1 else max(float(top_p), 0.0)  # the original filters when top_p < 1
        vals, ids = nucleus(z, p, temperature=tau, top_k=top_k or 0, rows=pick)
        col = torch.zeros(vals.shape[0], dtype=torch.int64, device=z.device)
        if temperature > 0:  # a column of the candidates (the kept log-probabilities are the scores)
            col = ops.sample(vals, seeds=keys, offset=offset).clamp(min=0)
        x0 = torch.where(torch.isfinite(vals[:, 0]), ids.gather(-1, col.unsqueeze(-1))[:, 0], -1)
        conf = _filtered_confidence(vals, col, kind)
    if bool((x0 < 0).any()):
        raise ValueError("model returned logits with a NaN or no finite value at a masked position")
    return conf, x0


def step(x: torch.Tensor, logits: torch.Tensor, i: int, *, steps: int, eps: float = 1e-3, alg: str = "origin",
         alg_temp: float | None = None, temperature: float = 0.0, top_p: float | None = None,
         top_k: int | None = None, mask_token_id: int = MASK_ID, keys: torch.Tensor, offset: int | None = None,
         shifted: bool = False):
    """Step ``i`` of ``steps`` outside the model; reads only the masked positions' (shifted) rows of ``logits``.

    Args:
        x: int64 ``[B, L]`` current tokens. logits: the model's output ``[B, L, V]`` as it returned it (unshifted;
            position ``l`` of ``x`` reads row ``l - 1``, position 0 row 0); not modified.
        keys: int64 ``[B, L]`` row keys (:func:`~gtl_kernels.compat.llada.row_keys`); offset: the step counter
            (default ``i``).
    Returns:
        int64 ``[B, L]``, a new tensor.
    """
    mask_b, mask_l = (x == mask_token_id).nonzero(as_tuple=True)
    x_new = x.clone()
    if mask_b.numel() == 0:
        return x_new
    offset = i if offset is None else offset
    timesteps = torch.linspace(1, eps, steps + 1, device=x.device)
    t, s = timesteps[i], timesteps[i + 1]
    row_key = keys[mask_b, mask_l]
    src_l = mask_l if shifted else (mask_l - 1).clamp(min=0)
    counter = torch.tensor(offset, device=x.device)
    if alg == "origin":
        p_transfer = float(1 - s / t) if i < steps - 1 else 1.0
        u = reference.uniform64(row_key, torch.zeros_like(row_key).unsqueeze(-1), counter, _STREAM_REVEAL)[:, 0]
        reveal = u < p_transfer
        if bool(reveal.any()):
            rb, rl = mask_b[reveal], src_l[reveal]
            z, pick = candidate_rows(logits, rb, rl)
            _, x0 = _draw(z, window_keys(z, pick, row_key[reveal]), offset, temperature, top_p, top_k,
                          "max_prob", pick)
            x_new[rb, mask_l[reveal]] = x0
        return x_new
    z, pick = candidate_rows(logits, mask_b, src_l)
    conf, x0 = _draw(z, window_keys(z, pick, row_key), offset, temperature, top_p, top_k, _KINDS[alg], pick)
    num_mask_token = torch.tensor(mask_b.numel(), device=x.device) / x.shape[0]
    n = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
    rank = conf.double()  # the most confident first, or with alg_temp Gumbel-top-k keys
    if alg_temp:
        e = reference.exponential64(row_key, torch.zeros_like(row_key).unsqueeze(-1), counter, _STREAM_ORDER)[:, 0]
        rank = rank / alg_temp - e.log()
    conf_full = torch.full(x.shape, -torch.inf, dtype=torch.float64, device=x.device)
    conf_full[mask_b, mask_l] = rank
    x0_full = torch.full(x.shape, -1, dtype=torch.int64, device=x.device)
    x0_full[mask_b, mask_l] = x0
    reveal_top(x_new, conf_full, x0_full, torch.full((x.shape[0],), n, dtype=torch.int64, device=x.device))
    return x_new


@torch.no_grad()
def diffusion_generate(model, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                       max_new_tokens: int | None = None, max_length: int | None = None, steps: int = 512,
                       eps: float = 1e-3, alg: str = "origin", alg_temp: float | None = None,
                       temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
                       mask_token_id: int = MASK_ID, num_return_sequences: int = 1, output_history: bool = False,
                       return_dict_in_generate: bool = False, generation_tokens_hook_func=None,
                       generation_logits_hook_func=None, seeds=None, generator=None):
    """Dream's ``model.diffusion_generate(inputs, ...)`` on the fused ops, with ``model`` as the first argument.

    Args:
        model: callable ``model(x, attention_mask, tok_idx)`` returning ``.logits`` or a tensor ``[B, L, V]``
            (Dream's forward: ``attention_mask`` is ``"full"`` and ``tok_idx`` ``None`` unless ``attention_mask``
            has zeros, then a bool ``[B, 1, L, L]`` mask and int64 ``[B, L]`` positions).
        inputs: int64 ``[B, L_prompt]``; attention_mask: optional ``[B, L_prompt]`` padding mask.
        max_new_tokens / max_length: generated tokens / total length (``max_new_tokens`` wins; neither: 20 new).
        steps, eps, alg, alg_temp, temperature, top_p, top_k, mask_token_id: as in Dream.
        num_return_sequences: generations per input, consecutive in the output (``seeds`` as an int64 tensor then
            has one seed per output sequence, ``[B * num_return_sequences]``).
        output_history, return_dict_in_generate: return :class:`DreamOutput` with every step's tokens.
        generation_tokens_hook_func(i, x, logits) / generation_logits_hook_func(i, x, logits): Dream's hooks
            (they receive the shifted ``[B, L, V]`` logits, materialized for them).
        seeds / generator: reproducible draws (int or int64 ``[B]``; or a ``torch.Generator``).
    Returns:
        int64 ``[B, max_length]`` (or :class:`DreamOutput`).
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or inputs.dtype != torch.int64:
        got = f"{inputs.dtype} {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be an int64 tensor [B, L_prompt], got {got}")
    if inputs.shape[0] < 1:
        raise ValueError("inputs must hold at least one sequence")
    repeats = _int("num_return_sequences", num_return_sequences, 1)
    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor)
                                       or attention_mask.shape != inputs.shape):
        raise ValueError(f"attention_mask must be a tensor of the inputs' shape {tuple(inputs.shape)}")
    if repeats > 1:
        inputs = inputs.repeat_interleave(repeats, dim=0)
        attention_mask = None if attention_mask is None else attention_mask.repeat_interleave(repeats, dim=0)
    batch, prompt_len = inputs.shape
    if max_new_tokens is not None:
        max_length = prompt_len + _int("max_new_tokens", max_new_tokens, 1)
    elif max_length is None:
        max_length = prompt_len + 20
    max_length = _int("max_length", max_length, 1)
    if max_length <= prompt_len:
        raise ValueError(f"max_length ({max_length}) must exceed the input length ({prompt_len})")
    steps = _int("steps", steps, 1)
    if alg not in ALGS:
        raise ValueError(f"alg must be one of {ALGS}, got {alg!r}")
    if not isinstance(eps, numbers.Real) or not 0 < eps < 1:
        raise ValueError(f"eps must be a number in (0, 1), got {eps!r}")
    if alg_temp is not None and (not isinstance(alg_temp, numbers.Real) or not alg_temp >= 0):
        raise ValueError(f"alg_temp must be a number >= 0 or None, got {alg_temp!r}")
    temperature = _check_sampling(temperature, top_p, top_k)
    mask_token_id = _int("mask_token_id", mask_token_id, 0)
    x = torch.full((batch, max_length), mask_token_id, dtype=torch.int64, device=inputs.device)
    x[:, :prompt_len] = inputs
    tok_idx, mask_arg = None, "full"
    if attention_mask is not None:
        if bool((attention_mask == 0).any()):
            full = torch.ones((batch, max_length), dtype=attention_mask.dtype, device=attention_mask.device)
            full[:, :prompt_len] = attention_mask
            tok_idx = full.long().cumsum(-1) - 1
            tok_idx.masked_fill_(full == 0, 1)
            mask_arg = (full.unsqueeze(1).unsqueeze(-2) != 0) & (full.unsqueeze(1).unsqueeze(-1) != 0)
    keys = row_keys(seeds, generator, batch, max_length, x.device)
    history = [] if (output_history and return_dict_in_generate) else None
    if generation_tokens_hook_func is not None:
        x = generation_tokens_hook_func(None, x, None)
    hooked = generation_logits_hook_func is not None or generation_tokens_hook_func is not None
    for i in range(steps):
        logits = _call(model, x, mask_arg, tok_idx, batch)
        if i == 0 and not mask_token_id < logits.shape[-1]:
            raise ValueError(f"mask_token_id ({mask_token_id}) must be a token id in [0, {logits.shape[-1]})")
        if hooked:  # the hooks see the shifted logits, as in the original (materialized only for them)
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            if generation_logits_hook_func is not None:
                logits = generation_logits_hook_func(i, x, logits)
        x = step(x, logits, i, steps=steps, eps=eps, alg=alg, alg_temp=alg_temp, temperature=temperature,
                 top_p=top_p, top_k=top_k, mask_token_id=mask_token_id, keys=keys, shifted=hooked)
        if generation_tokens_hook_func is not None:
            x = generation_tokens_hook_func(i, x, logits)
        if history is not None:
            history.append(x.clone())
    return DreamOutput(x, history) if return_dict_in_generate else x


def _call(model, x, mask_arg, tok_idx, batch):
    """``model(x, attention_mask, tok_idx)`` -> its logits ``[B, L, V]``, checked."""
    return model_logits(lambda z, **_: model(z, mask_arg, tok_idx), x, batch)
