"""Where an artefact came from: the git commit of the code that made it and whether the
tree had uncommitted changes. One copy, used by the bundle export (``meta.json``
provenance) and by every benchmark's raw results (``benchmarks/provenance.py``)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

__all__ = ["REPO", "git", "git_state"]

#: The source checkout this package runs from (a non-editable install has no git there).
REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    """``git args...`` in the repository: its output (trailing whitespace stripped; leading
    kept, ``status --porcelain`` columns need it), or ``"unknown"`` when git fails."""
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True, timeout=30).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_state() -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}``: tracked files changed
    since the commit make the tree dirty (untracked files do not)."""
    commit = git("rev-parse", "HEAD")
    if commit == "unknown":
        return {"git_commit": None, "git_dirty": None}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": dirty == "unknown" or bool(dirty.strip())}
