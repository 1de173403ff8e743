"""Philox4x32-10 (Random123 known answers), the 64-bit uniforms and exponentials, key derivation (KERNEL_SPEC §3)."""

import decimal
import random
import importlib.util

import pytest
import torch
from helpers import ALPHA
from scipy import stats

from gtl_kernels import backends, derive_keys, reference

# Random123 kat_vectors, philox4x32_10: (counter, key) -> output
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def _key(k0, k1):
    v = (k1 << 32) | k0
    return v - 2**64 if v >= 2**63 else v


def _philox_op(backend):
    return backends.select("philox", backend.device, backend.name)


def test_known_answers(backend):
    keys = torch.tensor([_key(*k) for _, k, _ in KNOWN_ANSWERS], device=backend.device)
    counters = torch.tensor([c for c, _, _ in KNOWN_ANSWERS], device=backend.device)
    out = _philox_op(backend)(keys, counters)
    assert out.cpu().tolist() == [list(o) for _, _, o in KNOWN_ANSWERS]


def test_bit_identical_to_reference(backend):
    g = torch.Generator().manual_seed(0)
    keys = torch.randint(-(2**63), 2**63 - 1, (5000,), generator=g)
    counters = torch.randint(0, 2**32, (5000, 4), generator=g)
    out = _philox_op(backend)(keys.to(backend.device), counters.to(backend.device))
    assert torch.equal(out.cpu(), reference.philox4x32(keys, counters))


@pytest.mark.skipif(importlib.util.find_spec("gtl_kernels._C") is None, reason="C++ extension not built")
def test_cpp_extension_philox():
    """The generator of the shared C++ header (csrc/include/gtl/philox.h), exposed by gtl_kernels._C."""
    import gtl_kernels._C  # noqa: F401

    g = torch.Generator().manual_seed(1)
    keys = torch.randint(-(2**63), 2**63 - 1, (3000,), generator=g)
    counters = torch.randint(0, 2**32, (3000, 4), generator=g)
    assert torch.equal(torch.ops.gtl.philox(keys, counters), reference.philox4x32(keys, counters))
    keys = torch.tensor([_key(*k) for _, k, _ in KNOWN_ANSWERS])
    counters = torch.tensor([c for c, _, _ in KNOWN_ANSWERS])
    assert torch.ops.gtl.philox(keys, counters).tolist() == [list(o) for _, _, o in KNOWN_ANSWERS]


def _exact_exponential(x: int) -> float:
    """-ln((x + 0.5) / 2**64) to 40 digits."""
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        u = (decimal.Decimal(x) + decimal.Decimal("0.5")) / decimal.Decimal(2**64)
        return float(-u.ln())


def test_exponential64_relative_error_over_the_whole_range():
    """E = -ln U keeps a small relative error near U = 0 (E ~ 44), U = 1/2 and U = 1 (E ~ 2**-65)."""
    xs = [0, 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2**40, 2**64 - 2, 2**64 - 1]
    rng = random.Random(2)
    xs += [rng.getrandbits(64) >> rng.randrange(64) for _ in range(300)]  # every magnitude
    w0 = torch.tensor([x >> 32 for x in xs])
    w1 = torch.tensor([x & 0xFFFFFFFF for x in xs])
    got = reference.exponential_from_bits(w0, w1)
    for x, e in zip(xs, got.tolist()):
        exact = _exact_exponential(x)
        assert abs(e - exact) <= 1e-14 * exact, (x, e, exact)


def test_uniform_and_exponential_laws():
    """Kolmogorov-Smirnov: U ~ Uniform(0, 1) and E ~ Exp(1) over 200k counters (false-failure rate ALPHA)."""
    seeds = torch.tensor([123456789])
    a = torch.arange(200_000).view(1, -1)
    u = reference.uniform64(seeds, a, torch.tensor(5), 0)[0].numpy()
    e = reference.exponential64(seeds, a, torch.tensor(5), 2)[0].numpy()
    assert stats.kstest(u, "uniform").pvalue > ALPHA
    assert stats.kstest(e, "expon").pvalue > ALPHA
    assert 0 < u.min() and u.max() < 1


def test_streams_and_offsets_are_independent_draws():
    seeds = torch.tensor([7])
    a = torch.arange(50_000).view(1, -1)
    base = reference.uniform64(seeds, a, torch.tensor(0), 0)[0]
    for other in (
        reference.uniform64(seeds, a, torch.tensor(0), 1)[0],
        reference.uniform64(seeds, a, torch.tensor(1), 0)[0],
        reference.uniform64(seeds, a, torch.tensor(2**32), 0)[0],  # the offset's high word is part of the counter
        reference.uniform64(torch.tensor([7 + 2**32]), a, torch.tensor(0), 0)[0],  # so is the key's high word
    ):
        assert abs(stats.pearsonr(base.numpy(), other.numpy()).statistic) < 0.03
        assert not torch.equal(base, other)


def test_derive_keys():
    seeds = torch.tensor([[1], [2], [-(2**63)]])
    keys = derive_keys(seeds, torch.arange(1000))
    assert keys.shape == (3, 1000) and keys.unique().numel() == 3000
    assert torch.equal(derive_keys(torch.tensor([2]), torch.arange(1000)), keys[1])  # no dependence on the batch
    assert torch.equal(derive_keys(torch.tensor(2), torch.tensor([999])), keys[1, 999:])
    # documented definition: key = (w0 << 32) | w1 of Philox(key=seed, counter=(pos_lo, pos_hi, 0, 3))
    w = reference.philox4x32(torch.tensor([2]), torch.tensor([[5, 0, 0, 3]]))[0].tolist()
    assert (int(keys[1, 5]) & (2**64 - 1)) == (w[0] << 32) | w[1]
