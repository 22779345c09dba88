"""Export: a tiny checkpoint -> a valid bundle (ONNX contract, meta.json, weights), atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from runtime_helpers import BUNDLE_SIZE, TINY_MBMT, make_checkpoint

from mbmt_ros.runtime import Bundle
from mbmt_ros.runtime.bundle import sha256_file
from training import export as export_mod
from training.errors import CheckpointError
from training.export import ExportError, export_bundle

H, W = BUNDLE_SIZE


def _io(model: onnx.ModelProto) -> tuple[list, list]:
    def desc(v: onnx.ValueInfoProto) -> tuple:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        return v.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type), dims
    return [desc(v) for v in model.graph.input], [desc(v) for v in model.graph.output]


@pytest.mark.parametrize("variant", ["model.onnx", "model_fp16.onnx"])
def test_onnx_graph_follows_the_bundle_contract(tiny_bundle_master: Path, variant: str) -> None:
    model = onnx.load(str(tiny_bundle_master / variant))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inputs, outputs = _io(model)
    assert len(inputs) == 1
    name, dtype, dims = inputs[0]
    assert (name, dtype, dims[1:]) == ("image", np.uint8, [H, W, 3])
    assert isinstance(dims[0], str)  # dynamic batch
    assert [(n, d) for n, d, _ in outputs] == [
        ("segmentation", np.int32), ("segmentation_confidence", np.float32),
        ("depth", np.float32), ("normals", np.float32)]
    assert [dims[1:] for _, _, dims in outputs] == [[H, W], [H, W], [H, W], [3, H, W]]


def test_meta_json_describes_the_bundle(tiny_bundle_master: Path, tiny_checkpoint: Path) -> None:
    meta = json.loads((tiny_bundle_master / "meta.json").read_text())
    bundle = Bundle.load(tiny_bundle_master, verify_checksums=True)
    assert bundle.tasks == ("segmentation", "depth", "normals")
    assert bundle.input_size == BUNDLE_SIZE
    assert len(bundle.class_names) == len(bundle.palette) == TINY_MBMT["num_classes"]
    assert meta["depth_units"] == "metres"
    for name in ("model.onnx", "model_fp16.onnx", "weights.safetensors"):
        assert meta["files"][name]["sha256"] == sha256_file(tiny_bundle_master / name)
    prov = meta["provenance"]
    assert prov["config"]["backbones"] == TINY_MBMT["backbones"]
    assert prov["metrics"] == {"mIoU": 1.5}
    assert prov["data"] == "unit-test"
    assert prov["code_version"]["mbmt_ros"]
    assert prov["checkpoint_sha256"] == sha256_file(tiny_checkpoint / "model.safetensors")
    fp32 = meta["parity"]["fp32"]
    assert fp32["segmentation_agreement"] >= 0.999
    assert fp32["depth_max_abs"] <= 1e-3 and fp32["normals_max_abs"] <= 1e-3
    assert "fp16" in meta["parity"] and meta["parity"]["fp16"]["samples"] >= 2


def test_weights_rebuild_the_model(tiny_bundle_master: Path, tiny_model) -> None:
    import torch

    from mbmt_ros.models import load_model

    rebuilt = load_model(tiny_bundle_master / "weights.safetensors")
    for (k, a), (_, b) in zip(rebuilt.state_dict().items(), tiny_model.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_single_task_model_and_task_subset(tmp_path: Path) -> None:
    st = make_checkpoint(tmp_path / "st", {"arch": "st", "backbone": "test_efficientnet",
                                           "tasks": ["depth"], "fpn_channels": 16,
                                           "head_channels": 8, "task_hidden_channels": 16})
    out = export_bundle(st, tmp_path / "st_bundle", input_size=(32, 64), exporter="torchscript",
                        fp16=False)
    bundle = Bundle.load(out)
    assert bundle.tasks == ("depth",) and bundle.class_names == ()
    assert [o.name for o in onnx.load(str(out / "model.onnx")).graph.output] == ["depth"]
    assert not (out / "model_fp16.onnx").exists()




def test_teacher_is_not_exportable(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path, {"arch": "teacher", "backbone": "test_efficientnet",
                                      "fpn_channels": 16, "head_channels": 8,
                                      "task_hidden_channels": 16})
    with pytest.raises(ExportError, match="student"):
        export_bundle(ckpt, tmp_path / "out", input_size=(32, 32))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"input_size": (30, 64)}, "multiples of 32"),
    ({"tasks": ["edges"]}, "unknown task"),
    ({"exporter": "magic"}, "unknown exporter"),
])
def test_bad_export_arguments(tiny_checkpoint: Path, tmp_path: Path, kwargs, match) -> None:
    with pytest.raises(ExportError, match=match):
        export_bundle(tiny_checkpoint, tmp_path / "out", **{"input_size": (32, 32), **kwargs})
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        export_bundle(tmp_path / "nothing", tmp_path / "out")


@pytest.mark.slow
def test_failed_export_leaves_nothing_behind(tiny_checkpoint: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A parity failure after model.onnx was written must not publish a partial bundle."""
    monkeypatch.setitem(export_mod.PARITY_TOLERANCES, "normals_max_abs", -1.0)
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_bundle(tiny_checkpoint, tmp_path / "out", input_size=(32, 32),
                      exporter="torchscript", fp16=False)
    assert os.listdir(tmp_path) == []


def test_existing_bundle_needs_overwrite(tiny_bundle: Path, tiny_checkpoint: Path) -> None:
    before = sha256_file(tiny_bundle / "meta.json")
    with pytest.raises(ExportError, match="--overwrite"):
        export_bundle(tiny_checkpoint, tiny_bundle, input_size=(32, 32))
    assert sha256_file(tiny_bundle / "meta.json") == before


@pytest.mark.slow
def test_overwrite_with_a_task_subset(tiny_bundle: Path, tiny_checkpoint: Path) -> None:
    export_bundle(tiny_checkpoint, tiny_bundle, input_size=(32, 32), tasks=["normals",
                  "segmentation"], exporter="torchscript", fp16=False, overwrite=True)
    bundle = Bundle.load(tiny_bundle, verify_checksums=True)
    assert bundle.tasks == ("segmentation", "normals") and bundle.input_size == (32, 32)
    names = [o.name for o in onnx.load(str(tiny_bundle / "model.onnx")).graph.output]
    assert names == ["segmentation", "segmentation_confidence", "normals"]
    assert not (tiny_bundle / "model_fp16.onnx").exists()
