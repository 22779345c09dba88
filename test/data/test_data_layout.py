"""The MTAN NYUv2 / Cityscapes folder layout: accepted variants and every bad-input message."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import MultiTaskDataset
from training.data.check import check_dataset
from training.data.layout import detect_layout, list_indices, load_sample
from training.errors import DataError

H, W = 24, 32


def write_mtan(root: Path, n: int = 3, split: str = "train", cityscapes: bool = False) -> Path:
    """A folder like MTAN's preprocessed copies: float64 images in [0, 1], float labels with
    -1, depth (H, W, 1)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        arrays = {"image": rng.random((H, W, 3)),
                  "depth": rng.uniform(0.5, 5, (H, W, 1)).astype(np.float32)}
        label = rng.integers(-1, 7 if cityscapes else 13, (H, W)).astype(np.float32)
        if cityscapes:
            arrays["label_7"] = label
            arrays["label_19"] = rng.integers(-1, 19, (H, W)).astype(np.float32)
        else:
            arrays["label"] = label
            nrm = rng.normal(size=(H, W, 3))
            arrays["normal"] = (nrm / np.linalg.norm(nrm, axis=2, keepdims=True)).astype(
                np.float32)
        for folder, arr in arrays.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / split / folder / f"{i}.npy", arr)
    return root


def test_mtan_nyuv2_copy_loads_with_float_dtypes(tmp_path: Path) -> None:
    root = write_mtan(tmp_path / "nyu")
    ds = MultiTaskDataset(root, "train")  # no manifest: every file is ground truth
    assert len(ds) == 3 and ds.num_classes == 13
    item = ds[1]
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert item["segmentation"].dtype == torch.int64 and item["depth"].shape == (1, H, W)
    assert item["has_segmentation"] and item["has_depth"] and item["has_normals"]
    raw = np.load(root / "train" / "label" / "1.npy")
    np.testing.assert_array_equal(item["segmentation"].numpy(), raw.astype(np.int64))
    # the image is normalised with ImageNet statistics from [0, 1] floats
    img = np.load(root / "train" / "image" / "1.npy")
    expected = (img[5, 7, 0] - 0.485) / 0.229
    assert float(item["image"][0, 5, 7]) == pytest.approx(expected, abs=0.01)


def test_integer_labels_and_uint8_images_are_accepted(tmp_path: Path) -> None:
    root = write_mtan(tmp_path / "nyu", n=1)
    img = np.load(root / "train" / "image" / "0.npy")
    np.save(root / "train" / "image" / "0.npy", (img * 255).round().astype(np.uint8))
    lbl = np.load(root / "train" / "label" / "0.npy")
    np.save(root / "train" / "label" / "0.npy", lbl.astype(np.int8))
    np.save(root / "train" / "depth" / "0.npy", np.load(root / "train" / "depth" / "0.npy")[..., 0])
    s = load_sample(detect_layout(root), "train", 0)
    np.testing.assert_array_equal(s.segmentation, lbl.astype(np.int64))
    assert s.rgb.dtype == np.uint8 and s.depth.shape == (H, W)


def test_cityscapes_layout_7_and_19_classes(tmp_path: Path) -> None:
    root = write_mtan(tmp_path / "cs", cityscapes=True)
    ds7 = MultiTaskDataset(root, "train")
    assert ds7.num_classes == 7 and ds7.layout.kind == "cityscapes"
    item = ds7[0]
    assert item["has_segmentation"] and item["has_depth"] and not item["has_normals"]
    assert not item["normals"].any()
    ds19 = MultiTaskDataset(root, "train", label_folder="label_19")
    assert ds19.num_classes == 19
    raw = np.load(root / "train" / "label_19" / "0.npy")
    np.testing.assert_array_equal(ds19[0]["segmentation"].numpy(), raw.astype(np.int64))


def test_missing_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        detect_layout(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a train/ nor a val/"):
        detect_layout(tmp_path / "empty")
    root = write_mtan(tmp_path / "nyu")
    for f in (root / "train" / "normal").iterdir():
        f.unlink()
    (root / "train" / "normal").rmdir()
    with pytest.raises(DataError, match=r"missing folder .*train/normal"):
        MultiTaskDataset(root, "train")
    with pytest.raises(DataError, match=r"missing folder .*/val"):
        list_indices(detect_layout(root), "val")


def test_count_mismatch_names_the_files(tmp_path: Path) -> None:
    root = write_mtan(tmp_path / "nyu", n=4)
    (root / "train" / "label" / "2.npy").unlink()
    with pytest.raises(DataError, match=r"image/ has 4 files but label/ has 3; no label/ "
                                        r"partner for 2\.npy"):
        MultiTaskDataset(root, "train")
    np.save(root / "train" / "label" / "2.npy", np.zeros((H, W)))
    np.save(root / "train" / "depth" / "9.npy", np.zeros((H, W)))
    with pytest.raises(DataError, match=r"no image/ partner for 9\.npy"):
        check_dataset(root)
    (root / "train" / "depth" / "9.npy").unlink()
    np.save(root / "train" / "image" / "x.npy", np.zeros((H, W, 3)))
    with pytest.raises(DataError, match=r"x\.npy: unexpected file name"):
        check_dataset(root)


@pytest.mark.parametrize("folder, array, message", [
    ("image", np.zeros((H, W)), r"image/0\.npy: image has shape \(24, 32\); expected \(H, W, 3\)"),
    ("image", np.zeros((H, W, 3), np.int32), r"image dtype int32"),
    ("image", np.full((H, W, 3), 200.0), r"float image values span \[200, 200\]"),
    ("label", np.zeros((H + 1, W)), r"label/0\.npy: label is 25x32 but the image is 24x32"),
    ("label", np.full((H, W), 13.0), r"label values span \[13, 13\]; expected -1"),
    ("label", np.full((H, W), 0.5), r"non-integer values"),
    ("label", np.array(["a"] * H * W).reshape(H, W), r"label dtype <U1"),
    ("depth", np.zeros((H, W, 2)), r"depth/0\.npy: depth has shape \(24, 32, 2\)"),
    ("normal", np.zeros((H, W, 3), np.int64), r"normals have shape .* dtype int64"),
    ("normal", np.full((H, W, 3), 2.0, np.float32), r"normals exceed \[-1, 1\]"),
])
def test_bad_arrays_name_file_and_problem(tmp_path: Path, folder: str, array: np.ndarray,
                                          message: str) -> None:
    root = write_mtan(tmp_path / "nyu", n=1)
    np.save(root / "train" / folder / "0.npy", array)
    with pytest.raises(DataError, match=message):
        check_dataset(root)
    with pytest.raises(DataError, match=message):
        MultiTaskDataset(root, "train")[0]


def test_nan_in_image_is_reported(tmp_path: Path) -> None:
    root = write_mtan(tmp_path / "nyu", n=2)
    img = np.load(root / "train" / "image" / "1.npy")
    img[3, 3, 1] = np.nan
    np.save(root / "train" / "image" / "1.npy", img)
    with pytest.raises(DataError, match=r"image/1\.npy: image contains NaN"):
        check_dataset(root)


def test_nan_depth_is_invalid_not_an_error(tmp_path: Path) -> None:
    root = write_mtan(tmp_path / "nyu", n=1)
    depth = np.load(root / "train" / "depth" / "0.npy")
    depth[0, 0, 0] = np.nan
    np.save(root / "train" / "depth" / "0.npy", depth)
    assert float(MultiTaskDataset(root, "train")[0]["depth"][0, 0, 0]) == 0.0


def test_unreadable_file(tmp_path: Path) -> None:
    root = write_mtan(tmp_path / "nyu", n=1)
    (root / "train" / "depth" / "0.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"depth/0\.npy: not a readable \.npy"):
        check_dataset(root)
