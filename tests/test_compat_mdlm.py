"""``gtl_kernels.compat.mdlm`` against MDLM's formulas rendered in plain PyTorch (``bench/originals/mdlm.py``).

Statistical checks: chi-square / binomial at a false-failure rate of ALPHA = 1e-6 with fixed seeds, each with a
negative control that the same check rejects."""

import math

import numpy as np
import pytest
import torch
from helpers import ALPHA, chi_square_pvalue

from gtl_kernels.bench.originals import mdlm as original
from gtl_kernels.compat import mdlm

V, MASK = 40, 39
MT, MS = 0.6, 0.45


def _row(seed=0):
    return original.subs_log_probs(1, 1, V, MASK, seed=seed, scale=1.5)[0, 0]


def _counts(tokens):
    return np.bincount(tokens.reshape(-1).numpy(), minlength=V)


def test_ddpm_update_follows_the_original_q_xs():
    """Outcome frequencies (each token, and staying masked) match MDLM's normalized q_xs; a table at another
    temperature is rejected by the same test."""
    n = 60_000
    row = _row()
    log_p = row.expand(1, n, V)
    x = torch.full((1, n), MASK)
    out = mdlm.ddpm_update(log_p, x, MT, MS, MASK, seeds=1, offset=3)
    q = original.q_xs(row.view(1, 1, V).clone(), MT, MS, MASK)[0, 0].double()
    probs = (q / q.sum()).numpy()
    assert abs(probs[MASK] - MS / MT) < 1e-6
    counts = _counts(out)
    assert chi_square_pvalue(counts, probs) > ALPHA
    hot = torch.softmax(row.double() * 1.15, -1) * (1 - MS / MT)  # negative control: a 15% temperature error
    hot[MASK] = MS / MT
    assert chi_square_pvalue(counts, hot.numpy()) < ALPHA


def test_ddpm_update_copies_unmasked_rows_without_reading_them():
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, MASK, (3, 50), generator=gen)
    x[:, ::3] = MASK
    log_p = original.subs_log_probs(3, 50, V, MASK, seed=3)
    log_p[x != MASK] = math.nan  # an unmasked row that is read would come back as -1
    out = mdlm.ddpm_update(log_p, x, torch.full((3, 1, 1), MT), torch.full((3, 1, 1), MS), MASK, seeds=4)
    assert torch.equal(out[x != MASK], x[x != MASK])
    assert ((out[x == MASK] >= 0) & (out[x == MASK] <= MASK)).all()


def test_last_step_reveals_everything_and_matches_the_original_greedy_free_law():
    """``m_s = 0``: every masked position reveals a token (never the mask), as in the original."""
    log_p = original.subs_log_probs(2, 300, V, MASK, seed=5)
    x = torch.full((2, 300), MASK)
    assert (mdlm.ddpm_update(log_p, x, 0.1, 0.0, MASK, seeds=6) != MASK).all()
    assert (original.ddpm_update(log_p, x, 0.1, 0.0, MASK) != MASK).all()


def test_sample_categorical_law_and_negative_control():
    n = 50_000
    w = torch.rand(V, generator=torch.Generator().manual_seed(7)) ** 3  # unnormalized, some tiny weights
    out = mdlm.sample_categorical(w.expand(n, V), seeds=8)
    counts = _counts(out)
    probs = (w / w.sum()).double().numpy()
    assert chi_square_pvalue(counts, probs) > ALPHA
    flat = (w.double() ** 0.85 / (w.double() ** 0.85).sum()).numpy()
    assert chi_square_pvalue(counts, flat) < ALPHA
    assert out.shape == (n,) and mdlm.sample_categorical(w.view(1, 1, V), seeds=1).shape == (1, 1)


def test_sample_categorical_in_blocks_equals_one_block(monkeypatch):
    probs = torch.rand(3, 700, V, generator=torch.Generator().manual_seed(9))
    whole = mdlm.sample_categorical(probs, seeds=10, offset=2)
    monkeypatch.setattr(mdlm, "_BLOCK_ELEMENTS", 5 * V)
    assert torch.equal(mdlm.sample_categorical(probs, seeds=10, offset=2), whole)


def test_a_sequence_draws_the_same_in_any_batch():
    log_p = original.subs_log_probs(4, 30, V, MASK, seed=11)
    x = torch.full((4, 30), MASK)
    seeds = torch.tensor([5, 6, 7, 8])
    both = mdlm.ddpm_update(log_p, x, MT, MS, MASK, seeds=seeds, offset=1)
    alone = mdlm.ddpm_update(log_p[2:3], x[2:3], MT, MS, MASK, seeds=seeds[2:3], offset=1)
    assert torch.equal(both[2:3], alone)
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(mdlm.ddpm_update(log_p, x, MT, MS, MASK, generator=gen_a),
                       mdlm.ddpm_update(log_p, x, MT, MS, MASK, generator=gen_b))


def test_caching_update_reports_changes():
    log_p = original.subs_log_probs(2, 20, V, MASK, seed=12)
    x = torch.full((2, 20), MASK)
    x_next, changed = mdlm.ddpm_caching_update(log_p, x, 0.5, 0.0, MASK, seeds=1)
    assert changed and (x_next != MASK).all()
    same, changed = mdlm.ddpm_caching_update(log_p, x, 0.5, 0.5, MASK, seeds=1)
    assert not changed and torch.equal(same, x)


def test_bad_input_is_named():
    log_p = original.subs_log_probs(2, 5, V, MASK, seed=13)
    x = torch.full((2, 5), MASK)
    with pytest.raises(ValueError, match="log_p_x0"):
        mdlm.ddpm_update(log_p[:, :4], x, MT, MS, MASK, seeds=1)
    with pytest.raises(ValueError, match="mask_id"):
        mdlm.ddpm_update(log_p, x, MT, MS, V + 3, seeds=1)
    with pytest.raises(ValueError, match="move_chance"):
        mdlm.ddpm_update(log_p, x, 0.3, 0.5, MASK, seeds=1)
    with pytest.raises(ValueError, match="move_chance_t"):
        mdlm.ddpm_update(log_p, x, torch.ones(3), MS, MASK, seeds=1)
    with pytest.raises(ValueError, match="seeds"):
        mdlm.ddpm_update(log_p, x, MT, MS, MASK, seeds=torch.ones(3, dtype=torch.int64))
