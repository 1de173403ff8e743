"""Checks of the emulated CUDA kernels beyond the shared suite (scripts/cuda_host_check.sh runs this file).

- Launch-plan invariance (KERNEL_SPEC §3 batch invariance): the one-block-per-row path and the split path give
  bit-identical results for every op, dtype and bias dtype.
- Alignment invariance: a row read with scalar loads (misaligned start) gives the same bits as the same row read with
  16-byte vector loads.
- Agreement with the float64 reference on the paths the suite's small shapes do not reach (long rows with a partial
  last chunk, fp64/bf16/fp16 bias, top-k sampling over several chunks, k > kTopkMax fallback), and sample's
  log-probability of the drawn token on every path (special rows, top-k, candidates).
"""

from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import emu_backend as eb  # noqa: E402

from gtl_kernels import reference as ref  # noqa: E402

FAILED = []


def check(cond, what):
    if not cond:
        FAILED.append(what)
        print("FAIL", what)


def with_sms(sms, fn, *args):
    old = os.environ.get("GTL_CUDA_EMU_SMS")
    os.environ["GTL_CUDA_EMU_SMS"] = str(sms)
    try:
        return fn(*args)
    finally:
        if old is None:
            del os.environ["GTL_CUDA_EMU_SMS"]
        else:
            os.environ["GTL_CUDA_EMU_SMS"] = old


def same(a, b):
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b))
    return torch.equal(a.view(torch.int8) if a.is_floating_point() else a, b.view(torch.int8) if b.is_floating_point() else b)


def inputs(n, v, dtype, bias_dtype, seed, special=True):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, v, generator=g) * 3).to(dtype)
    bias = None if bias_dtype is None else torch.randn(n, v, generator=g).to(bias_dtype)
    if special and n >= 4:
        logits[1, ::3] = -math.inf
        logits[2, [0, v - 1]] = math.inf
        logits[3, v // 2] = math.nan
    gamma = torch.linspace(-1.0, 2.0, n)
    gamma[0] = 0.0
    temperature = torch.linspace(0.3, 1.7, n)
    temperature[-1] = 0.0  # a greedy row
    seeds = torch.arange(n, dtype=torch.int64) * 7919 - 5
    return logits, bias, gamma, temperature, seeds


def all_ops(logits, bias, gamma, temperature, seeds, top_k=0, k=16):
    n, v = logits.shape
    off = torch.tensor(3, dtype=torch.int64)
    x_t = torch.full((n,), 5 % v, dtype=torch.int64)
    x_t[::4] = 0
    stay = torch.full((n,), 0.3)
    return {
        "guided_log_softmax": eb.guided_log_softmax(logits, bias, gamma, temperature),
        "sample": eb.sample(logits, bias, gamma, temperature, top_k, seeds, off, None),
        "masked_transition": eb.masked_transition(x_t, logits, bias, gamma, temperature, top_k, stay, 5 % v, seeds, off),
        "topk_log_softmax": eb.topk_log_softmax(logits, min(k, v), bias, gamma, temperature),
        "confidence/margin": eb.confidence(logits, bias, gamma, temperature, "margin"),
        "confidence/neg_entropy": eb.confidence(logits, bias, gamma, temperature, "neg_entropy"),
    }


def check_path_and_alignment_invariance():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for bias_dtype in (None, torch.float32, torch.float64, torch.bfloat16):
            for v, top_k in ((2500, 0), (1031, 7)):
                args = inputs(6, v, dtype, bias_dtype, seed=v + (bias_dtype is not None))
                row = with_sms(1, all_ops, *args, top_k)  # N >= 2: one block per row
                split = with_sms(1000, all_ops, *args, top_k)  # N < 2000: split path
                # misaligned rows: the same values one element into a wider buffer
                logits, bias, *rest = args
                wide = torch.zeros(logits.shape[0], v + 1, dtype=dtype)
                wide[:, 1:] = logits
                wide_bias = None
                if bias is not None:
                    wide_bias = torch.zeros(bias.shape[0], v + 1, dtype=bias_dtype)
                    wide_bias[:, 1:] = bias
                shifted = with_sms(1, all_ops, wide[:, 1:], None if bias is None else wide_bias[:, 1:], *rest, top_k)
                for op in row:
                    what = f"{op} {dtype} bias={bias_dtype} v={v} top_k={top_k}"
                    check(same(row[op], split[op]), f"row path != split path: {what}")
                    check(same(row[op], shifted[op]), f"aligned != misaligned rows: {what}")


def check_against_reference():
    # long rows: several chunks and a partial last chunk, every bias dtype
    for dtype, bias_dtype in ((torch.bfloat16, torch.float64), (torch.float16, torch.float16), (torch.float32, torch.bfloat16)):
        logits, bias, gamma, temperature, seeds = inputs(5, 5000, dtype, bias_dtype, seed=3, special=False)
        for sms in (1, 132):
            out = with_sms(sms, eb.guided_log_softmax, logits, bias, gamma, temperature)
            want = ref.guided_log_softmax(logits, bias, gamma, temperature)
            ok = torch.isclose(out.double(), want.double(), atol=3e-5, rtol=2e-6) | (out.isinf() & (out == want))
            check(bool(ok.all()), f"guided_log_softmax {dtype} bias={bias_dtype} sms={sms}")
            for top_k in (0, 5, 1500):
                off = torch.tensor(11, dtype=torch.int64)
                got, got_lp = with_sms(sms, eb.sample, logits, bias, gamma, temperature, top_k, seeds, off, None)
                want, want_lp = ref.sample(logits, bias, gamma, temperature, top_k, seeds, off)
                what = f"sample {dtype} bias={bias_dtype} top_k={top_k} sms={sms}"
                check(int((got != want).sum()) <= 1, f"{what}: {got} vs {want}")
                agree = got == want
                check(close_logprob(got_lp[agree], want_lp[agree]), f"{what} logprob: {got_lp} vs {want_lp}")
    # top-k restriction with ties at the k-th score (lower ids win) over several chunks
    logits = torch.zeros(3, 4100)
    logits[:, 4000] = 1.0
    seeds = torch.arange(3, dtype=torch.int64)
    for t in range(40):
        off = torch.tensor(t, dtype=torch.int64)
        got, lp = eb.sample(logits, None, torch.ones(3), torch.ones(3), 3, seeds, off, None)
        check(set(got.tolist()) <= {0, 1, 4000}, f"top-k ties: {got.tolist()}")
        want_lp = torch.where(got == 4000, 1.0, 0.0) - math.log(2 + math.e)  # log_softmax over {0, 1, 4000}
        check(close_logprob(lp, want_lp), f"top-k ties logprob: {lp.tolist()}")
    # k beyond the kernel's sort: the fallback
    logits, bias, gamma, temperature, _ = inputs(4, 3000, torch.float32, None, seed=5)
    vals, ids = eb.topk_log_softmax(logits, 2000, bias, gamma, temperature)
    want_vals, want_ids = ref.topk_log_softmax(logits, 2000, bias, gamma, temperature)
    check(bool(torch.isclose(vals, want_vals, atol=3e-5, rtol=2e-6, equal_nan=True).all()), "topk fallback values")
    check(bool((ids[3] == -1).all()) and bool((ids[:3] >= 0).all()), "topk fallback ids")


def close_logprob(got, want):
    # the suite's tolerance for sample's log-probabilities (tests/test_sample.py), NaN where NaN is wanted
    return bool(torch.isclose(got.double(), want.double(), rtol=1e-5, atol=2e-5, equal_nan=True).all())


def check_logprob():
    """sample's log-probability (KERNEL_SPEC §2) on both launch paths and with top-k: the reference's on the special
    rows (NaN: NaN; -inf thinned; +inf: -ln 2; greedy: 0, T < 0: NaN), guided_log_softmax's own value at the drawn token
    without top-k (the same formula from the same statistics), and the candidate path over the candidate columns."""
    logits, bias, gamma, temperature, seeds = inputs(8, 2500, torch.float32, torch.bfloat16, seed=17)
    temperature[4] = -1.0  # invalid: NaN without reading the row
    temperature[5] = math.inf  # uniform over the finite tokens
    off = torch.tensor(5, dtype=torch.int64)
    for sms in (1, 132):
        glsm = with_sms(sms, eb.guided_log_softmax, logits, bias, gamma, temperature)
        for top_k in (0, 7, 1500):
            got, lp = with_sms(sms, eb.sample, logits, bias, gamma, temperature, top_k, seeds, off, None)
            want, want_lp = ref.sample(logits, bias, gamma, temperature, top_k, seeds, off)
            what = f"logprob sms={sms} top_k={top_k}"
            check(torch.equal(got, want), f"{what} tokens: {got.tolist()} vs {want.tolist()}")
            check(close_logprob(lp, want_lp), f"{what}: {lp.tolist()} vs {want_lp.tolist()}")
            check(bool(lp[[3, 4]].isnan().all()) and lp[7].item() == 0.0, f"{what} NaN/greedy rows: {lp.tolist()}")
            check(abs(lp[2].item() + math.log(2)) < 1e-6, f"{what} +inf row: {lp[2].item()}")
            if top_k == 0:
                at = glsm.gather(1, got.clamp(min=0).unsqueeze(1)).squeeze(1)
                ok = torch.isclose(lp, at, rtol=1e-6, atol=1e-6, equal_nan=True) | (got < 0)
                check(bool(ok.all()), f"{what} vs guided_log_softmax: {lp.tolist()} vs {at.tolist()}")
    # the candidate path: over the columns; one row's column ids span two chunks
    scores = torch.randn(4, 1500, generator=torch.Generator().manual_seed(18)) * 2
    index = torch.randperm(100_000, generator=torch.Generator().manual_seed(19))[:6000].view(4, 1500)
    ones, seeds = torch.ones(4), torch.arange(4, dtype=torch.int64) + 3
    for sms in (1, 132):
        for top_k in (0, 20):
            got, lp = with_sms(sms, eb.sample, scores, None, ones, ones, top_k, seeds, off, index)
            want, want_lp = ref.sample(scores, None, ones, ones, top_k, seeds, off, index)
            what = f"candidate logprob sms={sms} top_k={top_k}"
            check(torch.equal(got, want) and close_logprob(lp, want_lp), f"{what}: {lp.tolist()} vs {want_lp.tolist()}")


if __name__ == "__main__":
    check_path_and_alignment_invariance()
    check_against_reference()
    check_logprob()
    print(f"emu launches: {eb.STATS['row']} row path, {eb.STATS['split']} split path")
    if FAILED:
        print(f"emu_check: {len(FAILED)} failure(s)")
        sys.exit(1)
    print("emu_check: all checks passed")
