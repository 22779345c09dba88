"""Colouring, point clouds and output messages built from one prediction (no DDS needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from std_msgs.msg import Header

from mbmt_ros.imaging.colorize import (
    colorize_depth,
    colorize_normals,
    colorize_segmentation,
    load_palette,
    palette_lut,
)
from mbmt_ros.imaging.encodings import image_to_numpy
from mbmt_ros.imaging.errors import PaletteError
from mbmt_ros.ros.outputs import OUTPUT_TOPICS, POINTS, OutputOptions, build_outputs
from mbmt_ros.ros.pointcloud import POINT_DTYPE, Intrinsics, depth_to_points, points_to_msg

H, W = 6, 8
RNG = np.random.default_rng(2)


def _prediction() -> dict[str, np.ndarray]:
    normals = RNG.standard_normal((H, W, 3)).astype(np.float32)
    return {
        "segmentation": RNG.integers(0, 3, (H, W)).astype(np.int32),
        "segmentation_confidence": RNG.random((H, W)).astype(np.float32),
        "depth": (1.0 + RNG.random((H, W)) * 4).astype(np.float32),
        "normals": normals / np.linalg.norm(normals, axis=-1, keepdims=True),
    }


def test_palette_lut_and_overlay() -> None:
    lut = palette_lut([(255, 0, 0), (0, 255, 0)])
    assert lut.shape == (256, 3) and tuple(lut[1]) == (0, 255, 0) and tuple(lut[255]) == (0, 0, 0)
    labels = np.array([[0, 1, 255]], np.uint8)
    image = np.full((1, 3, 3), 100, np.uint8)
    np.testing.assert_array_equal(colorize_segmentation(labels, lut), lut[labels])
    half = colorize_segmentation(labels, lut, image, alpha=0.5)
    np.testing.assert_array_equal(half[0, 0], [178, 50, 50])
    np.testing.assert_array_equal(half[0, 2], [100, 100, 100])  # no prediction: input shows
    with pytest.raises(PaletteError, match="0..255"):
        palette_lut([(300, 0, 0)])


def test_load_palette(tmp_path) -> None:
    good = tmp_path / "p.json"
    good.write_text(json.dumps([[1, 2, 3], [4, 5, 6]]))
    assert load_palette(good, 2) == [(1, 2, 3), (4, 5, 6)]
    (tmp_path / "p.yaml").write_text("palette:\n  - [1, 2, 3]\n")
    assert load_palette(tmp_path / "p.yaml", 1) == [(1, 2, 3)]
    with pytest.raises(PaletteError, match="has 2 colours but the model has 3"):
        load_palette(good, 3)
    (tmp_path / "bad.json").write_text("[[1, 2]]")
    with pytest.raises(PaletteError, match="bad.json"):
        load_palette(tmp_path / "bad.json", 1)


def test_normals_and_depth_colours() -> None:
    n = np.array([[[1, 0, 0], [0, 0, -1], [np.nan] * 3, [2, -np.inf, 0.5]]], np.float32)
    np.testing.assert_array_equal(colorize_normals(n), [[[255, 128, 128], [128, 128, 0], [0, 0, 0],
                                                         [255, 0, 191]]])
    d = colorize_depth(np.array([[0.5, 9.0, 0.0, np.nan]], np.float32), max_depth=10)
    assert d[0, 0].sum() > d[0, 1].sum()  # near is brighter than far
    np.testing.assert_array_equal(d[0, 2:], 0)


def test_depth_to_points_back_projects() -> None:
    depth = np.full((4, 6), 2.0, np.float32)
    depth[0, 0] = 0.0
    depth[1, 1] = 50.0
    cam = Intrinsics(fx=3.0, fy=3.0, cx=2.5, cy=1.5, width=6, height=4)
    colours = np.zeros((4, 6, 3), np.uint8)
    colours[..., 0] = 255
    labels = np.full((4, 6), 7, np.uint8)
    pts = depth_to_points(depth, cam, colours, labels, stride=1, max_depth=10.0)
    assert pts.dtype == POINT_DTYPE and pts.shape == (4, 6)
    assert np.isnan(pts["z"][0, 0]) and np.isnan(pts["x"][1, 1])  # invalid and too far
    assert pts["x"][2, 5] == pytest.approx((5 - 2.5) * 2.0 / 3.0)
    assert pts["y"][2, 5] == pytest.approx((2 - 1.5) * 2.0 / 3.0)
    assert pts["rgb"][0, 1:].view(np.uint32).tolist() == [0xFF0000] * 5
    assert (pts["label"] == 7).all()
    assert depth_to_points(depth, cam, colours, None, stride=2).shape == (2, 3)
    # intrinsics of a camera_info at twice the resolution scale down to the image
    big = Intrinsics(6.0, 6.0, 5.5, 3.5, 12, 8)
    np.testing.assert_allclose(depth_to_points(depth, big, colours, max_depth=10.0)["x"], pts["x"], equal_nan=True, atol=1e-6)
    msg = points_to_msg(pts, Header(frame_id="cam"))
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (4, 6, 20, 120)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "label"]
    np.testing.assert_array_equal(np.frombuffer(msg.data, POINT_DTYPE).reshape(4, 6)["label"], 7)


def test_build_outputs_only_wanted_topics_with_input_header() -> None:
    pred = _prediction()
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    header = Header(frame_id="camera_optical")
    header.stamp.sec = 42
    options = OutputOptions(lut=palette_lut([(10, 20, 30), (40, 50, 60), (70, 80, 90)]),
                            overlay_alpha=1.0, min_confidence=0.5)
    cam = Intrinsics(4.0, 4.0, 4.0, 3.0, W, H)
    out = build_outputs(pred, rgb, header, set(OUTPUT_TOPICS), options, cam)
    assert set(out) == set(OUTPUT_TOPICS)
    for msg in out.values():
        assert msg.header.frame_id == "camera_optical" and msg.header.stamp.sec == 42
        assert (msg.height, msg.width) == (H, W) or msg is out[POINTS]
    seg = image_to_numpy(out["~/segmentation"])
    low = pred["segmentation_confidence"] < 0.5
    np.testing.assert_array_equal(seg[low], 255)
    np.testing.assert_array_equal(seg[~low], pred["segmentation"][~low])
    np.testing.assert_array_equal(image_to_numpy(out["~/depth"]), pred["depth"])
    np.testing.assert_array_equal(image_to_numpy(out["~/normals"]), pred["normals"])
    assert out["~/segmentation/color"].encoding == "rgb8" and out["~/normals/color"].encoding == "rgb8"
    only = build_outputs(pred, rgb, header, {"~/depth"}, options)
    assert set(only) == {"~/depth"}
    assert POINTS not in build_outputs(pred, rgb, header, {POINTS}, options, None)  # no camera_info yet
