"""Atomic writes leave either the complete old file, the complete new file, or nothing."""
from __future__ import annotations

import json

import pytest

from mbmt_ros.io import atomic_directory, atomic_write_bytes, atomic_write_json


def test_atomic_write_replaces_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["a.bin"]


def test_failed_write_keeps_old_content(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"v": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(target, {"v": Boom()})
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_atomic_directory_appears_only_when_complete(tmp_path):
    out = tmp_path / "dataset"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "x.npy").write_bytes(b"partial")
            raise RuntimeError("crash while writing")
    assert not out.exists() and list(tmp_path.iterdir()) == []

    with atomic_directory(out) as tmp:
        (tmp / "x.npy").write_bytes(b"done")
    assert (out / "x.npy").read_bytes() == b"done"

    with pytest.raises(FileExistsError):
        with atomic_directory(out):
            pass
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "y.npy").write_bytes(b"new")
    assert sorted(p.name for p in out.iterdir()) == ["y.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_atomic_directory_removes_partials_left_by_a_killed_write(tmp_path):
    out = tmp_path / "bundle"
    stale = tmp_path / ".bundle.abc123.partial"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    with atomic_directory(out) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    """mkstemp's temp files are 0600; a written result (JSON, docs, manifests) must not be."""
    import os

    from mbmt_ros.io import atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    target = tmp_path / "results.json"
    atomic_write_text(target, "{}\n")
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
