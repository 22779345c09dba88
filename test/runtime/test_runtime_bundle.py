"""Bundle loading and validation: missing or corrupt files, schema mismatch, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbmt_ros.runtime import (
    BackendError,
    Bundle,
    BundleError,
    SchemaVersionError,
    open_predictor,
)
from mbmt_ros.runtime.bundle import SCHEMA_VERSION


def _edit_meta(bundle: Path, **changes) -> None:
    meta = json.loads((bundle / "meta.json").read_text())
    meta.update(changes)
    (bundle / "meta.json").write_text(json.dumps(meta))


def test_valid_bundle_loads(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle, verify_checksums=True)
    assert bundle.model_path.is_file() and bundle.fp16_model_path is not None
    assert bundle.output_names == ("segmentation", "segmentation_confidence", "depth",
                                   "normals")
    assert len(bundle.model_sha256) == 64


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        Bundle.load(tmp_path / "missing")


def test_missing_meta(tiny_bundle: Path) -> None:
    (tiny_bundle / "meta.json").unlink()
    with pytest.raises(BundleError, match="meta.json is missing"):
        open_predictor(tiny_bundle, backend="onnxruntime", device="cpu")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe"])
def test_corrupt_meta(tiny_bundle: Path, content: str) -> None:
    (tiny_bundle / "meta.json").write_text(content, encoding="latin-1")
    with pytest.raises(BundleError, match="meta.json"):
        Bundle.load(tiny_bundle)


def test_schema_version_mismatch(tiny_bundle: Path) -> None:
    _edit_meta(tiny_bundle, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*re-export"):
        Bundle.load(tiny_bundle)


@pytest.mark.parametrize("changes, match", [
    ({"tasks": ["segmentation", "edges"]}, "tasks must be"),
    ({"input_size": [64]}, "input_size"),
    ({"palette": [[0, 0, 0]]}, "palette"),
])
def test_invalid_meta_values(tiny_bundle: Path, changes, match) -> None:
    _edit_meta(tiny_bundle, **changes)
    with pytest.raises(BundleError, match=match):
        Bundle.load(tiny_bundle)


def test_missing_model_onnx(tiny_bundle: Path) -> None:
    (tiny_bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is missing"):
        open_predictor(tiny_bundle, backend="onnxruntime", device="cpu")


def test_truncated_model_onnx(tiny_bundle: Path) -> None:
    data = (tiny_bundle / "model.onnx").read_bytes()
    (tiny_bundle / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated or corrupt"):
        open_predictor(tiny_bundle, backend="onnxruntime", device="cpu")


def test_corrupt_model_onnx_same_size(tiny_bundle: Path) -> None:
    """Same size, garbage content: the checksum catches it (also when a predictor opens the
    bundle by path), and ONNX Runtime's own load does for an unverified Bundle."""
    path = tiny_bundle / "model.onnx"
    path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(tiny_bundle, verify_checksums=True)
    with pytest.raises(BundleError, match="model.onnx does not match its sha256"):
        open_predictor(tiny_bundle, backend="onnxruntime", device="cpu")
    with pytest.raises(BackendError, match="corrupt") as info:
        open_predictor(Bundle.load(tiny_bundle), backend="onnxruntime", device="cpu")
    assert "model.onnx" in str(info.value)
