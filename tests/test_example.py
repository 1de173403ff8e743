"""The example (``examples/diffusion_lm.py``, ``make example``) runs, on tiny sizes: both samplers generate, greedy
outputs agree token for token, and the report lines are printed."""

import importlib.util
import pathlib

import torch

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "diffusion_lm.py"
TINY = ["--vocab", "300", "--length", "24", "--gen-length", "16", "--block-length", "8", "--steps", "8", "--dim", "32",
        "--layers", "1", "--heads", "2", "--batch", "2"]


def _example():
    spec = importlib.util.spec_from_file_location("diffusion_lm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_greedy_outputs_agree(capsys):
    ours, theirs = _example().main(TINY + ["--temperature", "0"])
    out = capsys.readouterr().out
    assert "identical tokens (greedy): yes" in out
    assert torch.equal(ours, theirs) and ours.shape == (2, 24) and not (ours[:, 8:] == 299).all()


def test_example_sampled_run_reports_throughput(capsys):
    ours, theirs = _example().main(TINY + ["--temperature", "1", "--cfg-scale", "1.0"])
    out = capsys.readouterr().out
    assert out.count("tokens/s") == 2 and "time outside the model, drop-in:" in out
    assert torch.equal(ours[:, :8], theirs[:, :8])  # the prompt is kept
