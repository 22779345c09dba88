"""The command lines end to end: ``mbmt-train export`` (subprocess) and ``mbmt-engine``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mbmt_ros.runtime import Bundle
from mbmt_ros.runtime.engine_cache import EngineKey, write_engine
from mbmt_ros.runtime.engine_cli import main as engine_main


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_export_cli_end_to_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"depth": {"abs_err": 0.5}}))
    out = tmp_path / "bundle"
    proc = _cli("export", "--ckpt", str(tiny_checkpoint / "model.safetensors"), "--out",
                str(out), "--input-size", "32", "64", "--tasks", "depth", "segmentation",
                "--metrics", str(metrics), "--exporter", "torchscript", "--no-fp16")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote model bundle {out}" in proc.stdout
    bundle = Bundle.load(out, verify_checksums=True)
    assert bundle.tasks == ("segmentation", "depth") and bundle.input_size == (32, 64)
    assert bundle.meta["provenance"]["metrics"] == {"depth": {"abs_err": 0.5}}
    # exporting onto an existing bundle is refused with a one-line error
    again = _cli("export", "--ckpt", str(tiny_checkpoint), "--out", str(out))
    assert again.returncode == 2
    assert again.stderr.strip().startswith("mbmt-train export: error:")
    assert "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_export_cli_bad_checkpoint(tmp_path: Path) -> None:
    proc = _cli("export", "--ckpt", str(tmp_path), "--out", str(tmp_path / "b"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()


def test_engine_info_lists_meta_and_engines(tiny_bundle: Path, capsys) -> None:
    bundle = Bundle.load(tiny_bundle)
    key = EngineKey(bundle.model_sha256, "NVIDIA Jetson Orin Nano", "8.7", "10.3.0", "fp16", 1,
                    False)
    write_engine(bundle.engine_dir / key.filename(), key, b"engine bytes")
    stale = EngineKey("0" * 64, "NVIDIA Jetson Orin Nano", "8.7", "10.3.0", "fp32", 1, False)
    write_engine(bundle.engine_dir / stale.filename(), stale, b"old")
    (bundle.engine_dir / "broken.engine").write_bytes(b"junk")
    assert engine_main(["info", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "tasks       segmentation, depth, normals" in out
    assert "input       64x96" in out and "parity      fp32" in out
    assert f"{key.filename()}: fp16 batch 1, NVIDIA Jetson Orin Nano sm8.7 (? SMs, ? MiB), " \
           f"from model.onnx, TensorRT 10.3.0" in out
    assert "STALE" in out and "broken.engine: UNUSABLE" in out
    assert engine_main(["info", str(tiny_bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"] == ["segmentation", "depth", "normals"]


def test_engine_info_bad_bundle(tmp_path: Path, capsys) -> None:
    assert engine_main(["info", str(tmp_path)]) == 2
    assert "meta.json is missing" in capsys.readouterr().err


def test_engine_build_without_tensorrt_fails_clearly(tiny_bundle_master: Path) -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, "-m", "mbmt_ros.runtime.engine_cli", "build",
                           str(tiny_bundle_master), "--precision", "fp16", "--batch", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "TensorRT is not installed" in proc.stderr and "pip install tensorrt" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tiny_bundle_master / "engines").exists() or not any(
        (tiny_bundle_master / "engines").glob("*.engine"))


def test_engine_build_refuses_a_bundle_tensorrt_cannot_build(tiny_bundle: Path, capsys) -> None:
    """A bundle exported before the cast-first graph (uint8 image transposed, then cast) is
    refused by the readiness check before TensorRT is even imported; --skip-check passes it."""
    import onnx
    from onnx import TensorProto, helper

    from mbmt_ros.runtime.bundle import sha256_file

    nodes = [helper.make_node("Transpose", ["image"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["depth"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info(
        "image", TensorProto.UINT8, ["batch", 64, 96, 3])], [helper.make_tensor_value_info(
            "depth", TensorProto.FLOAT, ["batch", 3, 64, 96])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tiny_bundle / "model.onnx"))
    meta = json.loads((tiny_bundle / "meta.json").read_text())
    meta["files"]["model.onnx"] = {"sha256": sha256_file(tiny_bundle / "model.onnx"),
                                   "size": (tiny_bundle / "model.onnx").stat().st_size}
    (tiny_bundle / "meta.json").write_text(json.dumps(meta))
    assert engine_main(["build", str(tiny_bundle)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mbmt-engine build: error:") and err.count("\n") == 1
    assert "would not build with TensorRT" in err and "feeds Transpose" in err
    assert "Re-export the bundle" in err
    engine_main(["build", str(tiny_bundle), "--skip-check"])  # on to TensorRT itself
    assert "would not build" not in capsys.readouterr().err
