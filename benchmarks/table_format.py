"""How the generated docs write numbers: a typographic minus, no "-0", mean ± std. One copy,
used by every docs generator (``docs_tables.py``, ``transfer_docs.py``)."""
from __future__ import annotations

import statistics

__all__ = ["num", "plus_minus"]


def num(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, a typographic minus, and no negative zero."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text.replace("-", "−")


def plus_minus(values: list[float], digits: int) -> str:
    """``mean ± std`` of ``values`` (the mean alone for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return num(mean, digits)
    return f"{num(mean, digits)} ± {num(statistics.stdev(values), digits)}"
