"""GPU-only checks of the sampling ops (KERNEL_SPEC §3, §4): a sampling loop captured in a CUDA graph with device
seeds and offset, and rows beyond 2^31 elements; and the GTL ratio scorer's buffer layout on CUDA tensors. Skipped
without CUDA; run by ``benchmarks/device_check.sh``.

Every backend that runs on CUDA is checked (``triton``, and ``cuda`` when built).
"""

import pytest
import torch

import gtl_kernels
from gtl_kernels import reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _cuda_backends():
    return [n for n, i in gtl_kernels.available_backends().items() if i.available and "cuda" in i.device_types]


@pytest.fixture(params=_cuda_backends() or ["none"])
def backend(request):
    if request.param == "none":
        pytest.skip("no CUDA backend available")
    return request.param


def test_masked_transition_loop_in_a_cuda_graph(backend):
    """16 reverse steps with seeds and offset as device tensors: graph replay gives the eager tokens bit for bit,
    and the offset advances inside the graph."""
    b, length, v, steps = 4, 256, 30522, 16
    mask_id = v - 1
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(b, length, v, generator=g, device="cuda") * 3).to(torch.bfloat16)
    bias = torch.randn(b, length, v, generator=g, device="cuda").to(torch.bfloat16)
    seeds = torch.randint(0, 2**62, (b,), generator=g, device="cuda")
    x0 = torch.full((b, length), mask_id, dtype=torch.int64, device="cuda")
    x0[:, :17] = 5  # some positions already revealed
    stay = torch.linspace(0.9, 0.0, steps, device="cuda")  # per step, a device scalar

    def run(x, offset):
        for i in range(steps):
            x = gtl_kernels.masked_transition(x, logits, bias, gamma=0.5, temperature=0.9, stay_prob=stay[i],
                                              mask_id=mask_id, seeds=seeds, offset=offset, backend=backend)
            offset.add_(1)
        return x

    eager = run(x0.clone(), torch.zeros((), dtype=torch.int64, device="cuda"))
    torch.cuda.synchronize()

    x_static = x0.clone()
    offset = torch.zeros((), dtype=torch.int64, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (kernel compilation) outside the capture
        run(x_static.clone(), offset.clone())
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run(x_static, offset)
    offset.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
    assert int(offset) == steps
    assert (eager != mask_id).sum() > (x0 != mask_id).sum()  # tokens were revealed
    assert ((eager >= 0) & (eager < v)).all()


def test_rows_beyond_two_to_the_31_elements(backend):
    """N * V >= 2^31 (64-bit offsets): the last rows are sampled as the reference samples them alone."""
    v = 128256
    n = (2**31) // v + 3
    logits = torch.empty(n, v, dtype=torch.bfloat16, device="cuda")
    logits.normal_(0, 3)
    last = slice(n - 3, n)
    logits[n - 1, v - 1] = 100.0  # a near-one-hot last row, its winner at the very last element
    keys = torch.arange(n, dtype=torch.int64, device="cuda") * 7919
    tokens = gtl_kernels.sample(logits, seeds=keys, offset=3, backend=backend)
    greedy = gtl_kernels.sample(logits, temperature=0.0, seeds=keys, backend=backend)
    ref, _ = reference.sample(logits[last].cpu(), None, torch.ones(3), torch.ones(3), 0, keys[last].cpu(),
                              torch.tensor(3))
    assert tokens[n - 1].item() == v - 1 and greedy[n - 1].item() == v - 1
    assert torch.equal(greedy[last].cpu(), logits[last].float().argmax(-1).cpu())
    assert (tokens[last].cpu() == ref).sum() >= 2  # near-ties within fp32 rounding may differ (KERNEL_SPEC §3)
    del logits


def test_small_batches_split_rows_the_same_way(backend):
    """N = 1 and N = 8 (split across programs) give the rows' results of a large batch."""
    v = 128256
    g = torch.Generator(device="cuda").manual_seed(1)
    logits = (torch.randn(512, v, generator=g, device="cuda") * 2).to(torch.bfloat16)
    keys = torch.randint(0, 2**62, (512,), generator=g, device="cuda")
    full = gtl_kernels.sample(logits, seeds=keys, offset=9, backend=backend)
    for n in (1, 8):
        assert torch.equal(gtl_kernels.sample(logits[:n], seeds=keys[:n], offset=9, backend=backend), full[:n])
    full_k = gtl_kernels.sample(logits, seeds=keys, offset=9, top_k=50, backend=backend)
    assert torch.equal(gtl_kernels.sample(logits[:8], seeds=keys[:8], offset=9, top_k=50, backend=backend), full_k[:8])


def test_ratio_scorer_on_cuda_hands_the_model_what_it_does_on_the_cpu():
    """``RatioScorer``'s buffer layout (rows that keep their masked position across calls, the rows' moves planned
    with tensor ops) on CUDA tensors: every model call gets the sequences it gets on the CPU and the scores are equal,
    with rows passing to the next position and to another sequence mid-way, a short last row, and a model that
    overwrites its input (the buffer is rebuilt)."""
    from gtl_kernels.gtl.samplers import RatioScorer, SamplerStats

    gen = torch.Generator().manual_seed(0)
    z = torch.randint(0, 50, (4, 12), generator=gen)
    seq, pos = torch.randint(0, 4, (9,), generator=gen), torch.randint(0, 12, (9,), generator=gen)
    cand = torch.randint(0, 50, (9, 5), generator=gen)
    weights = torch.randint(-9, 10, (12,), generator=gen)

    def run(device, vandal):
        seen = []

        def model(x):
            seen.append(x.to("cpu", copy=True))  # a copy on both devices: the buffer changes after the call
            scores = (x * weights.to(x.device)).sum(1).float()  # integer arithmetic: exact on both devices
            if vandal:
                x.fill_(-1)
            return scores

        scores = RatioScorer(model, 7, SamplerStats())(z.to(device), seq.to(device), pos.to(device), cand.to(device))
        return scores.cpu(), seen

    for vandal in (False, True):
        (want, want_seen), (got, got_seen) = run("cpu", vandal), run("cuda", vandal)
        assert torch.equal(got, want) and len(got_seen) == len(want_seen) == 7
        assert all(torch.equal(a, b) for a, b in zip(got_seen, want_seen))
