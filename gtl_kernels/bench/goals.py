"""The performance goals of the issues, as checks on one measured result.

CPU (issue 3, 2-core machine): time / ``torch.argmax`` time on the same logits, or / ``torch.log_softmax`` time;
and (issue 17) against the streaming-read floor: time / ``torch.amax`` time (one read of the logits, same dtype),
over two reads with a dense bias, and ``guided_log_softmax`` over a copy of the logits (read + write).
GPU (issues 4 and 8): time / argmax at large N, fraction of the measured copy bandwidth, speed-up over the PyTorch
step with float64 noise and over its ``torch.compile``, and an absolute time for one row of a 128k vocabulary.
A goal is evaluated for the fastest non-reference backend of a case.
"""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Goal:
    text: str  # e.g. "<= 1.5x argmax"
    applies: Callable[[dict], bool]  # case record -> bool
    value: Callable[[dict], float | None]  # result record -> measured value (None: not measured)
    met: Callable[[float], bool]
    fmt: str = "{:.2f}x"


def _ratio(base: str):
    return lambda r: r.get("ratio", {}).get(base)


def _speedup(base: str):
    return lambda r: (1.0 / r["ratio"][base]) if base in r.get("ratio", {}) else None


def _two_reads(r: dict) -> float | None:
    """Time over two streaming reads (logits and a bias of the same size): half the ratio to one ``amax``."""
    x = r.get("ratio", {}).get("amax")
    return None if x is None else x / 2


def _is(op=None, bias=None, kind=None, min_n=None, n=None, v=None):
    def f(c: dict) -> bool:
        return (
            (op is None or c["op"] in ((op,) if isinstance(op, str) else op))
            and (bias is None or c["bias"] == bias)
            and (min_n is None or c["n"] >= min_n)
            and (n is None or c["n"] == n)
            and (v is None or c["v"] == v)
        )

    return f


SAMPLING = ("sample", "masked_transition")

GOALS: dict[str, list[Goal]] = {
    "cpu": [
        Goal("<= 1.5x argmax", _is(SAMPLING, bias=False), _ratio("argmax"), lambda x: x <= 1.5),
        Goal("<= 2.5x argmax", _is("sample", bias=True), _ratio("argmax"), lambda x: x <= 2.5),
        Goal("<= 1.0x log_softmax", _is("guided_log_softmax", bias=False), _ratio("log_softmax"), lambda x: x <= 1.0),
        Goal("<= 1.5x argmax", _is("confidence", bias=False), _ratio("argmax"), lambda x: x <= 1.5),
        Goal("<= 3.0x argmax", _is("topk_log_softmax", bias=False), _ratio("argmax"), lambda x: x <= 3.0),
        # Against the streaming read of the logits (torch.amax, same dtype): the true floor of one read.
        Goal("<= 1.5x amax", _is(SAMPLING + ("confidence",), bias=False), _ratio("amax"), lambda x: x <= 1.5),
        Goal("<= 1.5x two reads", _is(SAMPLING + ("confidence",), bias=True), _two_reads, lambda x: x <= 1.5),
        Goal("<= 1.2x copy", _is("guided_log_softmax", bias=False), _ratio("copy"), lambda x: x <= 1.2),
        Goal("<= 3.0x amax", _is("topk_log_softmax", bias=False), _ratio("amax"), lambda x: x <= 3.0),
    ],
    "cuda": [
        Goal("<= 1.15x argmax", _is(SAMPLING, bias=False, min_n=8192), _ratio("argmax"), lambda x: x <= 1.15),
        Goal(">= 85% copy BW", _is(SAMPLING, min_n=8192), lambda r: r.get("bw_fraction"), lambda x: x >= 0.85,
             "{:.0%}"),
        Goal(">= 10x pytorch-fp64", _is(SAMPLING), _speedup("pytorch-fp64"), lambda x: x >= 10, "{:.1f}x"),
        Goal(">= 3x compile", _is(SAMPLING), _speedup("compile"), lambda x: x >= 3, "{:.1f}x"),
        Goal("< 20 us", _is(SAMPLING, n=1, v=128256), lambda r: r.get("time_s"), lambda x: x < 20e-6, "{:.2e} s"),
    ],
}


def evaluate(device_type: str, case: dict, result: dict) -> list[tuple[str, str, bool]]:
    """``[(goal text, measured value as text, met)]`` for the goals that apply to ``case`` and were measured."""
    out = []
    for g in GOALS.get("cuda" if device_type == "cuda" else "cpu", []):
        if not g.applies(case):
            continue
        x = g.value(result)
        if x is not None:
            out.append((g.text, g.fmt.format(x), bool(g.met(x))))
    return out


def best_backend(case: dict) -> dict | None:
    """The fastest measured backend of a case other than the ``torch`` reference (None if there is none)."""
    timed = [r for r in case["results"] if r["role"] == "backend" and r["impl"] != "torch" and r.get("time_s")]
    return min(timed, key=lambda r: r["time_s"]) if timed else None
