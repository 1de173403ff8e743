"""Generated inputs for the property-based tests (tests/test_fuzz.py).

Hypothesis draws a small *description* of a case (shape, dtype, layout, value scale, special values, per-row or
scalar parameters, a torch seed); :func:`build` turns it into tensors. Shrinking then works on the description, so a
failure is reported as a short, readable case.

Magnitudes are bounded so that the fp32 score ``(logits + gamma * bias) / T`` stays finite (|s| < 1e37): the
kernels compute in fp32 (KERNEL_SPEC §1) and the reference in float64, so a score that overflows fp32 is a
different input for the two; that regime is pinned by its own test (tests/test_fuzz.py::test_fp32_score_overflow).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from hypothesis import strategies as st

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BIAS_DTYPES = DTYPES + (torch.float64,)
LAYOUTS = ("contiguous", "transposed", "padded", "strided", "broadcast")
SCALES = (1e-30, 1e-3, 1.0, 3.0, 30.0, 1e4, 1e30)
TEMPERATURES = (0.0, 1e-3, 0.5, 1.0, 2.5, 1e3, math.inf)
SPECIALS = ("nan", "+inf", "-inf", "row-inf", "denormal", "tiny", "huge", "tie")


@dataclasses.dataclass(frozen=True)
class Case:
    """One generated input (the description; :func:`build` makes the tensors)."""

    n: int
    v: int
    three_d: bool
    dtype: torch.dtype
    bias_dtype: torch.dtype | None  # None: no bias
    layout: str
    scale: float
    specials: tuple[str, ...]
    gamma: float | None  # None: per-row gamma in [-2, 3] with some zeros
    temperature: float | None  # None: per-row temperatures from TEMPERATURES
    top_k: int
    seed: int


@st.composite
def cases(draw, max_elements: int = 50_000, max_v: int = 70_000, max_n: int = 300) -> Case:
    """A random case with ``N * V <= max_elements`` (the float64 reference runs every case)."""
    v = draw(st.one_of(st.integers(1, 40), st.integers(1, 3000), st.integers(1, max_v),
                       st.sampled_from([1, 2, 1023, 1024, 1025, 2048, 2049, max_v])))
    v = min(v, max_v)
    n = draw(st.integers(0, max(1, min(max_n, max_elements // v))))
    return Case(
        n=n,
        v=v,
        three_d=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)),
        bias_dtype=draw(st.one_of(st.none(), st.sampled_from(BIAS_DTYPES))),
        layout=draw(st.sampled_from(LAYOUTS)),
        scale=draw(st.sampled_from(SCALES)),
        specials=tuple(draw(st.lists(st.sampled_from(SPECIALS), max_size=3, unique=True))),
        gamma=draw(st.one_of(st.none(), st.sampled_from([0.0, 1.0, -0.5, 2.0]))),
        temperature=draw(st.one_of(st.none(), st.sampled_from(TEMPERATURES))),
        top_k=draw(st.one_of(st.just(0), st.integers(0, 12), st.integers(0, v + 2))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _with_layout(x: torch.Tensor, layout: str, gen: torch.Generator) -> torch.Tensor:
    """``x`` ([N, V], contiguous) as a view with the given memory layout; the memory around a padded or strided view
    holds NaN, so a kernel that reads outside the view makes its row invalid and the test sees it."""
    n, v = x.shape
    if layout == "transposed":
        return x.t().contiguous().t()
    if layout == "padded":
        pad = int(torch.randint(1, 70, (), generator=gen))
        base = torch.full((n, v + pad), math.nan, dtype=x.dtype)
        base[:, :v] = x
        return base[:, :v]
    if layout == "strided":
        base = torch.full((n, 2 * v), math.nan, dtype=x.dtype)
        base[:, ::2] = x
        return base[:, ::2]
    if layout == "broadcast":
        return x[:1].expand(n, v) if n else x
    return x


def _apply_specials(x: torch.Tensor, specials, gen: torch.Generator) -> None:
    """Write the requested special values into random places of ``x`` (float64, in place)."""
    n, v = x.shape
    if n == 0:
        return

    def some_rows():
        return torch.randint(0, n, (max(1, n // 4),), generator=gen)

    def some_cells(count):
        return torch.randint(0, n, (count,), generator=gen), torch.randint(0, v, (count,), generator=gen)

    count = max(1, (n * v) // 500)
    for kind in specials:
        if kind == "nan":
            x[some_cells(1)] = math.nan
        elif kind == "+inf":
            x[some_cells(min(count, 3))] = math.inf
        elif kind == "-inf":
            x[some_cells(count * 50)] = -math.inf
        elif kind == "row-inf":
            x[some_rows()] = -math.inf
        elif kind == "denormal":
            x[some_cells(count * 20)] = 1e-40
        elif kind == "tiny":
            x[some_cells(count * 20)] = 1e-30
        elif kind == "huge":
            x[some_cells(min(count, 4))] = 1e30
        elif kind == "tie":  # an exact tie at the top of some rows
            rows = some_rows()
            top = torch.where(x[rows].isnan(), -math.inf, x[rows]).amax(-1, keepdim=True).clamp(min=0) + 1
            cols = torch.randint(0, v, (len(rows), 2), generator=gen)
            x[rows.unsqueeze(-1), cols] = top


@dataclasses.dataclass
class Built:
    """The tensors of a case, in the shapes the public API takes."""

    logits: torch.Tensor  # [N, V] or [B, L, V]
    bias: torch.Tensor | None
    gamma: float | torch.Tensor  # scalar or float32 [N]
    temperature: float | torch.Tensor
    lead: torch.Size
    gen: torch.Generator  # continues the case's random stream (for x_t, index, stay_prob)


def _split(n: int) -> tuple[int, int]:
    """``(B, L)`` with ``B * L == n`` (as square as small factors allow)."""
    for b in (4, 3, 2):
        if n % b == 0 and n > b:
            return b, n // b
    return 1, n


def build(case: Case) -> Built:
    gen = torch.Generator().manual_seed(case.seed)
    n, v = case.n, case.v
    x = torch.randn(n, v, generator=gen, dtype=torch.float64) * case.scale
    _apply_specials(x, case.specials, gen)
    logits = _with_layout(x.to(case.dtype), case.layout, gen)
    bias = None
    if case.bias_dtype is not None:
        b = torch.randn(n, v, generator=gen, dtype=torch.float64) * min(case.scale, 1e30)
        if "nan" in case.specials and n:
            b[0, 0] = math.nan  # a NaN in the bias: invalid unless the row's gamma is 0
        bias = _with_layout(b.to(case.bias_dtype), case.layout, gen)
    if case.gamma is None:
        gamma = torch.rand(n, generator=gen) * 5 - 2
        gamma[torch.rand(n, generator=gen) < 0.25] = 0.0
    else:
        gamma = case.gamma
    if case.temperature is None:
        pick = torch.randint(0, len(TEMPERATURES), (n,), generator=gen)
        temperature = torch.tensor(TEMPERATURES, dtype=torch.float32)[pick]
    else:
        temperature = case.temperature
    lead = torch.Size([n])
    if case.three_d and n:
        b_, l_ = _split(n)
        lead = torch.Size([b_, l_])
        logits = _view3(logits, b_, l_)
        bias = None if bias is None else _view3(bias, b_, l_)
    return Built(logits, bias, gamma, temperature, lead, gen)


def _view3(t: torch.Tensor, b: int, l: int) -> torch.Tensor:
    try:
        return t.view(b, l, t.shape[-1])
    except RuntimeError:  # a layout that cannot be split without a copy (e.g. a broadcast row)
        return t.reshape(b, l, t.shape[-1])


def per_row(value, n: int) -> torch.Tensor:
    """A scalar or ``[N]`` parameter as float32 ``[N]`` (what the backends receive)."""
    if isinstance(value, torch.Tensor):
        return value.float().reshape(n)
    return torch.full((n,), float(value), dtype=torch.float32)
