"""Benchmarks of ``masked_transition``: one reverse step of absorbing diffusion, every position masked and
``stay_prob = 0`` (every row read and sampled). Floor ``torch.argmax``; the PyTorch way: MDLM's ``_ddpm_update``
(softmax, scaled copy, noise tensor in float32 or float64, race, copy of unmasked positions) and its
``torch.compile``.

Run: `pytest benchmarks/bench_masked_transition.py` (see benchmarks/conftest.py for the case set, devices and options).
"""

OP = "masked_transition"


def test_masked_transition(benchmark, bench_item, bench_session):
    bench_session.run(benchmark, *bench_item)
