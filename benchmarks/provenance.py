"""What every benchmark's raw results record about where they came from: the git commit (and
whether the tree was dirty) and the CPU model. One copy, imported by the benchmark scripts."""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

__all__ = ["git", "cpu_model"]


def git(*args: str) -> str:
    """``git args...`` in the repository: its output (trailing whitespace stripped; leading
    kept, ``status --porcelain`` columns need it), or ``"unknown"`` when git fails."""
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True, timeout=30).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
