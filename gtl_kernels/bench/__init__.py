"""Benchmark harness (KERNEL_SPEC §8): every op against the one-read floor, the PyTorch way and the peers.

Modules:

* :mod:`.cases`     what is measured: ops x shapes x dtypes x bias, the inputs, the bytes, the correctness checks;
* :mod:`.timing`    medians of wall clock (CPU) or CUDA events / ``triton.testing.do_bench`` (GPU);
* :mod:`.baselines` ``torch.argmax`` (the floor), the MDLM-style PyTorch step, ``torch.compile`` of it, the copy
  bandwidth, FlashInfer when importable;
* :mod:`.runner`    runs a set of cases and returns one JSON-ready document;
* :mod:`.report`    text table, ``docs/PERF.md`` sections; :mod:`.plot` the PNG; :mod:`.e2e` sampler steps;
* :mod:`.cli`       the ``gtl-bench`` command.

The pytest-benchmark files in ``benchmarks/`` use the same cases, baselines and checks.
"""
