"""An engine-cache write interrupted midway (SIGKILL while the file is being written) leaves the
previous engine intact - or no engine - never a truncated one under the engine's name, and
the cache listing ignores the temporary. TensorRT is not needed: the cache's atomic write
path (``write_engine``) is what a build ends with."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbmt_ros.runtime.engine_cache import (
    EngineKey,
    StaleEngine,
    list_engines,
    read_engine,
    write_engine,
)

KEY = EngineKey("cd" * 32, "Test GPU", "8.9", "10.3.0", "fp16", 1, False)
OLD = b"old engine " * 1000

_WRITER = """
import sys
from pathlib import Path
from mbmt_ros.runtime.engine_cache import EngineKey, write_engine
key = EngineKey("cd" * 32, "Test GPU", "8.9", "10.3.0", "fp16", 1, False)
write_engine(Path(sys.argv[1]), key, b"N" * (int(sys.argv[2]) << 20))
"""


def _kill_mid_write(path: Path, mib: int) -> bool:
    """Start a writer of a ``mib`` MiB engine; SIGKILL it once its temporary file has data.
    True if it was caught mid-write (the temporary still exists afterwards)."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(mib)])
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            temps = list(path.parent.glob(f".{path.name}.*.tmp"))
            if temps and temps[0].stat().st_size > 0:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return bool(list(path.parent.glob(f".{path.name}.*.tmp")))
            time.sleep(0.0005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("previous", [True, False], ids=["over-an-old-engine", "first-build"])
def test_sigkill_during_engine_write_never_leaves_a_truncated_engine(tmp_path: Path,
                                                                     previous: bool) -> None:
    path = tmp_path / KEY.filename()
    if previous:
        write_engine(path, KEY, OLD)
    for mib in (64, 256, 512):  # bigger payloads if the writer was too quick to be caught
        if _kill_mid_write(path, mib):
            break
    else:
        pytest.fail("could not interrupt the engine write midway")
    if previous:
        assert read_engine(path, KEY) == OLD  # the old engine, complete
    else:
        assert not path.exists()
        with pytest.raises(StaleEngine, match="no cached engine"):
            read_engine(path, KEY)  # -> the backend builds a new one
    # the listing (mbmt-engine info) sees only complete engines, not the temporary
    assert [r.path for r in list_engines(tmp_path)] == ([path] if previous else [])
    # the next write succeeds next to the leftover temporary
    write_engine(path, KEY, b"new")
    assert read_engine(path, KEY) == b"new"
