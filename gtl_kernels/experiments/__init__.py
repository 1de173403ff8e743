"""Runnable experiments (``python -m gtl_kernels.experiments.markov``)."""
