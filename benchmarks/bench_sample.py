"""Benchmarks of ``sample``: one exact draw per row. Floor ``torch.argmax``; the PyTorch way (MDLM): softmax, a float32
or float64 noise tensor, the race ``probs / Exp(1)``; ``torch.multinomial``; ``torch.compile`` of the fp32 step;
FlashInfer ``sampling_from_logits`` on CUDA when importable.

Run: `pytest benchmarks/bench_sample.py` (see benchmarks/conftest.py for the case set, devices and options).
"""

OP = "sample"


def test_sample(benchmark, bench_item, bench_session):
    bench_session.run(benchmark, *bench_item)
