"""What every benchmark's raw results record about where they came from: the git commit (and
whether the tree was dirty) and the CPU model. One copy, imported by the benchmark scripts;
the git part is :mod:`training.provenance`, which the bundle export uses too."""
from __future__ import annotations

from pathlib import Path

from training.provenance import git

__all__ = ["git", "cpu_model"]


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
