"""``gtl_kernels.compat.llada`` against the plain-PyTorch rendering of LLaDA's sampler (``bench.originals.llada``).

Greedy runs must be token-identical; sampled runs are compared in distribution: two-sample chi-square tests on the
tokens each generated position ends with, over many sequences generated in one batch, each assertion at a
false-failure rate of ``ALPHA = 1e-6`` (Bonferroni over positions), fixed seeds. Negative controls (a wrong
temperature, the CFG direction flipped) must be rejected by the same test.
"""

import functools

import numpy as np
import pytest
import torch
from helpers import min_position_pvalue
from scipy import stats

from gtl_kernels import ops
from gtl_kernels.bench.originals import llada as original
from gtl_kernels.bench.originals.llada import ContextStub
from gtl_kernels.compat import llada

ALPHA = 1e-6
V, MASK, EOS, EOT = 64, 63, 5, 7
IDS = dict(mask_id=MASK, eos_id=EOS, eot_id=EOT)


def _prompt(batch, length=4, seed=1):
    return torch.randint(0, MASK, (batch, length), generator=torch.Generator().manual_seed(seed))




GREEDY_CASES = {
    "one block": dict(steps=8, gen_length=8, block_length=8),
    "blocks": dict(steps=6, gen_length=12, block_length=4),
    "remainder": dict(steps=3, gen_length=10, block_length=10),  # 10 tokens over 3 steps: 4, 3, 3
    "cfg": dict(steps=8, gen_length=8, block_length=4, cfg_scale=1.5),
    "eos switches": dict(steps=8, gen_length=8, block_length=8, logits_eos_inf=True, confidence_eos_eot_inf=True),
    "confidence switch": dict(steps=8, gen_length=8, block_length=8, confidence_eos_eot_inf=True),
    "attention mask": dict(steps=4, gen_length=8, block_length=4, cfg_scale=0.5),
}


@pytest.mark.parametrize("name", GREEDY_CASES)
def test_greedy_is_token_identical(name):
    kw = dict(GREEDY_CASES[name], **IDS)
    prompt = _prompt(3)
    mask = torch.ones_like(prompt) if name == "attention mask" else None
    theirs = original.generate(ContextStub(V), prompt, mask, **kw)
    ours = llada.generate(ContextStub(V), prompt, mask, **kw)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours[:, : prompt.shape[1]], prompt)
    assert not (ours[:, prompt.shape[1] :] == MASK).all()


def test_eos_switches_change_the_greedy_result():
    """The switches act (on this stub EOS/EOT would be chosen otherwise), so the identity above tests them."""
    model = ContextStub(V, scale=2.0, seed=3)
    model.out[:, EOS] += 2.0
    model.out[:, EOT] += 1.5
    kw = dict(steps=8, gen_length=8, block_length=8, **IDS)
    plain = llada.generate(model, _prompt(3), **kw)
    for switch in ("logits_eos_inf", "confidence_eos_eot_inf"):
        ours = llada.generate(model, _prompt(3), **kw, **{switch: True})
        assert torch.equal(ours, original.generate(model, _prompt(3), **kw, **{switch: True}))
        assert not torch.equal(ours, plain), switch


def _step_inputs(seed, batch=4, length=12, block_end=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, MASK, (batch, length), generator=g)
    x[:, 3:] = torch.where(torch.rand(batch, length - 3, generator=g) < 0.7, MASK, x[:, 3:])
    logits = torch.randn(batch, length, V, generator=g) * 2.0
    masked = (x[:, :block_end] == MASK).sum(1)
    num_transfer = torch.minimum(masked, torch.randint(0, 4, (batch,), generator=g))
    return x, logits, num_transfer, block_end


@pytest.mark.parametrize("seed", range(5))
def test_greedy_step_chooses_the_same_positions(seed):
    x, logits, num_transfer, block_end = _step_inputs(seed)
    theirs = original.step(x.clone(), logits.clone(), block_end=block_end, num_transfer=num_transfer, mask_id=MASK)
    keys = llada.row_keys(0, None, *x.shape, x.device)
    ours = llada.step(x, logits, block_end=block_end, num_transfer=num_transfer, keys=keys, offset=0, mask_id=MASK)
    assert torch.equal(ours, theirs)
    assert torch.equal(((ours != x).sum(1)), num_transfer)


def test_random_remasking_reveals_the_count_uniformly():
    """``"random"``: the revealed positions are a uniform choice among the block's masked positions."""
    n = 3000
    x = torch.full((n, 8), MASK)
    x[:, :2] = torch.tensor([1, 2])
    logits = torch.randn(1, 8, V, generator=torch.Generator().manual_seed(0)).expand(n, -1, -1).contiguous()
    logits[..., MASK] = -torch.inf  # no draw of the mask token, so every revealed position changes
    keys = llada.row_keys(11, None, n, 8, x.device)
    new = llada.step(x, logits, block_end=8, num_transfer=torch.ones(n, dtype=torch.int64), keys=keys, offset=0,
                     temperature=1.0, remasking="random", mask_id=MASK)
    changed = (new != x).nonzero()
    assert torch.equal(changed[:, 0], torch.arange(n))
    chosen = changed[:, 1].numpy()
    counts = np.bincount(chosen, minlength=8)[2:]
    assert stats.chisquare(counts).pvalue > ALPHA


def test_cfg_fusion_is_exact():
    """``un + (c + 1)(cond - un) = (c + 1)(cond + gamma * un)``, ``gamma = -c / (c + 1)``: the fused scores at
    temperature ``1 / (c + 1)`` give the original's guided distribution (float64 reference)."""
    g = torch.Generator().manual_seed(5)
    cond, un = torch.randn(16, V, generator=g) * 3, torch.randn(16, V, generator=g) * 3
    for c in (0.5, 1.5, 4.0):
        guided = un.double() + (c + 1) * (cond.double() - un.double())
        fused = ops.guided_log_softmax(cond, un, -c / (c + 1), 1.0 / (c + 1))
        torch.testing.assert_close(fused.double(), torch.log_softmax(guided, -1), atol=2e-5, rtol=1e-5)


SAMPLED = {
    "plain": dict(steps=4, gen_length=4, block_length=4, temperature=1.0),
    "cfg and switches, two blocks": dict(steps=4, gen_length=4, block_length=2, temperature=0.7, cfg_scale=1.0,
                                         logits_eos_inf=True, confidence_eos_eot_inf=True),
    "random remasking": dict(steps=2, gen_length=4, block_length=4, temperature=1.3, remasking="random"),
}
N_SEQ = 1500


def _stub():
    model = ContextStub(V, scale=1.5, seed=2)
    model.out[:, EOS] += 1.0  # EOS and EOT likely enough that the switches matter
    model.out[:, EOT] += 1.0
    return model


@functools.lru_cache(maxsize=None)
def _original_sample(name):
    """The original's tokens for ``SAMPLED[name]`` (computed once: the negative controls reuse them)."""
    prompt = _prompt(1).expand(N_SEQ, -1).contiguous()
    return original.generate(_stub(), prompt, **SAMPLED[name], **IDS, generator=torch.Generator().manual_seed(0))


def _sampled_pair(name, dropin_model=None, **override):
    prompt = _prompt(1).expand(N_SEQ, -1).contiguous()
    kw = dict(SAMPLED[name], **override)
    ours = llada.generate(dropin_model or _stub(), prompt, **kw, **IDS, seeds=12345)
    return ours, _original_sample(name), prompt.shape[1]


@pytest.mark.parametrize("name", SAMPLED)
def test_sampled_tokens_follow_the_original_distribution(name):
    ours, theirs, prompt_len = _sampled_pair(name)
    assert min_position_pvalue(ours, theirs, prompt_len, V + 1) > ALPHA
    assert torch.equal(ours[:, :prompt_len], theirs[:, :prompt_len])
    assert (ours[:, prompt_len:] != MASK).float().mean() > 0.9  # nearly all revealed (a draw of MASK stays masked)


def test_negative_control_wrong_temperature_is_rejected():
    ours, theirs, prompt_len = _sampled_pair("plain", temperature=1.6)
    assert min_position_pvalue(ours, theirs, prompt_len, V + 1) < ALPHA


def test_negative_control_flipped_cfg_is_rejected():
    """The same test rejects guidance toward the unconditional pass (the two halves of the batch swapped)."""
    model = _stub()

    def flipped(x, attention_mask=None):
        cond, un = model(x).chunk(2)
        return torch.cat([un, cond])

    ours, theirs, prompt_len = _sampled_pair("cfg and switches, two blocks", dropin_model=flipped)
    assert min_position_pvalue(ours, theirs, prompt_len, V + 1) < ALPHA


def test_revealed_count_per_step_follows_the_schedule():
    """Each model call sees exactly the scheduled number more tokens than the previous one (sampled run)."""
    seen = []
    model = ContextStub(V, scale=1.5)

    def recording(x, attention_mask=None):
        seen.append((x != MASK).sum(1))
        return model(x)

    prompt = _prompt(2)
    out = llada.generate(recording, prompt, steps=6, gen_length=10, block_length=5, temperature=1.0, seeds=3, **IDS)
    seen.append((out != MASK).sum(1))
    per_step = torch.stack([b - a for a, b in zip(seen, seen[1:])], 1)
    schedule = llada.get_num_transfer_tokens(torch.ones(2, 5, dtype=torch.bool), 3)
    drawn_mask = (out == MASK).sum()  # a draw of MASK leaves its position masked: allowed, but rare here
    assert drawn_mask == 0 and torch.equal(per_step, torch.cat([schedule, schedule], 1))


def test_get_num_transfer_tokens_matches():
    g = torch.Generator().manual_seed(0)
    for steps in (1, 3, 7, 16):
        mask = torch.rand(5, 16, generator=g) < 0.6
        expected = original.get_num_transfer_tokens(mask, steps)
        assert torch.equal(llada.get_num_transfer_tokens(mask, steps), expected)
        assert torch.equal(expected.sum(1), mask.sum(1))


def test_add_gumbel_noise_draws_from_the_tempered_softmax():
    logits = torch.randn(1, 1, 12, generator=torch.Generator().manual_seed(0)).expand(20000, 1, 12).contiguous()
    draws = llada.add_gumbel_noise(logits, 0.8, seeds=9).argmax(-1).reshape(-1)
    probs = torch.softmax(logits[0, 0].double() / 0.8, -1).numpy()
    assert stats.chisquare(np.bincount(draws.numpy(), minlength=12), probs * draws.numel()).pvalue > ALPHA
    assert llada.add_gumbel_noise(logits, 0.0) is logits


def test_seeds_reproduce_and_do_not_depend_on_the_batch():
    kw = dict(steps=4, gen_length=8, block_length=4, temperature=1.0, **IDS)
    prompt = _prompt(3)
    seeds = torch.tensor([11, 22, 33])
    batch = llada.generate(ContextStub(V), prompt, **kw, seeds=seeds)
    assert torch.equal(batch, llada.generate(ContextStub(V), prompt, **kw, seeds=seeds))
    alone = llada.generate(ContextStub(V), prompt[1:2], **kw, seeds=seeds[1:2])
    assert torch.equal(alone, batch[1:2])
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(llada.generate(ContextStub(V), prompt, **kw, generator=g1),
                       llada.generate(ContextStub(V), prompt, **kw, generator=g2))


BAD = [
    (dict(prompt=torch.zeros(4, dtype=torch.int64)), "prompt"),
    (dict(prompt=torch.zeros(1, 4)), "prompt"),
    (dict(gen_length=10, block_length=4), "gen_length"),
    (dict(steps=3, gen_length=8, block_length=4), "steps"),
    (dict(mask_id=V, model=lambda x, attention_mask=None: torch.randn(*x.shape, V)), "mask_id"),
    (dict(temperature=-1.0), "temperature"),
    (dict(cfg_scale=-0.5), "cfg_scale"),
    (dict(remasking="lowest"), "remasking"),
    (dict(attention_mask=torch.ones(1, 3)), "attention_mask"),
    (dict(logits_eos_inf=True, eos_id=V + 5), "eos_id"),
    (dict(seeds=torch.tensor([1, 2])), "seeds"),
    (dict(model=lambda x, attention_mask=None: torch.zeros(x.shape, dtype=torch.float32)), "model"),
    (dict(model=lambda x, attention_mask=None: torch.ones(*x.shape, V, dtype=torch.int64)), "model"),
    (dict(model=lambda x, attention_mask=None: torch.randn(1, x.shape[1] - 1, V)), "model"),
]


@pytest.mark.parametrize("change,name", BAD, ids=[name for _, name in BAD])
def test_bad_input_names_the_argument(change, name):
    kw = dict(model=ContextStub(V), prompt=_prompt(1), steps=4, gen_length=8, block_length=4, mask_id=MASK)
    kw.update(change)
    with pytest.raises(ValueError, match=name):
        llada.generate(**kw)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_window_and_copied_rows_give_the_same_draws(temperature):
    """The kernels read either a window of rows around the candidates or a copy of the candidate rows; with the
    same keys a row's draw depends only on its scores, so both give the same tokens and confidences."""
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 16, V, generator=g) * 2
    logits[..., EOS] = -torch.inf  # then logits_eos_inf (which forces the copy) changes no score
    cand_b = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    cand_l = torch.tensor([5, 7, 8, 5, 6, 8, 9])
    keys = torch.arange(7) * 1000 + 3
    window = llada.candidate_draws(logits, None, cand_b, cand_l, keys, 4, temperature=temperature)
    copied = llada.candidate_draws(logits, None, cand_b, cand_l, keys, 4, temperature=temperature,
                                   logits_eos_inf=True, eos_id=EOS)
    assert llada.candidate_rows(logits, cand_b, cand_l)[1] is not None  # the window path was taken
    assert torch.equal(window[0], copied[0])
    torch.testing.assert_close(window[1], copied[1])


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_confidence_is_the_untempered_probability_of_the_draw(temperature):
    """``low_confidence`` scores each draw by its probability under the untempered CFG logits
    ``un + (c + 1)(cond - un)``: fused into the draw at temperature 0 and 1, a second read otherwise; all three
    against float64 softmax."""
    g = torch.Generator().manual_seed(9)
    cond, un = torch.randn(2, 12, V, generator=g) * 3, torch.randn(2, 12, V, generator=g) * 3
    cand_b, cand_l = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([2, 9, 0, 4, 11])
    keys = torch.arange(5) * 77 + 1
    x0, conf = llada.candidate_draws(cond, un, cand_b, cand_l, keys, 2, temperature=temperature, cfg_scale=0.5)
    guided = (un + 1.5 * (cond - un))[cand_b, cand_l].double()
    want = torch.softmax(guided, -1).gather(1, x0.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(conf.double(), want, rtol=2e-5, atol=1e-7)
