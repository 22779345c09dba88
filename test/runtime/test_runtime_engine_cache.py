"""Engine cache: keys, the self-checking file format, invalidation and atomic writes.

Pure logic (no TensorRT): the payloads are arbitrary bytes standing in for serialized engines.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from mbmt_ros.runtime import Bundle
from mbmt_ros.runtime import engine_cache as ec
from mbmt_ros.runtime.engine_cache import (
    EngineKey,
    StaleEngine,
    cache_dir,
    list_engines,
    pack_engine,
    read_engine,
    timing_cache_path,
    unpack_engine,
    write_engine,
)

KEY = EngineKey(model_sha256="ab" * 32, gpu_name="NVIDIA Jetson AGX Orin",
                compute_capability="8.7", tensorrt_version="10.3.0", precision="fp16",
                max_batch=1, dynamic_batch=False)
PAYLOAD = bytes(range(256)) * 40


def test_round_trip() -> None:
    assert unpack_engine(pack_engine(KEY, PAYLOAD), KEY) == PAYLOAD


@pytest.mark.parametrize("field, value", [
    ("model_sha256", "cd" * 32), ("gpu_name", "NVIDIA GeForce RTX 4090"),
    ("compute_capability", "8.9"), ("tensorrt_version", "11.0.0"), ("precision", "fp32"),
    ("max_batch", 4), ("dynamic_batch", True),
])
def test_every_key_field_invalidates(field: str, value) -> None:
    other = dataclasses.replace(KEY, **{field: value})
    assert other.filename() != KEY.filename() and other.digest() != KEY.digest()
    with pytest.raises(StaleEngine, match=f"{field}: cached"):
        unpack_engine(pack_engine(KEY, PAYLOAD), other)


def test_filename_is_readable() -> None:
    name = KEY.filename()
    assert name.startswith("nvidia-jetson-agx-orin_sm87_trt10.3.0_fp16_b1_")
    assert name.endswith(".engine")


@pytest.mark.parametrize("damage, match", [
    (lambda d: d[: len(d) - 10], "truncated"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "checksum"),
    (lambda d: b"XXXXXXXX" + d[8:], "magic"),
    (lambda d: d[:12] + b"}" + d[13:], "header is corrupt"),
    (lambda d: b"", "magic"),
])
def test_corrupt_engines_are_detected(damage, match) -> None:
    with pytest.raises(StaleEngine, match=match):
        unpack_engine(damage(pack_engine(KEY, PAYLOAD)), KEY)


def test_read_missing_engine(tmp_path: Path) -> None:
    with pytest.raises(StaleEngine, match="no cached engine"):
        read_engine(tmp_path / KEY.filename(), KEY)


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_engine(tmp_path / KEY.filename(), KEY, PAYLOAD)
    assert read_engine(path, KEY) == PAYLOAD

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_engine(path, KEY, b"new engine that never lands")
    assert read_engine(path, KEY) == PAYLOAD  # the old engine is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


def test_list_engines_reports_state(tmp_path: Path) -> None:
    good = write_engine(tmp_path / KEY.filename(), KEY, PAYLOAD)
    short = tmp_path / "short.engine"
    short.write_bytes(pack_engine(KEY, PAYLOAD)[:-5])
    (tmp_path / "foreign.engine").write_bytes(b"trtexec output")
    records = {r.path.name: r for r in list_engines(tmp_path)}
    assert records[good.name].problem is None
    assert records[good.name].header["key"]["gpu_name"] == KEY.gpu_name
    assert "truncated" in records["short.engine"].problem
    assert records["foreign.engine"].header is None and "magic" in records[
        "foreign.engine"].problem
    assert list_engines(tmp_path / "none") == []


def test_cache_dir_beside_bundle_or_user_cache(tiny_bundle: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = Bundle.load(tiny_bundle)
    assert cache_dir(bundle) == tiny_bundle / "engines"
    assert cache_dir(bundle, tmp_path / "x") == tmp_path / "x"
    monkeypatch.setattr(ec, "_writable", lambda d: False)  # a read-only install
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cache_dir(bundle) == tmp_path / "cache" / "mbmt_ros" / "engines" / \
        bundle.model_sha256[:16]


def test_timing_cache_is_per_gpu_and_version(tmp_path: Path) -> None:
    same_gpu = dataclasses.replace(KEY, precision="fp32", max_batch=8)
    other = dataclasses.replace(KEY, tensorrt_version="11.1.0")
    assert timing_cache_path(tmp_path, KEY) == timing_cache_path(tmp_path, same_gpu)
    assert timing_cache_path(tmp_path, KEY) != timing_cache_path(tmp_path, other)
