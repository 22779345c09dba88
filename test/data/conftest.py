"""Fixtures of the data tests: a small synthetic dataset (with its bag) (helpers: data_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import SYNTH_COUNT, SYNTH_SEED, SYNTH_SIZE

from training.data.synth import write_synth_dataset


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic frames at 48x64 (10 train, 2 val) with manifest, camera.json and bag/."""
    out = tmp_path_factory.mktemp("synth") / "data"
    return write_synth_dataset(out, SYNTH_COUNT, *SYNTH_SIZE, seed=SYNTH_SEED)
