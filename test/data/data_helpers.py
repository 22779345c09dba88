"""Helpers shared by the data tests (a plain module: conftest names clash across folders)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["run_cli", "surface_edges", "angle_deg", "SYNTH_COUNT", "SYNTH_SIZE", "SYNTH_SEED"]

#: The shared synthetic dataset of the ``synth_dataset`` fixture (test/data/conftest.py).
SYNTH_COUNT = 12
SYNTH_SIZE = (48, 64)
SYNTH_SEED = 3


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``mbmt-train ARGS`` of this virtual environment as a subprocess."""
    exe = Path(sys.executable).parent / "mbmt-train"
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"mbmt-train {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def surface_edges(surface: np.ndarray) -> np.ndarray:
    """True on both sides of every change of surface id (4-neighbourhood)."""
    e = np.zeros(surface.shape, dtype=bool)
    dv = surface[1:] != surface[:-1]
    dh = surface[:, 1:] != surface[:, :-1]
    e[1:] |= dv
    e[:-1] |= dv
    e[:, 1:] |= dh
    e[:, :-1] |= dh
    return e


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between unit vectors along the last axis."""
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))
