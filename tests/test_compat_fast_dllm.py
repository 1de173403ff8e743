"""``gtl_kernels.compat.fast_dllm`` against the plain-PyTorch rendering of Fast-dLLM's decoding
(``bench.originals.fast_dllm``).

Greedy runs must be token-identical with the same number of model calls; sampled runs are compared in distribution
(two-sample chi-square per generated position over many sequences in one batch, each assertion at a false-failure
rate of ``ALPHA = 1e-6`` after Bonferroni, fixed seeds), with a wrong temperature as the negative control.
"""

import functools

import pytest
import torch
from helpers import min_position_pvalue

from gtl_kernels.bench.originals import fast_dllm as original
from gtl_kernels.bench.originals.llada import ContextStub
from gtl_kernels.compat import fast_dllm

ALPHA = 1e-6
V, MASK = 64, 63


def _prompt(batch, length=4, seed=1):
    return torch.randint(0, MASK, (batch, length), generator=torch.Generator().manual_seed(seed))


GREEDY_CASES = {
    "fixed count": dict(steps=4, gen_length=8, block_length=8),
    "fixed count, blocks": dict(steps=6, gen_length=12, block_length=4),
    "threshold": dict(steps=8, gen_length=8, block_length=8, threshold=0.5),
    "low threshold, blocks": dict(steps=4, gen_length=12, block_length=6, threshold=0.2),
    "factor": dict(steps=8, gen_length=8, block_length=8, factor=1.0),
    "small factor, blocks": dict(steps=4, gen_length=12, block_length=6, factor=0.4),
}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", GREEDY_CASES)
def test_greedy_is_token_identical(name, batch):
    kw = dict(GREEDY_CASES[name], mask_id=MASK)
    prompt = _prompt(batch)
    theirs, nfe_theirs = original.generate(ContextStub(V, scale=1.5), prompt, **kw)
    ours, nfe_ours = fast_dllm.generate(ContextStub(V, scale=1.5), prompt, **kw)
    assert torch.equal(ours, theirs) and nfe_ours == nfe_theirs
    assert torch.equal(ours[:, : prompt.shape[1]], prompt)
    assert not (ours == MASK).any()


def test_parallel_rules_take_fewer_steps():
    """The rules act: on this stub, threshold and factor need fewer model calls than one token per step."""
    kw = dict(steps=8, gen_length=8, block_length=8, mask_id=MASK)
    _, fixed = fast_dllm.generate(ContextStub(V, scale=1.5), _prompt(1), **kw)
    _, thresh = fast_dllm.generate(ContextStub(V, scale=1.5), _prompt(1), **kw, threshold=0.5)
    _, factor = fast_dllm.generate(ContextStub(V, scale=1.5), _prompt(1), **kw, factor=1.0)
    assert fixed == 8 and 1 < thresh < 8 and 1 < factor < 8


def _step_inputs(seed, batch=4, length=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, MASK, (batch, length), generator=g)
    mask_index = torch.rand(batch, length, generator=g) < 0.6
    mask_index[0] = False  # a finished sequence in the batch
    x[mask_index] = MASK
    logits = torch.randn(batch, length, V, generator=g) * torch.rand(batch, length, 1, generator=g) * 6
    return logits, mask_index, x


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rule", ["count", "threshold", "factor"])
def test_greedy_step_chooses_the_same_positions(rule, seed):
    logits, mask_index, x = _step_inputs(seed)
    if rule == "factor":
        args = (logits, 0.0, "low_confidence", mask_index, x, None, 1.0)
        theirs, ours = original.get_transfer_index_dynamic(*args), fast_dllm.get_transfer_index_dynamic(*args)
    else:
        counts = torch.minimum(mask_index.sum(1), torch.tensor(3))
        args = (logits, 0.0, "low_confidence", mask_index, x, counts, 0.4 if rule == "threshold" else None)
        theirs, ours = original.get_transfer_index(*args), fast_dllm.get_transfer_index(*args)
    assert torch.equal(ours[1], theirs[1])
    assert torch.equal(ours[0][ours[1]], theirs[0][theirs[1]])
    assert torch.equal(ours[0][~mask_index], x[~mask_index])
    assert (ours[1].sum(1) >= 1)[mask_index.any(1)].all()  # at least one revealed where a candidate is left


def test_factor_rule_edge_cases():
    """One candidate: revealed. The last candidate failing its threshold: revealed anyway, as in the original."""
    x = torch.full((1, 3), MASK)
    for conf_logits, expected in [([9.0, 9.0, 9.0], 3), ([9.0, 9.0, -9.0], 3), ([9.0, -9.0, -9.0], 1)]:
        logits = torch.zeros(1, 3, V)
        logits[0, :, 1] = torch.tensor(conf_logits)
        mask_index = torch.ones(1, 3, dtype=torch.bool)
        ours = fast_dllm.get_transfer_index_dynamic(logits, 0.0, "low_confidence", mask_index, x, None, 1.0)[1]
        theirs = original.get_transfer_index_dynamic(logits, 0.0, "low_confidence", mask_index, x, None, 1.0)[1]
        assert int(ours.sum()) == int(theirs.sum()) == expected, conf_logits
    single = torch.tensor([[False, True, False]])
    ours = fast_dllm.get_transfer_index_dynamic(logits, 0.0, "low_confidence", single, x, None, 1.0)[1]
    assert torch.equal(ours, single)




SAMPLED = {
    "threshold": dict(steps=4, gen_length=4, block_length=4, temperature=1.0, threshold=0.4),
    "factor": dict(steps=4, gen_length=4, block_length=2, temperature=0.8, factor=1.0),
}
N_SEQ = 1500


def _stub():
    model = ContextStub(V, scale=1.5, seed=2)
    model.bias[MASK] = -30.0  # a mask predictor does not predict the mask: every step makes progress
    return model


@functools.lru_cache(maxsize=None)
def _original_sample(name):
    prompt = _prompt(1).expand(N_SEQ, -1).contiguous()
    kw = dict(SAMPLED[name], mask_id=MASK)
    return original.generate(_stub(), prompt, **kw, generator=torch.Generator().manual_seed(0))


def _sampled_pair(name, **override):
    prompt = _prompt(1).expand(N_SEQ, -1).contiguous()
    kw = dict(SAMPLED[name], mask_id=MASK, **override)
    ours, _ = fast_dllm.generate(_stub(), prompt, **kw, seeds=777)
    return ours, _original_sample(name)[0], prompt.shape[1]


@pytest.mark.parametrize("name", SAMPLED)
def test_sampled_tokens_follow_the_original_distribution(name):
    ours, theirs, prompt_len = _sampled_pair(name)
    assert min_position_pvalue(ours, theirs, prompt_len, V + 1) > ALPHA
    assert torch.equal(ours[:, :prompt_len], theirs[:, :prompt_len])


def test_negative_control_wrong_temperature_is_rejected():
    ours, theirs, prompt_len = _sampled_pair("threshold", temperature=1.6)
    assert min_position_pvalue(ours, theirs, prompt_len, V + 1) < ALPHA


def test_a_model_stuck_on_the_mask_token_raises_instead_of_looping():
    def stuck(x):
        logits = torch.randn(*x.shape, V)
        logits[..., MASK] = 50.0
        return logits

    with pytest.raises(RuntimeError, match="still holds masks"):
        fast_dllm.generate(stuck, _prompt(1), steps=2, gen_length=2, block_length=2, mask_id=MASK, threshold=0.9)


BAD = [
    (dict(gen_length=10, block_length=4), "gen_length"),
    (dict(steps=3, gen_length=8, block_length=4), "steps"),
    (dict(mask_id=V, model=lambda x: torch.randn(*x.shape, V)), "mask_id"),
    (dict(model=lambda x: torch.randn(x.shape[0], x.shape[1], 1, V)), "model"),
    (dict(model=lambda x: torch.ones(*x.shape, V, dtype=torch.int64)), "model"),
    (dict(threshold="0.9"), "threshold"),
    (dict(temperature=-0.1), "temperature"),
    (dict(remasking="top"), "remasking"),
    (dict(prompt=torch.zeros(1, 4)), "prompt"),
]


@pytest.mark.parametrize("change,name", BAD, ids=[name for _, name in BAD])
def test_bad_input_names_the_argument(change, name):
    kw = dict(model=ContextStub(V), prompt=_prompt(1), steps=4, gen_length=8, block_length=4, mask_id=MASK)
    kw.update(change)
    with pytest.raises(ValueError, match=name):
        fast_dllm.generate(**kw)


def test_bad_step_input_names_the_argument():
    logits, mask_index, x = _step_inputs(0)
    with pytest.raises(ValueError, match="num_transfer_tokens"):
        fast_dllm.get_transfer_index(logits, 0.0, "low_confidence", mask_index, x, torch.full((4,), 99))
    with pytest.raises(ValueError, match="mask_index"):
        fast_dllm.get_transfer_index(logits, 0.0, "low_confidence", mask_index.long(), x, None, 0.9)
    with pytest.raises(ValueError, match="factor"):
        fast_dllm.get_transfer_index_dynamic(logits, 0.0, "low_confidence", mask_index, x, None, None)
