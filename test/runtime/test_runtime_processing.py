"""Pre/post-processing: resizing to the bundle size and back, per-output interpolation."""
from __future__ import annotations

import numpy as np

from mbmt_ros.runtime.processing import postprocess, resize_images


def test_resize_images_to_bundle_size() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    out = resize_images(images, (32, 48))
    assert out.shape == (2, 32, 48, 3) and out.dtype == np.uint8
    assert resize_images(out, (32, 48)) is not None
    flat = np.full((1, 50, 70, 3), 77, np.uint8)
    assert np.all(resize_images(flat, (32, 48)) == 77)


def test_postprocess_contract_and_interpolation() -> None:
    seg = np.array([[[0, 1], [2, 3]]], np.int32)          # (1, 2, 2)
    depth = np.array([[[1.0, 3.0], [1.0, 3.0]]], np.float32)
    normals = np.zeros((1, 3, 2, 2), np.float32)
    normals[0, 0, :, 0] = 1.0                             # left column points +x
    normals[0, 2, :, 1] = 1.0                             # right column points +z
    raw = {"segmentation": seg, "segmentation_confidence": depth / 4, "depth": depth,
           "normals": normals}
    (out,) = postprocess(raw, (4, 6))
    assert out["segmentation"].shape == (4, 6) and out["segmentation"].dtype == np.int32
    # nearest: only existing ids, quadrants preserved
    assert set(np.unique(out["segmentation"])) == {0, 1, 2, 3}
    assert out["segmentation"][0, 0] == 0 and out["segmentation"][3, 5] == 3
    # bilinear: values between the extremes, monotone left to right
    row = out["depth"][0]
    assert row.min() >= 1.0 and row.max() <= 3.0 and np.all(np.diff(row) >= 0)
    assert out["normals"].shape == (4, 6, 3)
    np.testing.assert_allclose(np.linalg.norm(out["normals"], axis=-1), 1.0, atol=1e-5)


def test_postprocess_same_size_is_identity() -> None:
    rng = np.random.default_rng(1)
    raw = {"segmentation": rng.integers(0, 5, (2, 8, 8)).astype(np.int32),
           "depth": rng.random((2, 8, 8), dtype=np.float32)}
    outs = postprocess(raw, (8, 8))
    assert len(outs) == 2
    for i, out in enumerate(outs):
        assert np.array_equal(out["segmentation"], raw["segmentation"][i])
        assert np.array_equal(out["depth"], raw["depth"][i])
