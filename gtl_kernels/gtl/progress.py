"""Progress bars of the training loops and samplers (tqdm), with one screen line per worker process.

When several processes draw bars on one terminal (``gtl-markov --jobs``), each worker calls :func:`set_line` once so
its bars stay on their own line instead of overwriting each other.
"""

from __future__ import annotations

_LINE: int | None = None


def set_line(line: int | None) -> None:
    """Draw this process's bars on terminal line ``line`` (0 = the first); ``None`` restores tqdm's default."""
    global _LINE
    _LINE = line


def bar(total: int, desc: str, enabled: bool = True):
    """A transient tqdm bar of ``total`` steps, or ``None`` when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, position=_LINE)
