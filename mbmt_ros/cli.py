"""The exit policy every console script shares (``mbmt-train``, ``mbmt-engine``).

A user-facing failure (:class:`~mbmt_ros.errors.MbmtError`) is printed as one line,
``<program> <command>: error: <message>``, and exits with status 2; Ctrl-C prints
``interrupted`` and exits with 130 (the shell's convention for SIGINT). Anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import MbmtError

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "run_command"]

#: Exit status of a failure the user can act on.
EXIT_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def run_command(program: str, command: str, action: Callable[[], int | None]) -> int:
    """Run ``action`` under the exit policy; its return value (``None`` = 0) is the status."""
    try:
        return int(action() or 0)
    except MbmtError as exc:
        print(f"{program} {command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{program} {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
