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


def mbmt_train_on_terminal(*args: str | Path) -> tuple[int, str]:
    """Run ``mbmt-train ARGS`` with stderr on a pseudo-terminal, as in a user's shell, with
    progress bars drawn from the start (the helper's 1 s delay set to 0, so that a short run
    shows them too). Returns the exit code and what reached the terminal."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    code = ("import sys, training.progress as p; p.progress.__kwdefaults__['delay'] = 0; "
            "from training.cli import main; sys.exit(main(sys.argv[1:]))")
    master, slave = pty.openpty()
    # a terminal 100 columns wide (a new pseudo-terminal has 0, which leaves bars empty)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=slave, timeout=300, env=ENV)
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")
