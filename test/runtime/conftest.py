"""Fixtures for the runtime tests: one tiny MBMT checkpoint and its exported bundle, shared by
the session (the export is the slow part)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import BUNDLE_SIZE, TINY_MBMT, make_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage folder holding a tiny MBMT ``model.safetensors``."""
    folder = tmp_path_factory.mktemp("stage")
    make_checkpoint(folder, TINY_MBMT)
    return folder


@pytest.fixture(scope="session")
def tiny_bundle_master(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    from mbmt_ros.runtime.trt_readiness import assert_bundle_tensorrt_ready
    from training.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    bundle = export_bundle(tiny_checkpoint, out, input_size=BUNDLE_SIZE, exporter="torchscript",
                           metrics={"mIoU": 1.5})
    # every bundle the tests export passes the static TensorRT-readiness check (fp32 + fp16)
    assert assert_bundle_tensorrt_ready(bundle) == ["model.onnx", "model_fp16.onnx"]
    return bundle


@pytest.fixture
def tiny_bundle(tiny_bundle_master: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle (tests may damage it)."""
    return Path(shutil.copytree(tiny_bundle_master, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> Any:
    from mbmt_ros.models import load_model

    return load_model(tiny_checkpoint)


