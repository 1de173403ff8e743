"""``gtl_kernels.compat.dream`` against the plain-PyTorch rendering of Dream's sampler (``bench.originals.dream``).

Greedy runs must be token-identical; sampled runs are compared in distribution: two-sample chi-square tests on the
tokens each generated position ends with, over many sequences generated in one batch, each assertion at a
false-failure rate of ``ALPHA = 1e-6`` (Bonferroni over positions), fixed seeds. Negative controls (a wrong
temperature, a wrong ``top_p``) must be rejected by the same test.
"""

import functools

import pytest
import torch
from helpers import min_position_pvalue

from gtl_kernels.bench.originals import dream as original
from gtl_kernels.bench.originals.llada import ContextStub
from gtl_kernels.compat import dream
from gtl_kernels.nucleus import nucleus

ALPHA = 1e-6
V, MASK = 64, 63
N_SEQ = 4000


def _stub(seed=2):
    """Logits that depend on the whole context; the mask token never predicted (as a trained model), so every
    sequence keeps the same masked count and the original's batch-mean schedule is well defined."""
    stub = ContextStub(V, scale=1.5, seed=seed)
    stub.bias[MASK] = -30.0
    return stub


def _dream_model(stub, seen=None):
    def model(x, attention_mask, tok_idx):
        if seen is not None:
            seen.append((x.clone(), attention_mask, tok_idx))
        return stub(x)
    return model


def _prompt(batch, length=4, seed=1):
    return torch.randint(0, MASK, (batch, length), generator=torch.Generator().manual_seed(seed))




ALGS = ("maskgit_plus", "topk_margin", "entropy")
FILTERS = {"none": {}, "top_p": dict(top_p=0.9), "top_k": dict(top_k=5), "both": dict(top_p=0.8, top_k=3)}


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("filt", FILTERS)
def test_greedy_is_token_identical(alg, filt):
    model = _dream_model(_stub())
    prompt = _prompt(3)
    kw = dict(max_new_tokens=12, steps=5, alg=alg, mask_token_id=MASK, **FILTERS[filt])
    theirs = original.diffusion_generate(model, prompt, **kw)
    ours = dream.diffusion_generate(model, prompt, **kw)
    assert torch.equal(ours, theirs)
    assert not (ours == MASK).any()


def test_greedy_with_padding_passes_the_originals_mask_and_positions():
    stub = _stub()
    seen_o, seen_d = [], []
    prompt = _prompt(2, length=5)
    attention = torch.ones_like(prompt)
    attention[0, :2] = 0  # left padding of the first sequence
    kw = dict(max_new_tokens=6, steps=3, alg="entropy", mask_token_id=MASK)
    theirs = original.diffusion_generate(_dream_model(stub, seen_o), prompt, attention, **kw)
    ours = dream.diffusion_generate(_dream_model(stub, seen_d), prompt, attention, **kw)
    assert torch.equal(ours, theirs)
    for (xo, mo, to), (xd, md, td) in zip(seen_o, seen_d):
        assert torch.equal(xo, xd) and torch.equal(mo, md) and torch.equal(to, td)
    plain = []
    dream.diffusion_generate(_dream_model(stub, plain), prompt, torch.ones_like(prompt), **kw)
    assert plain[0][1] == "full" and plain[0][2] is None


def test_logits_and_tokens_hooks_act_as_in_the_original():
    """A logits hook that forbids the token generated most often without it, on the shifted logits (as Dream passes
    them), and a tokens hook that counts its calls: the original's tokens and calls, the token never drawn."""
    model, prompt = _dream_model(_stub()), _prompt(6)
    kw = dict(max_new_tokens=8, steps=4, alg="maskgit_plus", mask_token_id=MASK)
    banned = int(torch.mode(dream.diffusion_generate(model, prompt, **kw)[:, 4:].reshape(-1)).values)

    def forbid(i, x, logits):
        logits = logits.clone()
        logits[:, :, banned] = -torch.inf
        return logits

    calls = {"original": 0, "dropin": 0}
    seen = {"original": [], "dropin": []}

    def counter(name):
        def hook(i, x, logits):
            calls[name] += 1
            if logits is not None:
                seen[name].append(logits.clone())
            return x
        return hook

    theirs = original.diffusion_generate(model, prompt, **kw, generation_logits_hook_func=forbid,
                                         generation_tokens_hook_func=counter("original"))
    ours = dream.diffusion_generate(model, prompt, **kw, generation_logits_hook_func=forbid,
                                    generation_tokens_hook_func=counter("dropin"))
    assert torch.equal(ours, theirs)
    assert calls["dropin"] == calls["original"] == 5  # once before the loop, once per step
    assert all(torch.equal(a, b) for a, b in zip(seen["original"], seen["dropin"]))  # the shifted, hooked logits
    assert not (ours[:, 4:] == banned).any()


SAMPLED = {
    "maskgit_plus T=1": dict(alg="maskgit_plus", temperature=1.0),
    "entropy T=0.7 top_p=0.9": dict(alg="entropy", temperature=0.7, top_p=0.9),
    "topk_margin T=0.5 top_k=5": dict(alg="topk_margin", temperature=0.5, top_k=5),
    "origin T=1 top_p=0.8": dict(alg="origin", temperature=1.0, top_p=0.8),
    "maskgit_plus T=1 alg_temp=0.5": dict(alg="maskgit_plus", temperature=1.0, alg_temp=0.5),
}
RUN = dict(max_new_tokens=8, steps=4, mask_token_id=MASK)


@functools.lru_cache(maxsize=None)
def _original_sample(name):
    prompt = _prompt(1).expand(N_SEQ, -1).contiguous()
    return original.diffusion_generate(_dream_model(_stub()), prompt, **RUN, **SAMPLED[name],
                                       generator=torch.Generator().manual_seed(0))


def _sampled_pair(name, **override):
    prompt = _prompt(1).expand(N_SEQ, -1).contiguous()
    ours = dream.diffusion_generate(_dream_model(_stub()), prompt, **RUN, **dict(SAMPLED[name], **override),
                                    seeds=12345)
    return ours, _original_sample(name), prompt.shape[1]


@pytest.mark.parametrize("name", SAMPLED)
def test_sampled_tokens_follow_the_original_distribution(name):
    ours, theirs, prompt_len = _sampled_pair(name)
    assert min_position_pvalue(ours, theirs, prompt_len, V) > ALPHA
    assert torch.equal(ours[:, :prompt_len], theirs[:, :prompt_len])
    assert not (ours == MASK).any() and not (theirs == MASK).any()


def test_negative_control_wrong_temperature_is_rejected():
    ours, theirs, prompt_len = _sampled_pair("maskgit_plus T=1", temperature=2.0)
    assert min_position_pvalue(ours, theirs, prompt_len, V) < ALPHA


def test_negative_control_wrong_top_p_is_rejected():
    ours, theirs, prompt_len = _sampled_pair("entropy T=0.7 top_p=0.9", top_p=0.5)
    assert min_position_pvalue(ours, theirs, prompt_len, V) < ALPHA


@pytest.mark.parametrize("alg", ALGS)
def test_revealed_count_per_step_follows_the_schedule(alg):
    """Each model call sees exactly ``int(masked * (1 - s / t))`` more tokens than the previous one (all at the
    last step), the original's count, in a sampled run."""
    seen = []
    prompt = _prompt(2)
    steps, eps = 5, 1e-3
    out = dream.diffusion_generate(_dream_model(_stub(), seen), prompt, max_new_tokens=10, steps=steps, eps=eps,
                                   alg=alg, temperature=1.0, mask_token_id=MASK, seeds=4)
    masked = [int((x == MASK).sum(1)[0]) for x, _, _ in seen] + [int((out == MASK).sum(1)[0])]
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        n = masked[i] / 1.0
        want = int(torch.tensor(n) * (1 - timesteps[i + 1] / timesteps[i])) if i < steps - 1 else masked[i]
        assert masked[i] - masked[i + 1] == want
    assert masked[-1] == 0
    for x, _, _ in seen:
        assert torch.equal(x[:, :4], prompt)


@pytest.mark.parametrize("kind", ["max_prob", "margin", "neg_entropy"])
@pytest.mark.parametrize("filt", FILTERS)
def test_sample_tokens_confidence_matches_the_original(kind, filt):
    """At temperature 0 the original's (confidence, token); at 0.8 the token's probability (max_prob) or the row's
    score under the original's filtered, tempered distribution, for the token we drew."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 300, generator=g) * 2.5
    flags = dict(margin_confidence=kind == "margin", neg_entropy=kind == "neg_entropy")
    c_o, x_o = original.sample_tokens(logits, 0.0, **FILTERS[filt], **flags)
    c_d, x_d = dream.sample_tokens(logits, 0.0, **FILTERS[filt], **flags, seeds=1)
    assert torch.equal(x_d, x_o)
    tol = 1e-5 if (kind == "neg_entropy" and filt == "none") else 1e-6  # exact entropy: no 1e-10 in the log
    torch.testing.assert_close(c_d.double(), c_o.double(), atol=tol, rtol=1e-5)
    c_d, x_d = dream.sample_tokens(logits, 0.8, **FILTERS[filt], **flags, seeds=1)
    z = logits / 0.8
    if FILTERS[filt].get("top_p") is not None:
        z = original.top_p_logits(z, FILTERS[filt]["top_p"])
    if FILTERS[filt].get("top_k") is not None:
        z = original.top_k_logits(z, FILTERS[filt]["top_k"])
    p = torch.softmax(z.double(), -1)
    assert (p.gather(-1, x_d.unsqueeze(-1)) > 0).all()  # never a filtered-out token
    if kind == "max_prob":
        want = p.gather(-1, x_d.unsqueeze(-1))[:, 0]
    elif kind == "margin":
        top2 = p.topk(2, -1).values
        want = top2[:, 0] - top2[:, 1]
    else:
        want = (p * torch.log(p + 1e-10)).sum(-1)
    torch.testing.assert_close(c_d.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("top_p", [0.5, 0.95, 0.999])
def test_nucleus_is_the_originals_kept_set(top_p):
    """Kept sets equal the original's on rows from peaked to flat; flat rows at V = 1000 need about 900 tokens, so
    the candidate count grows past its first 64."""
    g = torch.Generator().manual_seed(5)
    spread = torch.tensor([0.05, 0.5, 2.0, 6.0]).repeat_interleave(8).unsqueeze(-1)
    logits = torch.randn(32, 1000, generator=g) * spread
    vals, ids = nucleus(logits, top_p)
    kept = torch.zeros_like(logits, dtype=torch.bool)
    rows = torch.arange(32).unsqueeze(-1).expand_as(ids)
    kept[rows[torch.isfinite(vals)], ids[torch.isfinite(vals)]] = True
    want = original.top_p_logits(logits, top_p) > torch.finfo(logits.dtype).min
    assert torch.equal(kept, want)
    assert int(kept.sum(-1).max()) > 64 or top_p < 0.9
    # on a subset of rows read through a window of all of them: the same sets as on the subset alone
    rows = torch.randperm(32, generator=g)[:10]
    sub_v, sub_i = nucleus(logits, top_p, rows=rows)
    alone_v, alone_i = nucleus(logits[rows], top_p)
    assert torch.equal(sub_v, alone_v) and torch.equal(sub_i, alone_i)


def test_seeds_reproduce_and_do_not_depend_on_the_batch():
    model = _dream_model(_stub())
    prompts = _prompt(3)
    kw = dict(max_new_tokens=8, steps=4, alg="entropy", temperature=1.0, top_p=0.9, mask_token_id=MASK)
    seeds = torch.tensor([5, 6, 7])
    a = dream.diffusion_generate(model, prompts, **kw, seeds=seeds)
    b = dream.diffusion_generate(model, prompts, **kw, seeds=seeds)
    assert torch.equal(a, b)
    # each sequence alone, with its own seed: the same tokens (the reveal count is the batch mean, equal here)
    for j in range(3):
        alone = dream.diffusion_generate(model, prompts[j : j + 1], **kw, seeds=seeds[j : j + 1])
        assert torch.equal(alone[0], a[j])
    c = dream.diffusion_generate(model, prompts, **kw, seeds=seeds + 1)
    assert not torch.equal(a, c)


def test_num_return_sequences_repeats_each_input():
    """Greedy: each input's generations are identical and equal the original on the repeated batch; sampled: the
    copies of one input draw independently."""
    model, prompt = _dream_model(_stub()), _prompt(2)
    kw = dict(max_new_tokens=6, steps=3, alg="entropy", mask_token_id=MASK)
    ours = dream.diffusion_generate(model, prompt, num_return_sequences=3, **kw)
    theirs = original.diffusion_generate(model, prompt.repeat_interleave(3, 0), **kw)
    assert ours.shape == (6, 10) and torch.equal(ours, theirs)
    sampled = dream.diffusion_generate(model, prompt, num_return_sequences=8, temperature=1.0, seeds=2, **kw)
    assert torch.equal(sampled[:8, :4], prompt[:1].expand(8, -1))
    assert len({tuple(r.tolist()) for r in sampled[:8]}) > 1


def test_return_dict_with_history():
    out = dream.diffusion_generate(_dream_model(_stub()), _prompt(2), max_new_tokens=6, steps=3, alg="entropy",
                                   mask_token_id=MASK, output_history=True, return_dict_in_generate=True)
    assert len(out.history) == 3 and torch.equal(out.history[-1], out.sequences)
    assert (out.history[0] == MASK).sum() > (out.history[1] == MASK).sum()


BAD = {
    "alg": (dict(alg="confidence"), "alg"),
    "steps": (dict(steps=0), "steps"),
    "max_length": (dict(max_new_tokens=None, max_length=4), "max_length"),
    "max_new_tokens": (dict(max_new_tokens=0), "max_new_tokens"),
    "temperature": (dict(temperature=-1.0), "temperature"),
    "top_k": (dict(top_k=0), "top_k"),
    "top_p": (dict(top_p=float("nan")), "top_p"),
    "eps": (dict(eps=0.0), "eps"),
    "alg_temp": (dict(alg_temp=-0.5), "alg_temp"),
    "mask_token_id": (dict(mask_token_id=V), "mask_token_id"),
    "num_return_sequences": (dict(num_return_sequences=0), "num_return_sequences"),
}
_TOLERANT = _stub()  # a model that reads any id (an out-of-vocabulary mask id must be caught by the sampler)


@pytest.mark.parametrize("name", BAD)
def test_bad_input_names_the_argument(name):
    change, word = BAD[name]
    kw = dict(dict(max_new_tokens=4, steps=2, alg="entropy", mask_token_id=MASK), **change)
    with pytest.raises((ValueError, TypeError), match=word):
        dream.diffusion_generate(lambda x, am, ti: _TOLERANT(x.clamp(max=V - 1)), _prompt(2), **kw)


def test_bad_inputs_and_model_outputs():
    model = _dream_model(_stub())
    with pytest.raises(ValueError, match="inputs"):
        dream.diffusion_generate(model, _prompt(2).int(), max_new_tokens=4, steps=2, mask_token_id=MASK)
    with pytest.raises(ValueError, match="attention_mask"):
        dream.diffusion_generate(model, _prompt(2), torch.ones(2, 3), max_new_tokens=4, steps=2, mask_token_id=MASK)
    short = lambda x, am, ti: _stub()(x)[:, :-1]
    with pytest.raises(ValueError, match="model"):
        dream.diffusion_generate(short, _prompt(2), max_new_tokens=4, steps=2, mask_token_id=MASK)
    nan = lambda x, am, ti: torch.full((x.shape[0], x.shape[1], V), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        dream.diffusion_generate(nan, _prompt(2), max_new_tokens=4, steps=2, alg="entropy", mask_token_id=MASK)
