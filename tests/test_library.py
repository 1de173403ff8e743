"""``torch.library`` registration (KERNEL_SPEC §5): schemas shared by every backend, fakes, opcheck, torch.compile."""

import re
from pathlib import Path

import pytest
import torch

import gtl_kernels
from gtl_kernels import _library, backends


def _args(op, device, n=5, v=40):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, v, generator=g).to(device)
    bias = torch.randn(n, v, generator=g).to(device)
    gamma = torch.full((n,), 0.5, device=device)
    temperature = torch.full((n,), 1.0, device=device)
    seeds = torch.arange(n, dtype=torch.int64, device=device)
    offset = torch.tensor(3, dtype=torch.int64, device=device)
    if op == "guided_log_softmax":
        return (logits, bias, gamma, temperature)
    if op == "sample":
        return (logits, bias, gamma, temperature, 5, seeds, offset, None)
    if op == "masked_transition":
        x_t = torch.tensor([1, 2, 2, 0, 2], device=device)
        stay = torch.full((n,), 0.3, device=device)
        return (x_t, logits, bias, gamma, temperature, 0, stay, 2, seeds, offset)
    if op == "topk_log_softmax":
        return (logits, 4, bias, gamma, temperature)
    if op == "confidence":
        return (logits, bias, gamma, temperature, "margin")
    return (seeds, torch.randint(0, 2**32, (n, 4), generator=g).to(device))


@pytest.mark.parametrize("op", list(_library.SCHEMAS))
def test_opcheck(backend, op):
    registered = backends.select(op, backend.device, backend.name)
    torch.library.opcheck(registered, _args(op, backend.device))


@pytest.mark.parametrize("op", list(_library.SCHEMAS))
def test_schemas_match_the_contract(backend, op):
    """Every backend registers the same arguments, types and returns (only the op name differs)."""
    schema = backends.select(op, backend.device, backend.name).default._schema
    expected = torch.ops.gtl.__getattr__(f"{op}_torch").default._schema
    assert [(a.name, str(a.type)) for a in schema.arguments] == [(a.name, str(a.type)) for a in expected.arguments]
    assert [str(r.type) for r in schema.returns] == [str(r.type) for r in expected.returns]


def test_fake_shapes():
    """Fake implementations give the real outputs' shapes and dtypes (meta tensors, no data)."""
    for op in _library.OPS:
        args = _args(op, "cpu")
        real = getattr(torch.ops.gtl, f"{op}_torch")(*args)
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
            fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            fake = getattr(torch.ops.gtl, f"{op}_torch")(*fake_args)
        real, fake = (real, fake) if isinstance(real, tuple) else ((real,), (fake,))
        assert [(r.shape, r.dtype) for r in real] == [(f.shape, f.dtype) for f in fake]


def _sampling_loop(x, logits, keys, steps: int, mask_id: int, backend: str):
    for step in range(steps):
        stay = (steps - 1 - step) / (steps - step)
        x = gtl_kernels.masked_transition(
            x, logits, stay_prob=stay, mask_id=mask_id, seeds=keys, offset=step, backend=backend
        )
    return x


def test_compiled_sampling_loop_matches_eager(backend):
    """A 10-step masked_transition loop under torch.compile(fullgraph=True) draws the same tokens as eager."""
    if backend.interpreted:
        pytest.skip("torch.compile cannot trace a Triton op on CPU tensors")
    torch._dynamo.reset()
    b, l, v, mask_id = 3, 10, 50, 49
    logits = torch.randn(b, l, v, generator=torch.Generator().manual_seed(1)).to(backend.device)
    x0 = torch.full((b, l), mask_id, device=backend.device)
    keys = gtl_kernels.derive_keys(torch.tensor([[11], [12], [13]]), torch.arange(l)).to(backend.device)
    eager = _sampling_loop(x0, logits, keys, 10, mask_id, backend.name)
    compiled = torch.compile(_sampling_loop, fullgraph=True)
    out = compiled(x0, logits, keys, 10, mask_id, backend.name)
    assert torch.equal(out, eager)
    assert (out != mask_id).all(), "the last step reveals every position (stay_prob 0)"


def test_compiled_top_k_sample_with_split_rows_matches_eager(backend):
    """Few long rows with a top-k: the Triton backend splits each row and merges the split buffers in a fold kernel
    launched with a register limit (``_common.TOPK_MERGE_MAXNREG``), a launch keyword that is not a kernel
    argument. Under torch.compile(fullgraph=True) the draws equal eager's. A GPU check: the interpreter cannot be
    traced, and the other backends have no such launch."""
    if backend.name != "triton" or backend.interpreted:
        pytest.skip("only the compiled Triton backend launches the fold")
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(2, 60000, generator=g) * 3).to(backend.device)
    keys = torch.tensor([21, 22], device=backend.device)

    def draw(x):
        return gtl_kernels.sample(x, top_k=300, seeds=keys, offset=4, backend=backend.name)

    eager = draw(logits)
    assert torch.equal(torch.compile(draw, fullgraph=True)(logits), eager)
    assert eager.min() >= 0 and eager.max() < 60000


def test_available_backends_reports_reasons():
    infos = gtl_kernels.available_backends()
    assert set(infos) == {"torch", "cpu", "triton", "cuda"}
    assert infos["torch"].available
    for info in infos.values():
        assert isinstance(info.reason, str) and info.reason


def test_outputs_are_poisoned_before_each_call():
    """The suite's autouse fixture fills every fresh allocation (what kernels write into) with NaN / INT64_MAX, so an
    output element a kernel forgets to write fails the comparisons instead of passing as a stale plausible value."""
    assert torch.empty(4).isnan().all()
    assert (torch.empty(4, dtype=torch.int64) == torch.iinfo(torch.int64).max).all()


def test_schemas_are_defined_once():
    """The schemas live in ``_library.SCHEMAS`` only: the C++ sources register kernels, never a schema."""
    root = Path(__file__).resolve().parents[1] / "csrc"
    sources = [p for p in root.rglob("*") if p.suffix in (".cpp", ".cu", ".h", ".cuh")]
    assert sources, "csrc not found"
    defining = [str(p) for p in sources if re.search(r"TORCH_LIBRARY(_FRAGMENT)?\s*\(\s*gtl\s*,|\.def\(\"\w+\(",
                                                        p.read_text())]
    assert not defining, f"schemas defined outside gtl_kernels/_library.py: {defining}"


def test_confidence_kinds_are_listed_once_per_language():
    """Python has one list (``reference.CONFIDENCE_KINDS``), C++ one (``gtl/confidence_kind.h``, used by the CPU and
    CUDA glue); they name the same kinds in the same order (the order is the kernels' kind index: the parser maps the
    i-th name to ``ConfidenceKind`` i, so the enum's values must follow the list, and the emulator's ctypes values are
    the positions in the Python list)."""
    from gtl_kernels import reference

    root = Path(__file__).resolve().parents[1]
    header = (root / "csrc/include/gtl/confidence_kind.h").read_text()
    listed = re.search(r"kConfidenceKinds\[\] = \{([^}]*)\}", header).group(1)
    assert tuple(re.findall(r'"(\w+)"', listed)) == reference.CONFIDENCE_KINDS
    assert re.search(r'kConfidenceKindList = "([^"]*)"', header).group(1) == ", ".join(reference.CONFIDENCE_KINDS)
    enum = re.search(r"enum class ConfidenceKind\b[^{]*\{([^}]*)\}", header).group(1)
    values = {re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): int(v)  # kNegEntropy = 2 -> neg_entropy: 2
              for name, v in re.findall(r"k(\w+)\s*=\s*(\d+)", enum)}
    assert values == {kind: i for i, kind in enumerate(reference.CONFIDENCE_KINDS)}
    sources = [p for d in ("gtl_kernels", "tests/cuda") for p in (root / d).rglob("*.py")]
    spelled = [str(p) for p in sources
               if re.search(r"\(\s*\"max_prob\",\s*\"margin\"|\"max_prob\"\s*:\s*0", p.read_text())]
    assert spelled == [str(Path(reference.__file__))], f"confidence kinds listed outside reference.py: {spelled}"


def test_chunk_size_is_written_once_per_language():
    """The chunk size of the two-level race (KERNEL_SPEC §3) is ``reference.CHUNK`` in Python (the Triton kernels
    import it) and ``kChunk`` in ``gtl/philox.h`` for the CPU and CUDA kernels; the two must be equal."""
    from gtl_kernels import reference

    header = (Path(__file__).resolve().parents[1] / "csrc/include/gtl/philox.h").read_text()
    (k_chunk,) = re.findall(r"\bkChunk\s*=\s*(\d+)\s*;", header)
    assert int(k_chunk) == reference.CHUNK
    common = pytest.importorskip("gtl_kernels.triton._common", reason="Triton is not installed")
    assert common.CHUNK == reference.CHUNK and common.CHUNK_C.value == reference.CHUNK
