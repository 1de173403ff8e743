"""Benchmarks of ``topk_log_softmax`` (k = 512): the candidates of GTL's proposal. Floor ``torch.argmax``;
the PyTorch way: log_softmax of the guided scores, then ``topk``.

Run: `pytest benchmarks/bench_topk_log_softmax.py` (see benchmarks/conftest.py for the case set, devices and options).
"""

OP = "topk_log_softmax"


def test_topk_log_softmax(benchmark, bench_item, bench_session):
    bench_session.run(benchmark, *bench_item)
