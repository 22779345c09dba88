"""cuda-python older than 12.6.1 has no ``cuda.bindings``: the TensorRT backend says the
installed version is too old (and which to install) instead of "cuda-python is not
installed", which sent Jetson users to reinstall the same old version."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mbmt_ros.runtime.cuda_device import cuda_python_problem

PROBE = """
from mbmt_ros.runtime.backends.tensorrt_backend import availability
from mbmt_ros.runtime.cuda_device import cudart
print("availability:", availability("cuda"))
try:
    cudart()
except ImportError as exc:
    print("cudart:", exc)
"""


def _old_cuda_python(site: Path, version: str = "12.2.0") -> Path:
    """A cuda-python of the 12.2 layout (``cuda.cudart``, no ``cuda.bindings``) with its
    distribution metadata, and a ``tensorrt`` to be found, in the folder ``site``."""
    (site / "cuda").mkdir(parents=True)
    (site / "cuda" / "__init__.py").write_text("")
    (site / "cuda" / "cudart.py").write_text("")
    meta = site / f"cuda_python-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: cuda-python\nVersion: {version}\n")
    (site / "tensorrt").mkdir()
    (site / "tensorrt" / "__init__.py").write_text("__version__ = '10.3.0'\n")
    return site


def test_old_cuda_python_is_named_too_old_not_missing(tmp_path: Path) -> None:
    site = _old_cuda_python(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(site), os.environ.get("PYTHONPATH", "")]))}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    for where in ("availability", "cudart"):
        assert "cuda-python 12.2.0 is too old" in lines[where], proc.stdout
        assert '"cuda-python>=12.6.1"' in lines[where]
        assert "not installed" not in lines[where]


def test_current_cuda_bindings_are_accepted() -> None:
    """With ``cuda.bindings`` importable (cuda-bindings in this venv) there is no problem."""
    if importlib.util.find_spec("cuda") is None:
        assert cuda_python_problem().startswith("cuda-python is not installed")
        pytest.skip("cuda-python is not installed here")
    assert importlib.util.find_spec("cuda.bindings") is not None
    assert cuda_python_problem() is None
