"""Benchmarks of ``confidence``: planner scores (max_prob, margin, neg_entropy). Floor ``torch.argmax``; the
PyTorch way (LLaDA / Fast-dLLM): a full softmax, then max / top-2 / entropy.

Run: `pytest benchmarks/bench_confidence.py` (see benchmarks/conftest.py for the case set, devices and options).
"""

OP = "confidence"


def test_confidence(benchmark, bench_item, bench_session):
    bench_session.run(benchmark, *bench_item)
