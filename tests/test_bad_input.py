"""The bad-input contract of KERNEL_SPEC §4: clear errors naming the argument, raised before any kernel runs."""

import math

import pytest
import torch

import gtl_kernels

V = 11


@pytest.fixture
def logits():
    return torch.randn(4, V)


def _call(op, logits, **kw):
    """Call ``op`` with otherwise valid arguments."""
    if op == "sample":
        return gtl_kernels.sample(logits, seeds=0, **kw)
    if op == "masked_transition":
        x_t = kw.pop("x_t", torch.full(logits.shape[:-1], 3))
        kw.setdefault("mask_id", 3)
        kw.setdefault("stay_prob", 0.5)
        return gtl_kernels.masked_transition(x_t, logits, seeds=0, **kw)
    if op == "topk_log_softmax":
        return gtl_kernels.topk_log_softmax(logits, kw.pop("k", 2), **kw)
    return getattr(gtl_kernels, op)(logits, **kw)


ALL_OPS = ["guided_log_softmax", "sample", "masked_transition", "topk_log_softmax", "confidence"]


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda x: x.numpy(), TypeError, "logits must be a torch.Tensor"),
        (lambda x: x.double(), TypeError, "logits must be float32"),
        (lambda x: x.long(), TypeError, "logits must be float32"),
        (lambda x: x[0], ValueError, "logits must be [N, V]"),
        (lambda x: x[None, None], ValueError, "logits must be [N, V]"),
        (lambda x: x[:, :0], ValueError, "at least one column"),
    ],
)
def test_bad_logits(op, make, exc, words, logits):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        _call(op, make(logits))


@pytest.mark.parametrize("op", ALL_OPS)
def test_bad_bias(op, logits):
    with pytest.raises(ValueError, match="bias must have the shape"):
        _call(op, logits, bias=torch.randn(4, V + 1))
    with pytest.raises(TypeError, match="bias must have dtype"):
        _call(op, logits, bias=torch.randint(0, 3, (4, V)))
    with pytest.raises(TypeError, match="bias must be a torch.Tensor"):
        _call(op, logits, bias=1.0)
    if torch.device("meta") != logits.device:
        with pytest.raises(ValueError, match="bias is on meta"):
            _call(op, logits, bias=torch.randn(4, V, device="meta"))


@pytest.mark.parametrize("op", ALL_OPS)
def test_bad_gamma_and_temperature(op, logits):
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        _call(op, logits, temperature=-0.5)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        _call(op, logits, temperature=torch.tensor([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="temperature must not be NaN"):
        _call(op, logits, temperature=math.nan)
    with pytest.raises(ValueError, match="gamma must be a scalar or have shape"):
        _call(op, logits, gamma=torch.ones(3))
    with pytest.raises(TypeError, match="gamma must be a number or a tensor"):
        _call(op, logits, gamma="strong")
    with pytest.raises(ValueError, match="gamma is on meta"):
        _call(op, logits, gamma=torch.ones(4, device="meta"))


@pytest.mark.parametrize("op", ["sample", "masked_transition"])
def test_bad_sampling_arguments(op, logits):
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        _call(op, logits, top_k=-1)
    with pytest.raises(TypeError, match="top_k must be an int"):
        _call(op, logits, top_k=2.5)
    with pytest.raises(ValueError, match="offset must be in"):
        _call(op, logits, offset=-1)
    with pytest.raises(TypeError, match="offset must be an int or a one-element int64 tensor"):
        _call(op, logits, offset=torch.tensor([1.0]))


@pytest.mark.parametrize(
    "seeds, exc, words",
    [
        (torch.arange(3), ValueError, "seeds must be an int or have shape"),
        (torch.arange(4, dtype=torch.int32), TypeError, "seeds must be an int64 tensor"),
        (1.5, TypeError, "seeds must be an int, an int64 tensor or a torch.Generator"),
        (2**64, ValueError, "seeds must fit in 64 bits"),
        (torch.arange(4, device="meta"), ValueError, "seeds is on meta"),
    ],
)
def test_bad_seeds(seeds, exc, words, logits):
    with pytest.raises(exc, match=words):
        gtl_kernels.sample(logits, seeds=seeds)


def test_bad_index(logits):
    with pytest.raises(ValueError, match="index must have the shape of logits"):
        gtl_kernels.sample(logits, seeds=0, index=torch.zeros(4, V + 1, dtype=torch.int64))
    with pytest.raises(TypeError, match="index must have dtype torch.int64"):
        gtl_kernels.sample(logits, seeds=0, index=torch.zeros(4, V, dtype=torch.int32))
    with pytest.raises(ValueError, match="index must hold token ids >= 0"):
        gtl_kernels.sample(logits, seeds=0, index=torch.full((4, V), -3, dtype=torch.int64))


def test_bad_masked_transition_arguments(logits):
    for mask_id in (-1, V):
        with pytest.raises(ValueError, match=rf"mask_id must be in \[0, {V - 1}\]"):
            _call("masked_transition", logits, mask_id=mask_id)
    for stay in (-0.1, 1.5, torch.tensor([0.5, 2.0, 0.5, 0.5])):
        with pytest.raises(ValueError, match=r"stay_prob must be \[0.0, 1.0\]"):
            _call("masked_transition", logits, stay_prob=stay)
    with pytest.raises(ValueError, match="x_t must have the leading shape"):
        _call("masked_transition", logits, x_t=torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="x_t must be int64"):
        _call("masked_transition", logits, x_t=torch.zeros(4, dtype=torch.int32))
    with pytest.raises(TypeError, match="mask_id must be an int"):
        _call("masked_transition", logits, mask_id=3.0)


def test_bad_k_and_kind(logits):
    with pytest.raises(ValueError, match=rf"k must be in \[0, {V}\]"):
        gtl_kernels.topk_log_softmax(logits, V + 1)
    with pytest.raises(ValueError, match=r"k must be in"):
        gtl_kernels.topk_log_softmax(logits, -1)
    with pytest.raises(ValueError, match="kind must be one of"):
        gtl_kernels.confidence(logits, kind="entropy")


def test_unknown_or_unavailable_backend(logits, monkeypatch):
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        gtl_kernels.sample(logits, seeds=0, backend="numpy")
    for name, info in gtl_kernels.available_backends().items():
        if not info.available:
            with pytest.raises(RuntimeError, match=f"backend '{name}' is not available"):
                gtl_kernels.sample(logits, seeds=0, backend=name)
    monkeypatch.setenv("GTL_KERNELS_BACKEND", "numpy")
    with pytest.raises(ValueError, match="backend must be"):
        gtl_kernels.sample(logits, seeds=0)


def test_wrong_device_for_backend(logits):
    if not gtl_kernels.available_backends()["cuda"].available:
        pytest.skip("cuda backend not built")
    with pytest.raises(RuntimeError, match="runs on cuda tensors, not cpu"):
        gtl_kernels.sample(logits, seeds=0, backend="cuda")


def test_empty_batch(backend):
    for shape in ((0, V), (0, 5, V), (3, 0, V)):
        logits = torch.randn(shape, device=backend.device)
        lead = shape[:-1]
        assert gtl_kernels.sample(logits, seeds=1, backend=backend.name).shape == lead
        x_t = torch.zeros(lead, dtype=torch.int64, device=backend.device)
        out = gtl_kernels.masked_transition(x_t, logits, stay_prob=0.5, mask_id=0, seeds=1, backend=backend.name)
        assert out.shape == lead
        assert gtl_kernels.guided_log_softmax(logits, backend=backend.name).shape == shape
        values, ids = gtl_kernels.topk_log_softmax(logits, 3, backend=backend.name)
        assert values.shape == ids.shape == lead + (3,)
        assert gtl_kernels.confidence(logits, backend=backend.name)[1].shape == lead


def test_inputs_never_modified(backend):
    logits = torch.randn(6, 300, device=backend.device).to(torch.bfloat16)
    bias = torch.randn(6, 300, device=backend.device)
    x_t = torch.full((6,), 2, device=backend.device)
    gamma = torch.rand(6, device=backend.device)
    saved = [t.clone() for t in (logits, bias, x_t, gamma)]
    gtl_kernels.sample(logits, bias, gamma, seeds=1, top_k=5, backend=backend.name)
    gtl_kernels.masked_transition(x_t, logits, bias, gamma, stay_prob=0.0, mask_id=2, seeds=1, backend=backend.name)
    gtl_kernels.topk_log_softmax(logits, 4, bias, gamma, backend=backend.name)
    gtl_kernels.confidence(logits, bias, gamma, kind="neg_entropy", backend=backend.name)
    for before, after in zip(saved, (logits, bias, x_t, gamma)):
        assert torch.equal(before, after)
