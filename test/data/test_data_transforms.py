"""Sample checks and transforms: labels, masks and normals stay aligned with the image."""
from __future__ import annotations

import numpy as np
import pytest

from training.data.sample import Sample
from training.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    crop,
    hflip,
    resize,
)
from training.errors import DataError


def coordinate_sample(h: int = 32, w: int = 48) -> Sample:
    """Every label encodes the pixel's column so that misalignment is detectable."""
    cols = np.broadcast_to(np.arange(w), (h, w))
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    rgb = np.stack([cols * 5 % 256, rows * 7 % 256, np.zeros((h, w))], -1).astype(np.uint8)
    seg = cols % 13
    seg[:4, :4] = -1  # a void corner
    depth = (1.0 + cols / 10.0).astype(np.float32)
    depth[-3:, -5:] = 0  # an invalid corner
    nx = (cols / w - 0.5).astype(np.float32)
    normals = np.stack([nx, np.zeros_like(nx), -np.sqrt(1 - nx**2)], -1)
    normals[-3:, -5:] = 0
    return Sample(rgb, seg, depth, normals)


def test_sample_normalises_invalid_values() -> None:
    depth = np.ones((4, 5), np.float32)
    depth[0, 0], depth[0, 1] = np.nan, -2
    s = Sample(np.zeros((4, 5, 3), np.uint8), depth=depth[..., None])
    assert s.depth.shape == (4, 5) and s.depth[0, 0] == 0 and s.depth[0, 1] == 0
    assert s.valid("depth").sum() == 18 and not s.valid("segmentation").any()
    assert s.tasks == ("depth",)
    with pytest.raises(ValueError, match="segmentation shape"):
        Sample(np.zeros((4, 5, 3), np.uint8), segmentation=np.zeros((5, 4)))


def test_hflip_mirrors_everything_and_negates_normal_x() -> None:
    s = coordinate_sample()
    f = hflip(s)
    np.testing.assert_array_equal(f.rgb, s.rgb[:, ::-1])
    np.testing.assert_array_equal(f.segmentation, s.segmentation[:, ::-1])
    np.testing.assert_array_equal(f.depth, s.depth[:, ::-1])
    np.testing.assert_array_equal(f.normals[..., 0], -s.normals[:, ::-1, 0])
    np.testing.assert_array_equal(f.normals[..., 1:], s.normals[:, ::-1, 1:])
    np.testing.assert_array_equal(f.valid("normals"), s.valid("normals")[:, ::-1])
    # a surface facing right (+x) faces left after mirroring
    assert f.normals[5, 0, 0] < 0 < s.normals[5, -1, 0]
    np.testing.assert_array_equal(hflip(f).normals, s.normals)


def test_crop_keeps_alignment() -> None:
    s = coordinate_sample()
    c = crop(s, 2, 10, 20, 30)
    assert c.size == (20, 30)
    np.testing.assert_array_equal(c.segmentation, s.segmentation[2:22, 10:40])
    np.testing.assert_array_equal(c.depth, s.depth[2:22, 10:40])
    np.testing.assert_array_equal(c.rgb, s.rgb[2:22, 10:40])
    with pytest.raises(DataError, match="does not fit"):
        crop(s, 20, 0, 20, 10)
    with pytest.raises(DataError, match="larger than"):
        RandomCrop(64, 64)(s, np.random.default_rng(0))


def test_resize_uses_nearest_for_labels() -> None:
    s = coordinate_sample()
    r = resize(s, (16, 24))
    assert r.size == (16, 24)
    # labels are picked, never blended: every value exists in the source
    assert set(np.unique(r.segmentation)) <= set(np.unique(s.segmentation))
    assert set(np.unique(r.depth)) <= set(np.unique(s.depth))
    # the column code stays aligned: depth column j comes from source column 2j (+1)
    src_cols = np.rint((r.depth[8] - 1.0) * 10).astype(int)
    assert np.all(np.abs(src_cols[:-2] - 2 * np.arange(22)) <= 1)
    assert r.valid("depth").mean() == pytest.approx(s.valid("depth").mean(), abs=0.02)
    up = resize(s, (64, 96))
    np.testing.assert_array_equal(up.segmentation[::2, ::2], s.segmentation)


def test_random_pipeline_is_reproducible_and_aligned() -> None:
    s = coordinate_sample()
    t = Compose([Resize(32, 48), RandomCrop(24, 40), RandomHorizontalFlip(0.5)])
    a = t(s, np.random.default_rng(7))
    b = t(s, np.random.default_rng(7))
    np.testing.assert_array_equal(a.normals, b.normals)
    # whichever window/flip was drawn, depth and segmentation still encode the same column
    col_from_depth = np.rint((a.depth - 1.0) * 10).astype(int)
    valid = (a.depth > 0) & (a.segmentation >= 0)
    np.testing.assert_array_equal((col_from_depth % 13)[valid], a.segmentation[valid])
    flips = set()
    for k in range(20):
        out = t(s, np.random.default_rng(k))
        flipped = bool(out.depth[0, 0] > out.depth[0, -1])
        flips.add(flipped)
        src_col = np.rint((out.depth - 1.0) * 10)
        expected_nx = (src_col / 48 - 0.5) * (-1 if flipped else 1)
        ok = out.valid("normals")
        np.testing.assert_allclose(out.normals[..., 0][ok], expected_nx[ok], atol=1e-6)
    assert flips == {True, False}
