"""Property-based tests (hypothesis): every op of every backend against the float64 reference on generated inputs.

Inputs (tests/fuzz_cases.py): N in [0, 300], V in [1, 70000] (N * V bounded so the float64 reference stays fast),
2-D and 3-D, contiguous / transposed / padded / strided / broadcast views, fp32/bf16/fp16 logits, optional bias of
any float dtype, scalar or per-row gamma and temperature (including 0 and inf), top_k, ``index`` maps, NaN, +inf,
-inf, all -inf rows, 1e30, 1e-30, denormals and exact ties. The rules (tests/fuzz_checks.py): invalid rows exactly as
specified, values within the fp32 tolerance, tokens identical except documented near-ties.

CI runs a fixed, derandomized set of examples (no example database), so its time and cases are the same on every
run: ``GTL_FUZZ_EXAMPLES`` examples per op and native backend (default 400, i.e. 2,000 cases per backend), and
``GTL_FUZZ_INTERPRETED_EXAMPLES`` (default 8) on small shapes for the Triton interpreter. ``make fuzz`` runs a deeper,
randomized set and writes its counts to ``results/fuzz.json`` (``GTL_FUZZ_REPORT``); docs/RELIABILITY.md records them.
"""

from __future__ import annotations

import atexit
import json
import math
import os
from collections import Counter

import pytest
import torch
from conftest import BACKENDS
from fuzz_cases import Case, build, cases, per_row
from test_fuzz_regressions import known_finding, known_finding_atol
from fuzz_checks import check_tokens, check_values, explain_token_mismatch, rounding_scale
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import gtl_kernels
from gtl_kernels import reference

NATIVE = [b for b in BACKENDS if b.name != "torch" and not b.interpreted]
INTERPRETED = [b for b in BACKENDS if b.interpreted]
EXAMPLES = int(os.environ.get("GTL_FUZZ_EXAMPLES", "400"))
INTERPRETED_EXAMPLES = int(os.environ.get("GTL_FUZZ_INTERPRETED_EXAMPLES", "8"))
RANDOMIZED = os.environ.get("GTL_FUZZ_RANDOM") == "1"  # `make fuzz`: a fresh random set (seed printed on failure)


def _settings(examples: int, shrink: bool = True):
    phases = tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(
        max_examples=examples,
        phases=phases,
        derandomize=not RANDOMIZED,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Counts of the run (cases per op and backend, rows compared, near-tie disagreements), written at exit when
# GTL_FUZZ_REPORT names a file.
COUNTS: Counter = Counter()


def _write_report():
    path = os.environ.get("GTL_FUZZ_REPORT")
    if path and COUNTS:
        with open(path, "w") as f:
            json.dump(dict(sorted(COUNTS.items())), f, indent=1)


atexit.register(_write_report)


def _on(t, device):
    return t.to(device) if isinstance(t, torch.Tensor) else t


def _keys(b, n):
    return torch.randint(-(2**63), 2**63 - 1, (n,), generator=b.gen, dtype=torch.int64)


def _offset(b):
    """A 64-bit step counter (small, or anywhere up to 2**64 - 1)."""
    return int(torch.randint(0, 2**62, (), generator=b.gen)) * int(torch.randint(0, 4, (), generator=b.gen)) + 7


def _offset_tensor(offset: int) -> torch.Tensor:
    return torch.tensor(offset - 2**64 if offset >= 2**63 else offset)


def _args(backend, b):
    """(logits, bias, gamma, temperature) on the backend's device, and the same on the CPU for the reference."""
    dev = backend.device
    cpu = (b.logits, b.bias, b.gamma, b.temperature)
    return tuple(_on(t, dev) for t in cpu), cpu


def _normalized(b):
    """Rows ``[N, V]`` and float32 ``[N]`` gamma / temperature, as the backends receive them."""
    n, v = b.lead.numel(), b.logits.shape[-1]
    logits2 = b.logits.reshape(n, v)
    bias2 = None if b.bias is None else b.bias.reshape(n, v)
    return logits2, bias2, per_row(b.gamma, n), per_row(b.temperature, n)


def _row_max(norm) -> torch.Tensor:
    """The largest finite |score| of each row (float64 ``[N]``)."""
    s, _ = reference._tempered(reference.guided_scores(*norm[:3]), norm[3], greedy_limit=False)
    a = torch.where(s.isfinite(), s.abs(), 0.0)
    return a.amax(-1) if a.shape[-1] else torch.zeros(a.shape[0], dtype=torch.float64)


def _greedy_near_tie(logits2, bias2, gamma, temperature, scale):
    """Rows where T == 0 and the two best guided scores are a near-tie (the point mass may sit on either)."""
    from fuzz_checks import TIE_ATOL, TIE_RTOL, _top2_gap

    z = reference.guided_scores(logits2, bias2, gamma)
    z = torch.where(z.isnan(), -math.inf, z)
    finite = torch.where(z.isfinite(), z.abs(), 0.0)
    tol = TIE_ATOL + TIE_RTOL * (scale + (finite.amax(-1) if z.shape[-1] else 0.0))
    return (temperature == 0) & (_top2_gap(z) <= tol)


def _scaled_near_tie(logits2, bias2, gamma, temperature, scale):
    """Rows whose two best tempered scores are a near-tie, or greedy near-ties (argmax may differ)."""
    from fuzz_checks import TIE_ATOL, TIE_RTOL, _top2_gap

    s, _ = reference._tempered(reference.guided_scores(logits2, bias2, gamma), temperature, greedy_limit=False)
    finite = torch.where(s.isfinite(), s.abs(), 0.0)
    tol = TIE_ATOL + TIE_RTOL * (scale + (finite.amax(-1) if s.shape[-1] else 0.0))
    return (_top2_gap(s) <= tol) | _greedy_near_tie(logits2, bias2, gamma, temperature, scale)


# ---------------------------------------------------------------------------------------------------------------------
# One case of each op
# ---------------------------------------------------------------------------------------------------------------------


def check_guided_log_softmax(backend, case: Case):
    b = build(case)
    dev_args, cpu_args = _args(backend, b)
    got = gtl_kernels.guided_log_softmax(*dev_args, backend=backend.name)
    ref = gtl_kernels.guided_log_softmax(*cpu_args, backend="torch")
    assert got.shape == b.logits.shape and got.dtype == torch.float32
    n, v = b.lead.numel(), b.logits.shape[-1]
    norm = _normalized(b)
    scale = rounding_scale(*norm)
    keep = ~_greedy_near_tie(*norm, scale)
    extra = known_finding_atol(backend.name, "guided_log_softmax", _row_max(norm))
    extra = extra[keep] if isinstance(extra, torch.Tensor) else extra
    check_values(got.reshape(n, v).cpu()[keep], ref.reshape(n, v)[keep], scale[keep], "guided_log_softmax", extra)
    COUNTS[f"guided_log_softmax/{backend!r}"] += 1


def check_topk_log_softmax(backend, case: Case, k: int):
    b = build(case)
    n, v = b.lead.numel(), b.logits.shape[-1]
    k = min(k, v)
    dev_args, cpu_args = _args(backend, b)
    values, ids = gtl_kernels.topk_log_softmax(dev_args[0], k, *dev_args[1:], backend=backend.name)
    ref_values, ref_ids = gtl_kernels.topk_log_softmax(cpu_args[0], k, *cpu_args[1:], backend="torch")
    assert values.shape == ids.shape == b.lead + (k,)
    norm = _normalized(b)
    scale = rounding_scale(*norm)
    invalid = ref_values.reshape(n, k)[:, 0].isnan() if k else torch.zeros(n, dtype=torch.bool)
    known = known_finding(backend.name, "topk_log_softmax", None, norm[3], invalid=invalid)
    COUNTS["known_finding_rows"] += int(known.sum())
    keep = ~_greedy_near_tie(*norm, scale) & ~known
    values, ids = values.reshape(n, k).cpu()[keep], ids.reshape(n, k).cpu()[keep]
    ref_values, ref_ids = ref_values.reshape(n, k)[keep], ref_ids.reshape(n, k)[keep]
    extra = known_finding_atol(backend.name, "topk_log_softmax", _row_max(norm))
    extra = extra[keep] if isinstance(extra, torch.Tensor) else extra
    check_values(values, ref_values, scale[keep], "topk_log_softmax values", extra)
    # -inf places (fewer than k allowed tokens) and invalid rows (-1) are fixed exactly; elsewhere the ids may
    # permute within near-ties, so each id must carry its reference log-probability
    fixed = ref_values.isinf() | ref_values.isnan()
    assert torch.equal(ids[fixed], ref_ids[fixed]), "topk_log_softmax: ids of -inf places or invalid rows differ"
    chosen = ~fixed
    if chosen.any():
        ref_logp = gtl_kernels.guided_log_softmax(*cpu_args, backend="torch").reshape(n, v)[keep]
        assert ((ids[chosen] >= 0) & (ids[chosen] < v)).all()
        extra = extra.unsqueeze(-1).expand(-1, k)[chosen] if isinstance(extra, torch.Tensor) else extra
        check_values(ref_logp.gather(1, ids.clamp(0, v - 1))[chosen], values[chosen],
                     scale[keep].unsqueeze(-1).expand(-1, k)[chosen], "topk_log_softmax ids", extra)
        valid = ~ref_values[:, :1].isnan().squeeze(-1)
        for row in ids[valid]:
            assert len(set(row.tolist())) == k, f"topk_log_softmax: repeated ids {row.tolist()}"
    COUNTS[f"topk_log_softmax/{backend!r}"] += 1


def check_confidence(backend, case: Case, kind: str):
    b = build(case)
    n, v = b.lead.numel(), b.logits.shape[-1]
    dev_args, cpu_args = _args(backend, b)
    argmax, score = gtl_kernels.confidence(*dev_args, kind=kind, backend=backend.name)
    ref_argmax, ref_score = gtl_kernels.confidence(*cpu_args, kind=kind, backend="torch")
    assert argmax.shape == score.shape == b.lead
    norm = _normalized(b)
    scale = rounding_scale(*norm)
    explained = _scaled_near_tie(*norm, scale)
    check_tokens(argmax, ref_argmax, explained, f"confidence({kind}) argmax", COUNTS)
    allowed = (reference.guided_scores(*norm[:3]) > -math.inf).sum(-1)
    known = known_finding(backend.name, "confidence", allowed, norm[3], kind)
    COUNTS["known_finding_rows"] += int(known.sum())
    accumulate = 2 + math.log(v)  # sums over V terms, and p log p moves by up to ~ln V per unit of score error
    check_values(score.reshape(n).cpu()[~known], ref_score.reshape(n)[~known], (scale * accumulate)[~known],
                 f"confidence({kind}) score", extra_atol=2e-5 * accumulate)
    COUNTS[f"confidence/{backend!r}"] += 1


def check_sample(backend, case: Case, with_index: bool):
    b = build(case)
    n, v = b.lead.numel(), b.logits.shape[-1]
    keys, offset = _keys(b, n), _offset(b)
    index = torch.randint(0, 70_000, b.logits.shape, generator=b.gen) if with_index else None
    dev_args, cpu_args = _args(backend, b)
    kw = dict(seeds=keys.view(b.lead), offset=offset)
    got = gtl_kernels.sample(*dev_args, case.top_k, index=_on(index, backend.device), backend=backend.name,
                             **{k: _on(x, backend.device) for k, x in kw.items()})
    ref = gtl_kernels.sample(*cpu_args, case.top_k, index=index, backend="torch", **kw)
    assert got.shape == b.lead and got.dtype == torch.int64
    logits2, bias2, gamma, temperature = _normalized(b)
    scale = rounding_scale(logits2, bias2, gamma, temperature)
    z = reference.guided_scores(logits2, bias2, gamma)
    def explained():
        return explain_token_mismatch(z, temperature, case.top_k, keys, _offset_tensor(offset), scale)

    got = got.reshape(-1).cpu()
    in_range = (got == -1) | ((got >= 0) & (got < (70_000 if with_index else v)))
    assert in_range.all(), f"sample: out-of-range tokens {got[~in_range][:5].tolist()}"
    check_tokens(got, ref, explained, f"sample(index={with_index})", COUNTS)
    COUNTS[f"sample/{backend!r}"] += 1


def check_masked_transition(backend, case: Case, stay_kind: str):
    b = build(case)
    n, v = b.lead.numel(), b.logits.shape[-1]
    keys, offset = _keys(b, n), _offset(b)
    mask_id = int(torch.randint(0, v, (), generator=b.gen))
    x_t = torch.randint(0, v + 5, (n,), generator=b.gen)
    x_t[torch.rand(n, generator=b.gen) < 0.7] = mask_id
    stay = {"zero": 0.0, "one": 1.0, "half": 0.5}.get(stay_kind)
    stay = torch.rand(n, generator=b.gen) if stay is None else stay
    dev_args, cpu_args = _args(backend, b)
    kw = dict(stay_prob=stay, mask_id=mask_id, seeds=keys, offset=offset)
    got = gtl_kernels.masked_transition(_on(x_t.view(b.lead), backend.device), *dev_args, case.top_k,
                                        backend=backend.name, **{k: _on(x, backend.device) for k, x in kw.items()})
    ref = gtl_kernels.masked_transition(x_t.view(b.lead), *cpu_args, case.top_k, backend="torch", **kw)
    assert got.shape == b.lead and got.dtype == torch.int64
    got, ref = got.reshape(-1).cpu(), ref.reshape(-1)
    copied = x_t != mask_id
    assert torch.equal(got[copied], x_t[copied]), "masked_transition changed an unmasked position"
    logits2, bias2, gamma, temperature = _normalized(b)
    scale = rounding_scale(logits2, bias2, gamma, temperature)
    z = reference.guided_scores(logits2, bias2, gamma)
    z[:, mask_id] = -math.inf

    def explained():
        ties = explain_token_mismatch(z, temperature, case.top_k, keys, _offset_tensor(offset), scale)
        u = reference.uniform64(keys, torch.zeros(n, 1, dtype=torch.int64), _offset_tensor(offset),
                                reference.STREAM_STAY)[:, 0]
        stay_tie = (u - per_row(stay, n).double()).abs() <= 1e-7  # the stay decision a near-tie with fp32 stay_prob
        return ties | stay_tie

    check_tokens(got, ref, explained, "masked_transition", COUNTS)
    COUNTS[f"masked_transition/{backend!r}"] += 1


# ---------------------------------------------------------------------------------------------------------------------
# The tests: native backends (many cases) and the Triton interpreter (few, small ones)
# ---------------------------------------------------------------------------------------------------------------------

SMALL = dict(max_elements=6_000, max_v=3_000, max_n=12)
OPS = ("guided_log_softmax", "topk_log_softmax", "confidence", "sample", "masked_transition")


def _run(backend, op, case, extra):
    _run_case(backend, op, case, extra)
    COUNTS["cases"] += 1
    if COUNTS["cases"] % 20 == 0:  # a time-limited deep run that is stopped keeps its counts
        _write_report()


def _run_case(backend, op, case, extra):
    if op == "guided_log_softmax":
        check_guided_log_softmax(backend, case)
    elif op == "topk_log_softmax":
        check_topk_log_softmax(backend, case, extra)
    elif op == "confidence":
        check_confidence(backend, case, ("max_prob", "margin", "neg_entropy")[extra % 3])
    elif op == "sample":
        check_sample(backend, case, with_index=bool(extra % 2))
    else:
        check_masked_transition(backend, case, ("zero", "one", "half", "rows")[extra % 4])


@pytest.mark.skipif(not NATIVE, reason="no native backend to compare with the reference")
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", NATIVE, ids=repr)
@_settings(EXAMPLES)
@given(case=cases(), extra=st.integers(0, 40))
def test_fuzz(backend, op, case, extra):
    _run(backend, op, case, extra)


@pytest.mark.skipif(not INTERPRETED, reason="the Triton interpreter is not under test")
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", INTERPRETED, ids=repr)
@_settings(INTERPRETED_EXAMPLES, shrink=False)  # shrinking would rerun the slow interpreter hundreds of times
@given(case=cases(**SMALL), extra=st.integers(0, 40))
def test_fuzz_interpreted(backend, op, case, extra):
    _run(backend, op, case, extra)
