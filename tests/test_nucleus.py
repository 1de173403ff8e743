"""``gtl_kernels.nucleus``: top-p kept sets against a plain sort-and-cumsum rendering of the rule, and the draws of
``sample_top_p`` against the renormalized kept set (chi-square, false-failure rate ``helpers.ALPHA`` = 1e-6 per
assertion, fixed seeds, with a negative control), on every backend.
"""

import numpy as np
import pytest
import torch
from helpers import ALPHA, chi_square_pvalue, random_logits

import gtl_kernels
import gtl_kernels.nucleus as nucleus_module
from gtl_kernels.nucleus import _in_kept_set, nucleus, sample_top_p


def _kept_probs(logits, top_p, bias=None, gamma=1.0, temperature=1.0, top_k=0):
    """The rule written out: float64 ``[N, V]`` probabilities of the renormalized kept set (zero outside it)."""
    s = logits.double() if bias is None else logits.double() + gamma * bias.double()
    p = torch.softmax(s / temperature, -1)
    order = torch.sort(-p, dim=-1, stable=True).indices  # descending, ties toward the lower id
    sorted_p = p.gather(-1, order)
    before = sorted_p.cumsum(-1) - sorted_p  # the mass ranked before each token
    keep_sorted = before <= top_p
    keep_sorted[:, 0] = True
    if top_k:
        keep_sorted[:, top_k:] = False
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    q = torch.where(keep, p, 0.0)
    return q / q.sum(-1, keepdim=True)


def _rows(device, dtype=torch.float32):
    """Rows from peaked to flat at V = 1000 (flat rows keep ~900 tokens at top_p 0.95: the candidates grow)."""
    g = torch.Generator().manual_seed(5)
    spread = torch.tensor([0.05, 0.5, 2.0, 6.0]).repeat_interleave(6).unsqueeze(-1)
    return (torch.randn(24, 1000, generator=g) * spread).to(device, dtype)


@pytest.mark.parametrize("top_p", [0.0, 0.5, 0.95, 0.999])
@pytest.mark.parametrize("top_k", [0, 20])
def test_kept_set_is_the_rule(backend, top_p, top_k):
    logits = _rows(backend.device)
    vals, ids = nucleus(logits, top_p, temperature=0.8, top_k=top_k, backend=backend.name)
    want = _kept_probs(logits.cpu(), top_p, temperature=0.8, top_k=top_k) > 0
    kept = torch.zeros_like(want)
    finite = torch.isfinite(vals).cpu()
    rows = torch.arange(logits.shape[0]).unsqueeze(-1).expand_as(finite)
    kept[rows[finite], ids.cpu()[finite]] = True
    assert torch.equal(kept, want)
    if top_p >= 0.95 and not top_k:
        assert int(want.sum(-1).max()) > 64  # the growth path ran
    # the values are the unrestricted log-probabilities of the kept tokens
    logp = torch.log_softmax(logits.cpu().double() / 0.8, -1)
    torch.testing.assert_close(vals.cpu()[finite].double(), logp[rows[finite], ids.cpu()[finite]], atol=2e-5, rtol=0)


def test_rows_read_through_a_window_give_the_same_sets(backend):
    logits = _rows(backend.device)
    rows = torch.tensor([3, 7, 20, 21, 0], device=logits.device)
    a = nucleus(logits, 0.95, rows=rows, backend=backend.name)
    b = nucleus(logits[rows], 0.95, backend=backend.name)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


SHAPES = {"peaked, V = 60": (60, 2.0), "flat, V = 1000": (1000, 0.3)}  # the second: kept sets of hundreds, by rejection


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("top_p", [0.7, 0.95])
def test_draws_follow_the_renormalized_kept_set(backend, top_p, shape, monkeypatch):
    v, scale = SHAPES[shape]
    if backend.interpreted and v > 64:
        pytest.skip("the rejection rounds are backend-independent glue; the interpreter reads a row in ~50 ms")
    rounds = []
    monkeypatch.setattr(nucleus_module, "_in_kept_set", lambda *a: rounds.append(1) or _in_kept_set(*a))
    draws = 300 if backend.interpreted else 10_000 if backend.name == "torch" else 40_000  # the float64 reference is slow
    row = random_logits(1, v, device=backend.device, scale=scale, seed=3)
    bias = random_logits(1, v, device=backend.device, scale=1.0, seed=4)
    logits, b = row.expand(draws, -1).contiguous(), bias.expand(draws, -1).contiguous()
    keys = torch.arange(draws, dtype=torch.int64, device=logits.device) * 7919 + 11
    tokens = sample_top_p(logits, top_p, b, 0.7, 1.3, seeds=keys, backend=backend.name)
    probs = _kept_probs(row.cpu(), top_p, bias.cpu(), 0.7, 1.3)[0].numpy()
    assert (len(rounds) > 0) == (int((probs > 0).sum()) > 64)  # rejection exactly where the set does not fit
    counts = np.bincount(tokens.cpu().numpy(), minlength=v)
    assert counts[probs == 0].sum() == 0  # never outside the kept set
    assert chi_square_pvalue(counts, probs) > ALPHA
    # negative control: the same draws fail the kept set of another top_p
    other = _kept_probs(row.cpu(), top_p - 0.3, bias.cpu(), 0.7, 1.3)[0].numpy()
    assert counts[other == 0].sum() > 0 or chi_square_pvalue(counts, other) < ALPHA
    # with the log-probabilities (kept sets built, no rejection): the same law, and each draw's renormalized logprob
    tokens, logprob = sample_top_p(logits[:2000], top_p, b[:2000], 0.7, 1.3, seeds=keys[:2000],
                                   return_logprob=True, backend=backend.name)
    torch.testing.assert_close(logprob.cpu().double(), torch.from_numpy(probs)[tokens.cpu()].log(), atol=2e-5,
                               rtol=0)


def test_greedy_batch_invariance_and_invalid_rows(backend):
    logits = _rows(backend.device)[:6].clone()
    tokens = sample_top_p(logits, 0.9, temperature=0.0, seeds=1, backend=backend.name)
    assert torch.equal(tokens, logits.argmax(-1))
    keys = torch.arange(6, dtype=torch.int64, device=logits.device) + 100
    all_rows = sample_top_p(logits, 0.9, seeds=keys, offset=3, backend=backend.name)
    one = sample_top_p(logits[4:5], 0.9, seeds=keys[4:5], offset=3, backend=backend.name)
    assert int(one[0]) == int(all_rows[4])
    logits[2] = float("nan")
    logits[3] = -torch.inf
    out = sample_top_p(logits, 0.9, seeds=keys, backend=backend.name)
    assert out[2] == -1 and out[3] == -1 and (out[[0, 1, 4, 5]] >= 0).all()


def test_three_dimensional_logits_draw_as_their_rows(backend):
    """``[B, L, V]`` with per-sequence seeds draws what the flattened rows draw with ``derive_keys`` row keys (the
    keys ``sample`` uses), on both paths (a peaked and a flat sequence)."""
    logits = _rows(backend.device)[[0, 1, 2, 22, 23, 21]].reshape(2, 3, 1000).contiguous()
    seqs = torch.tensor([5, 9], device=logits.device)
    got = sample_top_p(logits, 0.9, seeds=seqs, offset=2, backend=backend.name)
    keys = gtl_kernels.derive_keys(seqs.unsqueeze(-1), torch.arange(3, device=logits.device)).reshape(-1)
    flat = sample_top_p(logits.reshape(6, 1000), 0.9, seeds=keys, offset=2, backend=backend.name)
    assert got.shape == (2, 3) and torch.equal(got.reshape(-1), flat)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.9", True])
def test_bad_top_p_names_the_argument(bad):
    with pytest.raises(ValueError, match="top_p"):
        sample_top_p(torch.randn(2, 10), bad, seeds=1)
