"""Real NYU Depth V2 frames (../shared/data): into the NYUv2 layout, into a bag and back."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from data_helpers import run_cli
from PIL import Image

from training.data import (
    CameraIntrinsics,
    Manifest,
    MultiTaskDataset,
    Sample,
    normals_from_depth,
    open_dataset_writer,
)
from training.data.bag import RgbdBagWriter
from training.data.camera import NYU_KINECT
from training.data.label_png import read_label_png
from training.data.transforms import resize

SIZE = (120, 160)  # a quarter of 480 x 640 keeps the test fast


def _frames(shared: Path, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    root = shared / "nyu_rgbd_mini"
    return [(np.asarray(Image.open(root / f"image_{i}.png").convert("RGB")),
             np.asarray(Image.open(root / f"depth_{i}.png")).astype(np.float32) / 1000.0)
            for i in range(n)]


@pytest.fixture(scope="module")
def nyu_labels(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("labels")
    with tarfile.open(shared_data / "nyuv2_test_labels_13" / "nyuv2_test_class13.tgz") as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".png")][:4]
        for m in members:
            (out / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    return sorted(out.glob("*.png"))


def test_real_labels_read_as_nyu13(nyu_labels: list[Path]) -> None:
    seg = read_label_png(nyu_labels[0], 13)
    assert seg.shape == (480, 640) and seg.min() >= -1 and seg.max() <= 12
    raw = np.asarray(Image.open(nyu_labels[0]))
    np.testing.assert_array_equal(seg == -1, raw == 0)
    np.testing.assert_array_equal(seg[raw > 0], raw[raw > 0].astype(np.int64) - 1)


def test_real_frames_into_layout(shared_data: Path, nyu_labels: list[Path],
                                 tmp_path: Path) -> None:
    out = tmp_path / "nyu"
    frames = _frames(shared_data)
    with open_dataset_writer(out, dataset="nyu_rgbd_mini") as w:
        for i, (rgb, depth) in enumerate(frames):
            # real RGB-D; the labels come from other NYU frames (only the format matters)
            seg = read_label_png(nyu_labels[i], 13)
            normals, _ = normals_from_depth(depth, NYU_KINECT)
            s = resize(Sample(rgb, seg, depth, normals), SIZE)
            w.add(s, "train" if i < 3 else "val")
    ds = MultiTaskDataset(out, "train")
    assert len(ds) == 3 and len(MultiTaskDataset(out, "val")) == 1
    item = ds[0]
    assert item["image"].shape == (3, *SIZE) and item["has_normals"]
    assert 0.3 < float(item["depth"][item["depth"] > 0].mean()) < 10
    run_cli("check-data", str(out))


def test_real_depth_normals_are_plausible(shared_data: Path) -> None:
    rgb, depth = _frames(shared_data, 1)[0]
    normals, valid = normals_from_depth(depth, NYU_KINECT)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(np.linalg.norm(normals[valid], axis=1), 1.0, atol=1e-5)
    rays = NYU_KINECT.rays()
    assert (np.sum(normals * rays, axis=2)[valid] <= 1e-6).all()  # facing the camera


def test_real_frames_through_a_bag(shared_data: Path, tmp_path: Path) -> None:
    frames = _frames(shared_data, 3)
    small = [resize(Sample(rgb, depth=depth), SIZE) for rgb, depth in frames]
    camera = NYU_KINECT.scaled(SIZE[1], SIZE[0])
    with RgbdBagWriter(tmp_path / "bag", rgb_topic="/rgb", depth_topic="/depth",
                       info_topic="/info") as w:
        for i, s in enumerate(small):
            w.write(1_000_000_000 + i * 33_000_000, s.rgb, s.depth, camera)
    run_cli("extract-bag", str(tmp_path / "bag"), "--rgb", "/rgb", "--depth", "/depth",
            "--camera-info", "/info", "--out", str(tmp_path / "out"))
    m = Manifest.load(tmp_path / "out" / "manifest.json")
    assert len(m.entries("train")) == 3
    cam = CameraIntrinsics.load(tmp_path / "out" / "camera.json")
    assert cam.fx == pytest.approx(camera.fx)
    for i, s in enumerate(small):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / "train" / "image" / f"{i}.npy"),
                                      s.rgb)
        depth = np.load(tmp_path / "out" / "train" / "depth" / f"{i}.npy")
        assert np.abs(depth - s.depth).max() <= 0.0005 + 1e-6  # millimetre round trip
        expected, _ = normals_from_depth(np.rint(s.depth * 1000) / 1000, camera)
        np.testing.assert_allclose(np.load(tmp_path / "out" / "train" / "normal" / f"{i}.npy"),
                                   expected, atol=1e-5)
