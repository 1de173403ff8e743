"""Benchmarks of ``guided_log_softmax``: fp32 [N, V] guided log-probabilities. Floors: ``torch.argmax`` and
``torch.log_softmax`` (which writes [N, V] too); the PyTorch way: a separate add of the bias, then log_softmax.

Run: `pytest benchmarks/bench_guided_log_softmax.py` (see benchmarks/conftest.py for the case set, devices and options).
"""

OP = "guided_log_softmax"


def test_guided_log_softmax(benchmark, bench_item, bench_session):
    bench_session.run(benchmark, *bench_item)
