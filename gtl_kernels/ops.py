"""Public API: validate, normalize to rows, pick a backend, call its registered op (KERNEL_SPEC §2, §4, §5).

Shapes: ``logits`` is ``[N, V]`` or ``[B, L, V]`` (rows ``N = B * L``); results keep the leading shape. Per-row
parameters (``gamma``, ``temperature``, ``stay_prob``) are Python numbers or tensors of the leading shape, of shape
``[N]`` (flattened rows), or, for 3-D input, ``[B]`` (one value per sequence).

Value checks on tensor parameters (negative temperature, ``stay_prob`` outside [0, 1], negative ``index``) run in
eager mode on CPU tensors; tensors on an accelerator are not inspected, since that would synchronize the stream and
break CUDA-graph capture. There the kernels' contract applies instead: a negative or NaN temperature makes its row
invalid (-1 / NaN).
"""

from __future__ import annotations

import numbers

import torch

from . import backends, reference

LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BIAS_DTYPES = LOGIT_DTYPES + (torch.float64,)
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


# ---------------------------------------------------------------------------------------------------------------------
# Validation and normalization
# ---------------------------------------------------------------------------------------------------------------------


def _check_scores(logits, bias, index=None) -> tuple[torch.Size, int]:
    """Check ``logits``/``bias``/``index``; return (leading shape, V)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in LOGIT_DTYPES:
        raise TypeError(f"logits must be float32, bfloat16 or float16, got {logits.dtype}")
    if logits.dim() not in (2, 3):
        raise ValueError(f"logits must be [N, V] or [B, L, V], got shape {tuple(logits.shape)}")
    if logits.shape[-1] < 1:
        raise ValueError("logits must have at least one column (V >= 1)")
    for name, t, dtypes in (("bias", bias, BIAS_DTYPES), ("index", index, (torch.int64,))):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dtype not in dtypes:
            raise TypeError(f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")
        if t.shape != logits.shape:
            raise ValueError(f"{name} must have the shape of logits {tuple(logits.shape)}, got {tuple(t.shape)}")
        if t.device != logits.device:
            raise ValueError(f"{name} is on {t.device} but logits are on {logits.device}")
    return logits.shape[:-1], logits.shape[-1]


def _rows(t: torch.Tensor | None, v: int) -> torch.Tensor | None:
    """``[..., V]`` -> ``[N, V]`` with unit stride along V (a view when possible, so padded vocabularies stay free)."""
    if t is None:
        return None
    t = t.reshape(-1, v)
    return t if t.stride(-1) == 1 or v == 1 else t.contiguous()


def _inspectable(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _per_row(name: str, value, lead: torch.Size, device, low=None, high=None) -> torch.Tensor:
    """A scalar or per-row parameter as float32 ``[N]`` on ``device``; checks ``low <= value <= high``."""
    n = lead.numel()
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a float tensor, got {value.dtype}")
        if value.device != device:
            raise ValueError(f"{name} is on {value.device} but logits are on {device}")
        t = value.to(torch.float32)
        if t.numel() == 1:
            t = t.reshape(()).expand(n)
        elif t.shape == lead or t.shape == (n,):
            t = t.reshape(n)
        elif len(lead) == 2 and t.shape == lead[:1]:
            t = t.unsqueeze(-1).expand(lead).reshape(n)
        else:
            raise ValueError(
                f"{name} must be a scalar or have shape {tuple(lead)} or [{n}]"
                + (f" or [{lead[0]}]" if len(lead) == 2 else "")
                + f", got {tuple(value.shape)}"
            )
        check = _inspectable(t) and t.numel() > 0
        lo, hi = (t.min().item(), t.max().item()) if check else (None, None)
    else:
        lo = hi = float(value)
        t = torch.full((n,), lo, dtype=torch.float32, device=device)
    if lo is not None:
        if lo != lo or hi != hi:
            raise ValueError(f"{name} must not be NaN")
        if (low is not None and lo < low) or (high is not None and hi > high):
            bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{name} must be {bounds}, got values in [{lo}, {hi}]")
    return t


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return int(value)


def _row_keys(seeds, lead: torch.Size, device) -> torch.Tensor:
    """Per-row Philox keys int64 ``[N]`` from the accepted forms of ``seeds`` (KERNEL_SPEC §3).

    - ``None``: a fresh seed from torch's default generator; a ``torch.Generator``: a seed drawn from it;
    - ``int`` (or a one-element tensor): row ``r`` of the flattened batch gets ``derive_keys(seed, r)``;
    - int64 tensor of the leading shape or ``[N]``: the row keys themselves;
    - int64 tensor ``[B]`` for 3-D input: per-sequence seeds, row ``(b, l)`` gets ``derive_keys(seeds[b], l)``.
    """
    n = lead.numel()
    if seeds is None or isinstance(seeds, torch.Generator):
        gen_device = seeds.device if isinstance(seeds, torch.Generator) else "cpu"
        seeds = int(torch.randint(_INT64_MIN, 2**63 - 1, (), generator=seeds, device=gen_device))
    if isinstance(seeds, bool) or not isinstance(seeds, (numbers.Integral, torch.Tensor)):
        raise TypeError(f"seeds must be an int, an int64 tensor or a torch.Generator, got {type(seeds).__name__}")
    if isinstance(seeds, numbers.Integral):
        if not _INT64_MIN <= seeds <= _UINT64_MAX:
            raise ValueError(f"seeds must fit in 64 bits, got {seeds}")
        seed = seeds - 2**64 if seeds > 2**63 - 1 else seeds
        return _derive_keys(torch.tensor(seed, device=device), torch.arange(n, device=device))
    if seeds.dtype != torch.int64:
        raise TypeError(f"seeds must be an int64 tensor, got {seeds.dtype}")
    if seeds.device != device:
        raise ValueError(f"seeds is on {seeds.device} but logits are on {device}")
    if seeds.numel() == 1 and n != 1:
        return _derive_keys(seeds.reshape(()), torch.arange(n, device=device))
    if seeds.shape == lead or seeds.shape == (n,):
        return seeds.reshape(n)
    if len(lead) == 2 and seeds.shape == lead[:1]:
        return _derive_keys(seeds.unsqueeze(-1), torch.arange(lead[1], device=device)).reshape(n)
    raise ValueError(
        f"seeds must be an int or have shape {tuple(lead)} or [{n}]"
        + (f" or [{lead[0]}] (one per sequence)" if len(lead) == 2 else "")
        + f", got {tuple(seeds.shape)}"
    )


def _offset(offset, device) -> torch.Tensor:
    """The 64-bit step counter as an int64 scalar tensor on ``device`` (two's complement above 2**63 - 1)."""
    if isinstance(offset, torch.Tensor):
        if offset.dtype != torch.int64 or offset.numel() != 1:
            raise TypeError(f"offset must be an int or a one-element int64 tensor, got {offset.dtype} {tuple(offset.shape)}")
        if offset.device != device:
            raise ValueError(f"offset is on {offset.device} but logits are on {device}")
        return offset.reshape(())
    offset = _check_int("offset", offset, 0, _UINT64_MAX)
    return torch.tensor(offset - 2**64 if offset > 2**63 - 1 else offset, dtype=torch.int64, device=device)


def _check_index_values(index) -> None:
    if index is not None and _inspectable(index) and index.numel() and int(index.min()) < 0:
        raise ValueError("index must hold token ids >= 0")


def _common(logits, bias, gamma, temperature, lead):
    device = logits.device
    v = logits.shape[-1]
    gamma = _per_row("gamma", gamma, lead, device)
    temperature = _per_row("temperature", temperature, lead, device, low=0.0)
    return _rows(logits, v), _rows(bias, v), gamma, temperature


# ---------------------------------------------------------------------------------------------------------------------
# The five operations
# ---------------------------------------------------------------------------------------------------------------------


def guided_log_softmax(logits, bias=None, gamma=1.0, temperature=1.0, *, backend=None) -> torch.Tensor:
    """Guided log-probabilities ``log_softmax((logits + gamma * bias) / temperature)``.

    Args:
        logits: fp32/bf16/fp16 ``[N, V]`` or ``[B, L, V]``.
        bias: optional guidance scores of the same shape (any float dtype). Rows with ``gamma == 0`` ignore it.
        gamma, temperature: scalars or per-row tensors; ``temperature == 0`` gives the greedy point mass.
        backend: ``"auto"`` (default), ``"torch"``, ``"cpu"``, ``"triton"`` or ``"cuda"``.
    Returns:
        fp32 tensor of the shape of ``logits``; rows that are all ``-inf`` or hold a NaN are all NaN.
    """
    lead, v = _check_scores(logits, bias)
    args = _common(logits, bias, gamma, temperature, lead)
    if lead.numel() == 0:
        return logits.new_empty(logits.shape, dtype=torch.float32)
    return backends.select("guided_log_softmax", logits.device, backend, lead.numel())(*args).view(logits.shape)


def sample(
    logits,
    bias=None,
    gamma=1.0,
    temperature=1.0,
    top_k=0,
    *,
    seeds=None,
    offset=0,
    index=None,
    return_logprob=False,
    backend=None,
):
    """One draw per row from ``softmax((logits + gamma * bias) / temperature)``, optionally top-k restricted.

    Exact: the two-level exponential race with 64-bit Philox uniforms (KERNEL_SPEC §3); the result of a row depends
    only on its scores, its key and ``offset``.

    Args:
        logits: fp32/bf16/fp16 ``[N, V]`` or ``[B, L, V]`` (or ``[N, K]`` candidate scores with ``index``).
        bias, gamma, temperature: as in :func:`guided_log_softmax`; ``temperature == 0`` is greedy (lowest id on ties).
        top_k: keep only the ``top_k`` highest scores (0: all; ties toward the lower id).
        seeds: int, int64 tensor of row keys (leading shape or ``[N]``), int64 ``[B]`` per-sequence seeds for 3-D
            input, a ``torch.Generator``, or ``None`` (drawn from torch's default generator).
        offset: int or one-element int64 tensor (may live on the device, for CUDA graphs); advance it once per step.
        index: optional int64 tensor of the shape of ``logits``: candidate token ids; the result is ``index[r, c]``
            for the chosen column ``c``.
        return_logprob: also return the log-probability of each drawn token under the distribution it was drawn
            from (tempered, top-k restricted, over the candidates with ``index``), computed by the same read.
    Returns:
        int64 tensor of the leading shape; -1 for invalid rows (all ``-inf``, a NaN, nothing allowed). With
        ``return_logprob``, ``(tokens, logprob)``: logprob float32 of the leading shape, 0 for greedy rows
        (``temperature == 0``, a point mass), NaN for invalid rows.
    """
    lead, v = _check_scores(logits, bias, index)
    top_k = _check_int("top_k", top_k, 0)
    _check_index_values(index)
    args = _common(logits, bias, gamma, temperature, lead)
    keys, off = _row_keys(seeds, lead, logits.device), _offset(offset, logits.device)
    if lead.numel() == 0:
        tokens, logprob = logits.new_empty(lead, dtype=torch.int64), logits.new_empty(lead, dtype=torch.float32)
    else:
        op = backends.select("sample", logits.device, backend, lead.numel())
        tokens, logprob = (t.view(lead) for t in op(*args, top_k, keys, off, _rows(index, v)))
    return (tokens, logprob) if return_logprob else tokens


def masked_transition(
    x_t,
    logits,
    bias=None,
    gamma=1.0,
    temperature=1.0,
    top_k=0,
    *,
    stay_prob,
    mask_id,
    seeds=None,
    offset=0,
    index=None,
    backend=None,
) -> torch.Tensor:
    """One reverse step of absorbing (masked) diffusion.

    Positions with ``x_t != mask_id`` are copied and their logits are not read. A masked position stays masked with
    probability ``stay_prob`` (decided by its own uniform, before and independently of the token); otherwise it gets
    a token drawn as in :func:`sample` from the allowed set without ``mask_id``.

    Args:
        x_t: int64 ``[N]`` or ``[B, L]`` current tokens (the leading shape of ``logits``).
        logits, bias, gamma, temperature, top_k, seeds, offset: as in :func:`sample`.
        stay_prob: probability of staying masked, in [0, 1]; scalar or per-row (e.g. ``m_s / m_t``).
        mask_id: the mask token, ``0 <= mask_id < V`` (any id ``>= 0`` with ``index``).
        index: optional int64 tensor of the shape of ``logits``: the sparse (candidate) path. The columns of
            ``logits``/``bias`` are the scores of the candidate tokens ``index`` (e.g. a guided step's top-n
            candidates and their ratio scores), a candidate equal to ``mask_id`` is never drawn, and a revealed
            position gets ``index[r, c]`` for the drawn column ``c``: no ``[N, V]`` tensor is needed.
    Returns:
        int64 of the shape of ``x_t``; -1 where a position had to reveal a token but its row is invalid.
    """
    lead, v = _check_scores(logits, bias, index)
    if not isinstance(x_t, torch.Tensor):
        raise TypeError(f"x_t must be a torch.Tensor, got {type(x_t).__name__}")
    if x_t.dtype != torch.int64:
        raise TypeError(f"x_t must be int64, got {x_t.dtype}")
    if x_t.shape != lead:
        raise ValueError(f"x_t must have the leading shape of logits {tuple(lead)}, got {tuple(x_t.shape)}")
    if x_t.device != logits.device:
        raise ValueError(f"x_t is on {x_t.device} but logits are on {logits.device}")
    mask_id = _check_int("mask_id", mask_id, 0, None if index is not None else v - 1)
    top_k = _check_int("top_k", top_k, 0)
    _check_index_values(index)
    args = _common(logits, bias, gamma, temperature, lead)
    stay = _per_row("stay_prob", stay_prob, lead, logits.device, low=0.0, high=1.0)
    keys, off = _row_keys(seeds, lead, logits.device), _offset(offset, logits.device)
    if lead.numel() == 0:
        return x_t.clone()
    op = backends.select("masked_transition", logits.device, backend, lead.numel())
    return op(x_t.reshape(-1), *args, top_k, stay, mask_id, keys, off, _rows(index, v)).view(lead)


def topk_log_softmax(logits, k, bias=None, gamma=1.0, temperature=1.0, *, backend=None):
    """The ``k`` most probable tokens of the guided distribution and their log-probabilities, in one pass.

    Args:
        logits, bias, gamma, temperature: as in :func:`guided_log_softmax`.
        k: number of tokens, ``0 <= k <= V``.
    Returns:
        (fp32 ``[..., k]`` log-probabilities sorted descending, int64 ``[..., k]`` token ids); ties go to the lower
        id. Invalid rows give NaN and -1.
    """
    lead, v = _check_scores(logits, bias)
    k = _check_int("k", k, 0, v)
    args = _common(logits, bias, gamma, temperature, lead)
    if lead.numel() == 0:
        return logits.new_empty(lead + (k,), dtype=torch.float32), logits.new_empty(lead + (k,), dtype=torch.int64)
    op = backends.select("topk_log_softmax", logits.device, backend, lead.numel())
    values, ids = op(args[0], k, *args[1:])
    return values.view(lead + (k,)), ids.view(lead + (k,))


CONFIDENCE_KINDS = reference.CONFIDENCE_KINDS


def confidence(logits, bias=None, gamma=1.0, temperature=1.0, *, kind="max_prob", backend=None):
    """Planner scores of the guided distribution ``p`` of each row.

    Args:
        logits, bias, gamma, temperature: as in :func:`guided_log_softmax`.
        kind: ``"max_prob"`` (p1), ``"margin"`` (p1 - p2) or ``"neg_entropy"`` (sum p log p); higher = surer.
    Returns:
        (int64 argmax of the leading shape, lowest id on ties; fp32 score of the leading shape). Invalid rows give
        -1 and NaN.
    """
    lead, v = _check_scores(logits, bias)
    if kind not in CONFIDENCE_KINDS:
        raise ValueError(f"kind must be one of {CONFIDENCE_KINDS}, got {kind!r}")
    args = _common(logits, bias, gamma, temperature, lead)
    if lead.numel() == 0:
        return logits.new_empty(lead, dtype=torch.int64), logits.new_empty(lead, dtype=torch.float32)
    argmax, score = backends.select("confidence", logits.device, backend, lead.numel())(*args, kind)
    return argmax.view(lead), score.view(lead)


def derive_keys(seeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Per-row Philox keys from per-sequence seeds and positions (KERNEL_SPEC §3), e.g. ``seeds [B, 1]`` and
    ``positions [L]`` -> ``[B, L]``. A key depends only on ``(seed, position)``, so a sequence samples the same
    tokens whatever batch it is drawn in."""
    if not isinstance(seeds, torch.Tensor) or seeds.dtype != torch.int64:
        raise TypeError("seeds must be an int64 tensor")
    if not isinstance(positions, torch.Tensor) or positions.dtype != torch.int64:
        raise TypeError("positions must be an int64 tensor")
    return _derive_keys(seeds, positions)


def _derive_keys(seeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``reference.derive_keys`` with the device's fastest Philox (the backends' ``gtl::philox`` ops are
    bit-identical to the reference's, tests/test_philox.py): the samplers derive keys every step."""
    return reference.derive_keys(seeds, positions, philox=backends.native_philox(seeds.device))
