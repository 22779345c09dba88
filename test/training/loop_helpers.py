"""Helpers of the data-loop tests (select, CVAT label export/import): the CLI, small datasets
and a tree digest that shows whether a command changed anything."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

MBMT_TRAIN = Path(sys.executable).parent / "mbmt-train"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def mbmt_train(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``mbmt-train ARGS`` as a user would; ``check`` asserts exit code 0."""
    proc = subprocess.run([str(MBMT_TRAIN), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=ENV)
    if check:
        assert proc.returncode == 0, f"mbmt-train {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The CLI's error line; asserts exit code 2 and no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"mbmt-train {command}:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
