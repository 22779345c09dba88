"""Synthetic scenes: deterministic per seed, geometrically consistent labels, CLI output."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import run_cli, surface_edges

from training.data import CameraIntrinsics, Manifest, MultiTaskDataset, normals_from_depth
from training.data.bag import open_bag, topic_types
from training.data.synth import generate, render_frame, write_synth_dataset
from training.errors import DataError


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    a, b = render_frame(5, 2, 48, 64), render_frame(5, 2, 48, 64)
    for name in ("rgb", "segmentation", "depth", "normals"):
        np.testing.assert_array_equal(getattr(a.sample, name), getattr(b.sample, name))
    c = render_frame(6, 2, 48, 64)
    assert not np.array_equal(a.sample.depth, c.sample.depth)
    assert not np.array_equal(a.sample.rgb, render_frame(5, 3, 48, 64).sample.rgb)


def test_labels_are_exact_and_consistent() -> None:
    f = render_frame(1, 0, 60, 80)
    s = f.sample
    assert s.valid("depth").all() and (s.depth < 15).all()
    norms = np.linalg.norm(s.normals, axis=2)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    rays = f.camera.rays()
    assert (np.sum(s.normals * rays, axis=2) < 0).all()  # every surface faces the camera
    assert s.segmentation.min() >= 0 and s.segmentation.max() < 13
    assert len(np.unique(s.segmentation)) >= 3
    # depth agrees with the normals: normals derived from the exact depth match away from edges
    derived, valid = normals_from_depth(s.depth, f.camera)
    keep = valid & ~surface_edges(f.surface)
    cos = np.sum(derived * s.normals, axis=2)[keep]
    assert keep.mean() > 0.5 and np.median(cos) > np.cos(np.radians(1.0))


def test_segment_boundaries_follow_geometry() -> None:
    """Where the class changes between two pixels, so does the surface (the tasks relate)."""
    f = render_frame(2, 1, 48, 64)
    seg, surf = f.sample.segmentation, f.surface
    change = seg[:, 1:] != seg[:, :-1]
    assert change.any()
    assert (surf[:, 1:] != surf[:, :-1])[change].all()


def test_fast_enough_at_small_size() -> None:
    start = time.process_time()
    for i in range(10):
        render_frame(0, i, 48, 64)
    per_frame = (time.process_time() - start) / 10
    assert per_frame < 0.3  # i.e. well over 200 frames/minute on one core


def test_cli_writes_layout_manifest_camera_and_bag(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    run_cli("synth", "--out", str(out), "--count", "5", "--size", "32", "48", "--seed", "4",
            "--val-fraction", "0.4")
    for split, n in (("train", 3), ("val", 2)):
        for folder in ("image", "label", "depth", "normal"):
            assert sorted(p.name for p in (out / split / folder).iterdir()) == \
                [f"{i}.npy" for i in range(n)]
    assert np.load(out / "train" / "image" / "0.npy").shape == (32, 48, 3)
    cam = CameraIntrinsics.load(out / "camera.json")
    assert (cam.width, cam.height) == (48, 32)
    m = Manifest.load(out / "manifest.json")
    assert m.info["seed"] == 4 and len(m.samples) == 5
    # frame 3 (val 0) is the fourth frame of the seed, as the API renders it
    np.testing.assert_array_equal(np.load(out / "val" / "depth" / "0.npy"),
                                  render_frame(4, 3, 32, 48).sample.depth)
    reader = open_bag(out / "bag")
    try:
        assert topic_types(reader) == {"/camera/color/image_raw": "sensor_msgs/msg/Image",
                                       "/camera/depth/image_raw": "sensor_msgs/msg/Image",
                                       "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo"}
        assert reader.message_count == 15
    finally:
        reader.close()
    assert len(MultiTaskDataset(out, "val")) == 2
    again = run_cli("synth", "--out", str(out), "--count", "2", "--size", "32", "48",
                    check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_failure_leaves_no_partial_dataset(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = generate.render_frame

    def failing(seed: int, index: int, h: int, w: int, domain="target"):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("renderer crashed")
        return real(seed, index, h, w, domain)

    monkeypatch.setattr(generate, "render_frame", failing)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_synth_dataset(tmp_path / "out", 5, 24, 32, seed=0)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a temp folder remains
    with pytest.raises(DataError, match="--count must be >= 1"):
        write_synth_dataset(tmp_path / "out", 0, 24, 32, seed=0)
    with pytest.raises(DataError, match="leaves no training frames"):
        write_synth_dataset(tmp_path / "out", 1, 24, 32, seed=0, val_fraction=0.9)
