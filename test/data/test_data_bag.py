"""rosbag2 extraction: synth -> bag -> dataset round trip, pairing, encodings, bad bags."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import SYNTH_COUNT, SYNTH_SEED, SYNTH_SIZE, angle_deg, run_cli, surface_edges

from training.data import CameraIntrinsics, Manifest, MultiTaskDataset
from training.data.bag import RgbdBagWriter
from training.data.extract import extract_bag, pair_by_stamp
from training.data.label_png import read_label_png, write_label_png
from training.data.synth import render_frame
from training.data.synth.generate import frame_stamp
from training.errors import DataError

TOPICS = ["--rgb", "/camera/color/image_raw", "--depth", "/camera/depth/image_raw"]
INFO = ["--camera-info", "/camera/color/camera_info"]
MS = 1_000_000


def test_synth_bag_round_trip_reproduces_labels(synth_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "extracted"
    proc = run_cli("extract-bag", str(synth_dataset / "bag"), *TOPICS, *INFO, "--out", str(out))
    assert f"{SYNTH_COUNT} frames" in proc.stdout
    m = Manifest.load(out / "manifest.json")
    assert [e.index for e in m.entries("train")] == list(range(SYNTH_COUNT))
    assert [e.stamp_ns for e in m.entries("train")] == [frame_stamp(i) for i in range(SYNTH_COUNT)]
    assert not m.entries("val")
    n_train = len(Manifest.load(synth_dataset / "manifest.json").entries("train"))
    errors = []
    for k in range(SYNTH_COUNT):
        split, idx = ("train", k) if k < n_train else ("val", k - n_train)
        src = synth_dataset / split
        np.testing.assert_array_equal(np.load(out / "train" / "image" / f"{k}.npy"),
                                      np.load(src / "image" / f"{idx}.npy"))
        depth = np.load(out / "train" / "depth" / f"{k}.npy")
        assert np.abs(depth - np.load(src / "depth" / f"{idx}.npy")).max() <= 0.0005 + 1e-6
        normals = np.load(out / "train" / "normal" / f"{k}.npy")
        valid = np.any(normals != 0, axis=2)
        surface = render_frame(SYNTH_SEED, k, *SYNTH_SIZE).surface
        keep = valid & ~surface_edges(surface)
        assert keep.mean() > 0.6
        errors.append(angle_deg(normals, np.load(src / "normal" / f"{idx}.npy"))[keep])
    err = np.concatenate(errors)
    assert np.median(err) < 1.0 and np.percentile(err, 90) < 3.0
    assert CameraIntrinsics.load(out / "camera.json") == \
        CameraIntrinsics.load(synth_dataset / "camera.json")


def test_pairing_nearest_first_within_tolerance() -> None:
    rgb = [0, 100 * MS, 200 * MS, 300 * MS]
    depth = [5 * MS, 95 * MS, 112 * MS, 330 * MS]
    pairs, lone_rgb, lone_depth = pair_by_stamp(rgb, depth, 20 * MS)
    assert pairs == [(0, 5 * MS), (100 * MS, 95 * MS)]
    assert lone_rgb == [200 * MS, 300 * MS] and lone_depth == [112 * MS, 330 * MS]


def _bag(path: Path, frames: int = 4, size: tuple[int, int] = (24, 32), **kwargs) -> list:
    """A small bag of synthetic frames; kwargs pick encodings and per-frame omissions."""
    renders = [render_frame(9, i, *size) for i in range(frames)]
    depth_size = kwargs.get("depth_size")
    with RgbdBagWriter(path, compressed=kwargs.get("compressed", False),
                       storage=kwargs.get("storage", "mcap")) as w:
        for i, f in enumerate(renders):
            stamp = 1_000_000_000 + i * 100 * MS
            w.write_rgb(stamp, f.sample.rgb)
            if i not in kwargs.get("skip_depth", ()):
                depth = f.sample.depth
                if depth_size:
                    rows = np.arange(depth_size[0]) * size[0] // depth_size[0]
                    cols = np.arange(depth_size[1]) * size[1] // depth_size[1]
                    depth = depth[rows[:, None], cols[None, :]]
                w.write_depth(stamp + kwargs.get("offset_ms", 0) * MS, depth,
                              kwargs.get("encoding", "16UC1"))
            w.write_info(stamp, f.camera)
    return renders


def test_unmatched_frames_are_reported_and_skipped(tmp_path: Path) -> None:
    _bag(tmp_path / "bag", frames=5, skip_depth=(1, 3), offset_ms=7)
    report = extract_bag(tmp_path / "bag", tmp_path / "out", "/camera/color/image_raw",
                         "/camera/depth/image_raw", "/camera/color/camera_info")
    assert report.frames == 3
    assert report.unmatched_rgb == [1_100_000_000, 1_300_000_000]
    m = Manifest.load(tmp_path / "out" / "manifest.json")
    assert m.info["unmatched_rgb"] == report.unmatched_rgb
    assert [e.stamp_ns for e in m.samples] == [1_000_000_000, 1_200_000_000, 1_400_000_000]
    with pytest.raises(DataError, match=r"has a depth partner .* within 5\.0 ms"):
        extract_bag(tmp_path / "bag", tmp_path / "out2", "/camera/color/image_raw",
                    "/camera/depth/image_raw", tolerance_ms=5.0)
    assert not (tmp_path / "out2").exists()


def test_compressed_rgb_float_depth_and_lower_depth_resolution(tmp_path: Path) -> None:
    renders = _bag(tmp_path / "bag", frames=2, size=(24, 32), compressed=True,
                   encoding="32FC1", depth_size=(12, 16), storage="sqlite3")
    report = extract_bag(tmp_path / "bag", tmp_path / "out", "/camera/color/image_raw",
                         "/camera/depth/image_raw", "/camera/color/camera_info")
    assert report.frames == 2
    ds = MultiTaskDataset(tmp_path / "out", "train")
    s = ds.sample(1)
    assert s.size == (24, 32)
    ref = renders[1].sample
    # JPEG colour is close; depth is the registered low-res depth upsampled (nearest)
    assert np.abs(s.rgb.astype(int) - ref.rgb.astype(int)).mean() < 6
    np.testing.assert_allclose(s.depth[::2, ::2], ref.depth[::2, ::2], atol=1e-6)


def test_label_pngs_named_by_stamp(tmp_path: Path) -> None:
    renders = _bag(tmp_path / "bag", frames=3)
    labels = tmp_path / "labels"
    seg = renders[2].sample.segmentation.copy()
    seg[:3] = -1
    write_label_png(labels / "1200000000.png", seg, 13)
    write_label_png(labels / "999.png", seg, 13)  # no such frame: reported, not fatal
    out = tmp_path / "out"
    proc = run_cli("extract-bag", str(tmp_path / "bag"), *TOPICS, *INFO, "--labels",
                   str(labels), "--out", str(out))
    assert "3 frames (1 with segmentation labels)" in proc.stdout
    assert "1 label PNGs matched no frame" in proc.stdout
    ds = MultiTaskDataset(out, "train")
    assert [ds[i]["has_segmentation"] for i in range(3)] == [False, False, True]
    np.testing.assert_array_equal(ds[2]["segmentation"].numpy(), seg)
    assert (ds[0]["segmentation"] == -1).all()


def test_bag_errors_and_no_partial_output(tmp_path: Path) -> None:
    _bag(tmp_path / "bag", frames=2)
    proc = run_cli("extract-bag", str(tmp_path / "bag"), "--rgb", "/cam/rgb", "--depth",
                   "/camera/depth/image_raw", "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2
    assert "has no topic /cam/rgb; its topics are:" in proc.stderr
    assert "/camera/color/image_raw [sensor_msgs/msg/Image]" in proc.stderr
    proc = run_cli("extract-bag", str(tmp_path / "bag"), "--rgb", "/camera/color/camera_info",
                   "--depth", "/camera/depth/image_raw", "--out", str(tmp_path / "o"),
                   check=False)
    assert "not sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage" in proc.stderr
    with pytest.raises(DataError, match="does not exist"):
        extract_bag(tmp_path / "nobag", tmp_path / "o", "/a", "/b")
    # a bad label file aborts the extraction after some frames were written: nothing remains
    labels = tmp_path / "labels"
    labels.mkdir()
    write_label_png(labels / "1100000000.png", np.zeros((5, 5), int), 13)
    with pytest.raises(DataError, match=r"1100000000\.png: label is 5x5 but the RGB frame"):
        extract_bag(tmp_path / "bag", tmp_path / "o", "/camera/color/image_raw",
                    "/camera/depth/image_raw", labels_dir=labels)
    (labels / "frame.png").write_bytes(b"")
    with pytest.raises(DataError, match="must be named <stamp_ns>.png"):
        extract_bag(tmp_path / "bag", tmp_path / "o", "/camera/color/image_raw",
                    "/camera/depth/image_raw", labels_dir=labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "labels"]


def test_label_png_formats(tmp_path: Path) -> None:
    seg = np.array([[-1, 0, 12], [3, 4, 5]])
    write_label_png(tmp_path / "l.png", seg, 13)
    np.testing.assert_array_equal(read_label_png(tmp_path / "l.png", 13), seg)
    from PIL import Image

    Image.open(tmp_path / "l.png").convert("RGB").save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "rgb.png", 13), seg)
    Image.fromarray(np.array([[0, 1, 13]], np.uint8)).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "grey.png", 13), [[-1, 0, 12]])
    Image.fromarray(np.array([[14]], np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="value 14 exceeds 13 classes"):
        read_label_png(tmp_path / "big.png", 13)
    Image.fromarray(np.full((2, 2, 3), 17, np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(DataError, match=r"colour \(17, 17, 17\) .* not in the label palette"):
        read_label_png(tmp_path / "odd.png", 13)


def test_compressed_depth_formats() -> None:
    """compressed_depth_image_transport messages: 16UC1 PNG and 32FC1 inverse-depth PNG."""
    import io
    import struct

    from PIL import Image

    from training.data.bag import COMPRESSED, _typestore, decode_depth

    store = _typestore()
    msg_type = store.types[COMPRESSED]
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
    mm = np.array([[0, 1000, 2500], [65535, 1234, 1]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(mm).save(buf, format="PNG")
    data = struct.pack("<iff", 0, 0.0, 0.0) + buf.getvalue()
    msg = msg_type(header=header, format="16UC1; compressedDepth png",
                   data=np.frombuffer(data, np.uint8))
    raw = store.serialize_cdr(msg, COMPRESSED)  # through CDR like a real bag message
    depth = decode_depth(store.deserialize_cdr(raw, COMPRESSED), COMPRESSED)
    np.testing.assert_allclose(depth, mm / 1000.0, rtol=1e-6)
    # 32FC1: depth = A / (q - B); q = 0 is invalid
    qa, qb = 100.0, -50.0
    q = np.array([[0, 50, 150]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(q).save(buf, format="PNG")
    msg = msg_type(header=header, format="32FC1; compressedDepth png",
                   data=np.frombuffer(struct.pack("<iff", 0, qa, qb) + buf.getvalue(), np.uint8))
    np.testing.assert_allclose(decode_depth(msg, COMPRESSED), [[0.0, 1.0, 0.5]], rtol=1e-6)
