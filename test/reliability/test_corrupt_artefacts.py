"""Truncated or corrupt checkpoint, bundle, ONNX graph, TensorRT engine, ``.npy`` and bag: each
is reported with the package's own error naming the file (the CLIs: one line, exit status 2),
and nothing is overwritten - neither the broken input nor an existing output."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mbmt_ros.errors import MbmtError

TINY = {"arch": "mbmt", "backbones": ["test_efficientnet"] * 3, "backbone_checkpoints": None,
        "freeze_backbones": True, "fusion": "cat", "tasks": ["segmentation", "depth", "normals"],
        "num_classes": 13, "fpn_channels": 16, "head_channels": 8, "task_hidden_channels": 16}


def _digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(_digest(p).encode() + p.name.encode()
                                       for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip(path: Path, offset: int = 64, count: int = 256) -> None:
    """Overwrite ``count`` bytes in the middle of the file (same size, corrupt content)."""
    data = bytearray(path.read_bytes())
    start = min(max(offset, len(data) // 2), max(len(data) - count, 0))
    data[start:start + count] = bytes((b ^ 0xA5) for b in data[start:start + count])
    path.write_bytes(bytes(data))


def _flip_header(path: Path) -> None:
    """Corrupt the first bytes after an 8-byte length prefix (a safetensors JSON header);
    corrupt tensor *data* is undetectable without a checksum - bundles carry one."""
    data = bytearray(path.read_bytes())
    data[8:40] = bytes((b ^ 0xA5) for b in data[8:40])
    path.write_bytes(bytes(data))


def _flip_start(path: Path, count: int = 64) -> None:
    """Corrupt the first bytes (magic numbers, headers, the start of a protobuf)."""
    data = bytearray(path.read_bytes())
    data[:count] = bytes((b ^ 0xA5) for b in data[:count])
    path.write_bytes(bytes(data))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True,
                          text=True, timeout=300)


def _assert_one_line_error(proc: subprocess.CompletedProcess, name: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert "error:" in message and name in message, message
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from mbmt_ros.models import build_model, save_model

    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_model(path, build_model(TINY, load_weights=False))
    return path


@pytest.fixture(scope="module")
def bundle(checkpoint: Path) -> Path:
    from training.cli import main

    out = checkpoint.parent / "bundle"
    assert main(["export", "--ckpt", str(checkpoint), "--out", str(out), "--input-size", "32",
                 "32", "--no-fp16"]) == 0
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synth"
    proc = _cli("synth", "--out", str(out), "--count", "4", "--size", "24", "32")
    assert proc.returncode == 0, proc.stderr
    return out


# ---------------------------------------------------------------------------- checkpoint
@pytest.mark.parametrize("damage", [_truncate, _flip_header])
def test_broken_checkpoint_names_the_file_and_export_writes_nothing(
        checkpoint: Path, tmp_path: Path, damage) -> None:
    from mbmt_ros.errors import CheckpointError
    from mbmt_ros.models import load_model

    broken = tmp_path / "model.safetensors"
    shutil.copy(checkpoint, broken)
    damage(broken)
    before = _digest(broken)
    with pytest.raises(CheckpointError, match=str(broken)):
        load_model(broken)
    existing = tmp_path / "bundle"
    existing.mkdir()
    (existing / "keep.txt").write_text("previous bundle")
    proc = _cli("export", "--ckpt", str(broken), "--out", str(existing), "--overwrite")
    _assert_one_line_error(proc, str(broken))
    assert _digest(broken) == before
    assert (existing / "keep.txt").read_text() == "previous bundle"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind


def test_broken_resume_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from mbmt_ros.errors import CheckpointError
    from training.checkpoint_io import load_resume_state

    last = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 1}, last)
    _truncate(last)
    before = _digest(last)
    with pytest.raises(CheckpointError, match=str(last)):
        load_resume_state(last)
    assert _digest(last) == before


# ---------------------------------------------------------------------------- bundle / ONNX
def test_truncated_onnx_in_a_bundle_is_a_bundle_error(bundle: Path, tmp_path: Path) -> None:
    from mbmt_ros.runtime import open_predictor
    from mbmt_ros.runtime.errors import BundleError

    broken = shutil.copytree(bundle, tmp_path / "bundle")
    _truncate(broken / "model.onnx")
    before = _digest(broken)
    with pytest.raises(BundleError, match=str(broken / "model.onnx")):
        open_predictor(broken, backend="onnxruntime", device="cpu", precision="fp32")
    assert _digest(broken) == before


def test_corrupt_onnx_of_the_right_size_is_reported_naming_it(bundle: Path,
                                                               tmp_path: Path) -> None:
    from mbmt_ros.runtime import open_predictor
    from mbmt_ros.runtime.bundle import Bundle
    from mbmt_ros.runtime.errors import BundleError

    # a damaged graph structure: ONNX Runtime cannot parse it
    broken = shutil.copytree(bundle, tmp_path / "bundle")
    _flip_start(broken / "model.onnx")
    before = _digest(broken)
    with pytest.raises(MbmtError, match=str(broken / "model.onnx")):
        open_predictor(broken, backend="onnxruntime", device="cpu", precision="fp32")
    assert _digest(broken) == before
    # damaged weights parse fine; the SHA-256 in meta.json catches them (`mbmt-engine info`,
    # engine builds)
    weights = shutil.copytree(bundle, tmp_path / "bundle2")
    _flip(weights / "model.onnx", count=4096)
    with pytest.raises(BundleError, match=str(weights / "model.onnx")):
        Bundle.load(weights, verify_checksums=True)


@pytest.mark.parametrize("content", ["", "{\"schema_version\": 1, ", "[1, 2]", "\x00\xff"])
def test_corrupt_meta_json_is_a_bundle_error(bundle: Path, tmp_path: Path, content: str) -> None:
    from mbmt_ros.runtime import open_predictor
    from mbmt_ros.runtime.errors import BundleError

    broken = shutil.copytree(bundle, tmp_path / "bundle")
    (broken / "meta.json").write_text(content, encoding="latin-1")
    with pytest.raises(BundleError, match="meta.json"):
        open_predictor(broken, backend="onnxruntime", device="cpu", precision="fp32")


def test_truncated_weights_are_reported_by_the_torch_backend(bundle: Path,
                                                             tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mbmt_ros.runtime import open_predictor

    broken = shutil.copytree(bundle, tmp_path / "bundle")
    _truncate(broken / "weights.safetensors")
    with pytest.raises(MbmtError, match="weights.safetensors"):
        open_predictor(broken, backend="torch", device="cpu", precision="fp32")


# ---------------------------------------------------------------------------- engine
def test_truncated_or_corrupt_engine_is_never_trusted(tmp_path: Path) -> None:
    from mbmt_ros.runtime.engine_cache import (
        EngineKey,
        StaleEngine,
        list_engines,
        read_engine,
        write_engine,
    )

    key = EngineKey("ab" * 32, "Test GPU", "8.7", "10.3.0", "fp16", 1, False)
    payload = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    good = write_engine(tmp_path / key.filename(), key, payload)
    assert read_engine(good, key) == payload
    for damage, reason in ((_truncate, "truncated"), (_flip, "checksum"),
                           (_flip_start, "not an mbmt_ros engine")):
        broken = tmp_path / damage.__name__ / key.filename()
        broken.parent.mkdir()
        shutil.copy(good, broken)
        damage(broken)
        with pytest.raises(StaleEngine, match=reason):
            read_engine(broken, key)
        if damage is not _flip:  # what `mbmt-engine info` lists (it reads headers only)
            assert list_engines(broken.parent)[0].problem
    other = EngineKey("ab" * 32, "Test GPU", "8.7", "10.4.0", "fp16", 1, False)
    with pytest.raises(StaleEngine, match="tensorrt_version"):
        read_engine(good, other)


# ---------------------------------------------------------------------------- .npy / .npz
def test_truncated_dataset_npy_is_named_by_check_data(dataset: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(dataset, tmp_path / "data")
    target = broken / "train" / "depth" / "1.npy"
    _truncate(target, 0.7)
    before = _digest(target)
    proc = _cli("check-data", str(broken))
    assert proc.returncode == 2 and "1.npy" in proc.stderr + proc.stdout, proc.stderr[-2000:]
    assert _digest(target) == before


def test_truncated_prediction_npz_is_named_by_score(dataset: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    for index in range(len(list((dataset / "val" / "image").glob("*.npy")))):
        depth = np.load(dataset / "val" / "depth" / f"{index}.npy")
        np.savez(pred / f"{index}.npz", depth=depth.reshape(depth.shape[:2]))
    _truncate(pred / "0.npz")
    out = tmp_path / "metrics.json"
    out.write_text('{"previous": true}')
    proc = _cli("score", "--pred", str(pred), "--data", str(dataset), "--out", str(out))
    _assert_one_line_error(proc, "0.npz")
    assert json.loads(out.read_text()) == {"previous": True}


def test_npy_holding_a_pickle_is_refused(dataset: Path, tmp_path: Path) -> None:
    """An object array (a pickle inside .npy) is never unpickled."""
    broken = shutil.copytree(dataset, tmp_path / "data")
    target = broken / "train" / "label" / "0.npy"
    np.save(target, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    proc = _cli("check-data", str(broken))
    assert proc.returncode == 2 and "0.npy" in proc.stderr + proc.stdout


# ---------------------------------------------------------------------------- bags
def _broken_bag(dataset: Path, tmp_path: Path, damage) -> Path:
    bag = shutil.copytree(dataset / "bag", tmp_path / "bag")
    mcap = next(bag.glob("*.mcap"))
    damage(mcap)
    return bag


@pytest.mark.parametrize("damage", [_truncate, _flip_start])
def test_broken_bag_is_named_by_extract_bag_and_nothing_is_written(
        dataset: Path, tmp_path: Path, damage) -> None:
    bag = _broken_bag(dataset, tmp_path, damage)
    before = _digest(bag)
    out = tmp_path / "extracted"
    proc = _cli("extract-bag", str(bag), "--rgb", "/camera/color/image_raw", "--depth",
                "/camera/depth/image_raw", "--out", str(out))
    _assert_one_line_error(proc, str(bag))
    assert not out.exists() and _digest(bag) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("damage", [_truncate, _flip_start])
def test_broken_bag_is_a_replay_error_naming_it(dataset: Path, tmp_path: Path, damage) -> None:
    pytest.importorskip("rclpy")
    from mbmt_ros.ros.errors import ReplayError
    from mbmt_ros.ros.replay import read_bag

    bag = _broken_bag(dataset, tmp_path, damage)
    with pytest.raises(ReplayError, match=str(bag)):
        for _ in read_bag(bag):
            pass


def test_broken_bag_is_a_data_error_for_the_demo(dataset: Path, tmp_path: Path) -> None:
    from training.demo.bags import write_replay_bag
    from training.errors import DataError

    bag = _broken_bag(dataset, tmp_path, _truncate)
    with pytest.raises(DataError, match=str(bag)):
        write_replay_bag(bag, tmp_path / "replay", [1700000000000000000])
    assert not (tmp_path / "replay").exists()
