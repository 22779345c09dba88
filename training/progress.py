"""Progress bars for the long loops of ``mbmt-train`` (tqdm on stderr).

``extract-bag``, ``synth``, ``pseudo-label``, ``evaluate`` and ``score`` wrap their per-frame
loops in :func:`progress`. A bar is shown only where someone watches: never when stderr is
not a terminal (a log file, CI, a pipe) nor when the console is quiet (``mbmt-train -q``,
:func:`training.console.console_quiet`), and only once the work has taken longer than ``delay``
seconds, so short runs print nothing.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["progress", "progress_enabled"]


def progress_enabled() -> bool:
    """True when stderr is a terminal and the console is not quiet."""
    from training.console import console_quiet

    stream = sys.stderr
    is_tty = bool(getattr(stream, "isatty", None) and stream.isatty())
    return is_tty and not console_quiet()


def progress(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None = None,
             unit: str = "frame", delay: float = 1.0) -> Any:
    """A ``tqdm`` bar over ``iterable`` (or a manual one, ``.update(n)``, when None),
    disabled unless :func:`progress_enabled`; use it as an iterable or a context manager."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, delay=delay, leave=False,
                file=sys.stderr, disable=not progress_enabled(), dynamic_ncols=True)
