"""``mbmt-train score`` end to end through the CLI, against hand-computed metrics."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.commands.score import score_folder
from training.errors import DataError

MBMT_TRAIN = Path(sys.executable).parent / "mbmt-train"
NAN = float("nan")


def _unit(deg: float) -> list[float]:
    r = math.radians(deg)
    return [math.sin(r), 0.0, math.cos(r)]


def _normals(angles: list[float | None]) -> np.ndarray:
    """(2, 3, 3) normals at ``angles`` degrees from +z; None -> zero vector."""
    return np.array([_unit(a) if a is not None else [0, 0, 0] for a in angles],
                    dtype=np.float32).reshape(2, 3, 3)


# Ground truth of two 2x3 samples and predictions, with the metrics computed by hand below.
GT = {
    0: {"label": np.array([[0, 0, 1], [1, 2, -1]], dtype=np.float32),
        "depth": np.array([[1, 1, 2], [1, 0, NAN]], dtype=np.float32)[..., None],
        "normal": _normals([0, 0, 0, 0, 0, None])},
    1: {"label": np.array([[2, 2, 2], [0, -1, -1]], dtype=np.int16),
        "depth": np.array([[1, 1, 1], [1, 0, 0]], dtype=np.float32),
        "normal": _normals([0, 0, 0, None, None, None])},
}
PRED = {
    0: {"segmentation": np.array([[0, 1, 1], [2, 2, 0]], dtype=np.int32),
        "depth": np.array([[2, 1, 2.4], [1.5, 5, 7]], dtype=np.float32),
        "normals": _normals([0, 45, 90, 10, 25, 60])},
    1: {"segmentation": np.array([[2, 2, 0], [0, 1, 1]], dtype=np.uint8),
        "depth": np.array([[3, 2, 2], [2, 9, 9]], dtype=np.float32),
        "normals": _normals([40, 20, 50, 0, 0, 0])},
}
# segmentation, pooled (gt, pred) counts: (0,0) 2, (0,1) 1, (1,1) 1, (1,2) 1, (2,2) 3, (2,0) 1
#   IoU0 = 2 / (3 + 3 - 2) = 1/2, IoU1 = 1 / (2 + 2 - 1) = 1/3, IoU2 = 3 / (4 + 4 - 3) = 3/5
#   pixel acc = 6 / 9
# depth valid (p, g): (2,1) (1,1) (2.4,2) (1.5,1) | (3,1) (2,1) (2,1) (2,1)
#   |p-g| = 1 0 .4 .5 2 1 1 1 (sum 6.9); |p-g|/g = 1 0 .2 .5 2 1 1 1 (sum 6.7)
#   (p-g)^2 sum = 1 + .16 + .25 + 4 + 3 = 8.41; ratios 2 1 1.2 1.5 3 2 2 2
# normals errors: 0 45 90 10 25 | 40 20 50 -> sorted 0 10 20 25 40 45 50 90
EXPECTED = {
    "segmentation": {"miou": 100 * (1 / 2 + 1 / 3 + 3 / 5) / 3, "pixel_acc": 100 * 6 / 9},
    "depth": {
        "abs_err": 6.9 / 8, "rel_err": 6.7 / 8, "rmse": math.sqrt(8.41 / 8),
        "log_rmse": math.sqrt((4 * math.log(2) ** 2 + math.log(1.2) ** 2
                               + math.log(1.5) ** 2 + math.log(3) ** 2) / 8),
        "delta1": 100 * 2 / 8, "delta2": 100 * 3 / 8, "delta3": 100 * 3 / 8,
    },
    "normals": {"mean": 280 / 8, "median": (25 + 40) / 2, "within_11_25": 100 * 2 / 8,
                "within_22_5": 100 * 3 / 8, "within_30": 100 * 4 / 8},
}


def _write_dataset(root: Path, manifest: dict | None = None) -> Path:
    for index, files in GT.items():
        arrays = {"image": np.zeros((2, 3, 3), dtype=np.uint8), **files}
        for folder, arr in arrays.items():
            (root / "val" / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / "val" / folder / f"{index}.npy", arr)
    if manifest is not None:
        (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _write_predictions(folder: Path, tasks=("segmentation", "depth", "normals")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, arrays in PRED.items():
        np.savez(folder / f"{index}.npz", **{t: arrays[t] for t in tasks})
    return folder


def _score(pred: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(MBMT_TRAIN), "score", "--pred", str(pred), "--data", str(data),
           "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _manifest(num_classes: int, labels: dict[int, list[str]]) -> dict:
    return {"format": "mbmt_ros.manifest", "version": 1, "num_classes": num_classes,
            "samples": [{"split": "val", "index": i, "labels": {t: "gt" for t in tasks}}
                        for i, tasks in labels.items()]}


def _assert_metrics(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for task, values in expected.items():
        assert set(got[task]) == set(values)
        for key, value in values.items():
            assert got[task][key] == pytest.approx(value, rel=1e-5, abs=1e-4), (task, key)


def test_score_cli_end_to_end(tmp_path):
    data = _write_dataset(tmp_path / "data")
    pred = _write_predictions(tmp_path / "pred")
    out = tmp_path / "out" / "metrics.json"
    result = _score(pred, data, out, "--split", "val", "--num-classes", "3")
    assert result.returncode == 0, result.stderr
    _assert_metrics(json.loads(out.read_text()), EXPECTED)
    assert "miou" in result.stdout
    assert not list(out.parent.glob(".*tmp"))  # written atomically, no temp file left


def test_score_task_missing_from_predictions_is_left_out(tmp_path):
    data = _write_dataset(tmp_path / "data")
    pred = _write_predictions(tmp_path / "pred", tasks=("depth",))
    out = tmp_path / "metrics.json"
    result = _score(pred, data, out)
    assert result.returncode == 0, result.stderr
    _assert_metrics(json.loads(out.read_text()), {"depth": EXPECTED["depth"]})


def test_score_num_classes_from_manifest_and_unlabelled_samples(tmp_path):
    manifest = _manifest(3, {0: ["segmentation", "depth", "normals"], 1: ["depth", "normals"]})
    data = _write_dataset(tmp_path / "data", manifest)
    (data / "val" / "label" / "1.npy").unlink()  # sample 1 has no segmentation label
    pred = _write_predictions(tmp_path / "pred")
    out = tmp_path / "metrics.json"
    result = _score(pred, data, out)  # no --num-classes: the manifest's 3
    assert result.returncode == 0, result.stderr
    # sample 0 only: IoU (1/2 + 1/3 + 1/2) / 3 = 4/9, pixel acc 3/5
    expected = dict(EXPECTED, segmentation={"miou": 100 * 4 / 9, "pixel_acc": 60.0})
    _assert_metrics(json.loads(out.read_text()), expected)
    result = _score(pred, data, out, "--num-classes", "5")
    assert result.returncode == 2
    assert "contradicts" in result.stderr


def _break_missing(pred: Path, data: Path) -> None:
    (pred / "1.npz").unlink()


def _break_shape(pred: Path, data: Path) -> None:
    np.savez(pred / "1.npz", **dict(PRED[1], depth=np.ones((3, 2), np.float32)))


def _break_not_npz(pred: Path, data: Path) -> None:
    with open(pred / "1.npz", "wb") as fh:
        np.save(fh, PRED[1]["depth"])


def _break_garbage(pred: Path, data: Path) -> None:
    (pred / "1.npz").write_bytes(b"this is not an archive")


def _break_pickled(pred: Path, data: Path) -> None:
    obj = np.empty(1, dtype=object)
    obj[0] = {"a": 1}
    np.savez(pred / "1.npz", **dict(PRED[1], depth=obj))


def _break_tasks(pred: Path, data: Path) -> None:
    np.savez(pred / "1.npz", depth=PRED[1]["depth"])


def _break_class(pred: Path, data: Path) -> None:
    np.savez(pred / "1.npz", **dict(PRED[1], segmentation=np.full((2, 3), 7)))


def _break_no_normals(pred: Path, data: Path) -> None:
    for f in (data / "val" / "normal").iterdir():
        f.unlink()
    (data / "val" / "normal").rmdir()


def _break_missing_gt(pred: Path, data: Path) -> None:
    (data / "val" / "depth" / "0.npy").unlink()


@pytest.mark.parametrize(("breaker", "message"), [
    (_break_missing, r"1\.npz is missing"),
    (_break_shape, r"1\.npz: depth prediction has shape \(3, 2\).*\(2, 3\)"),
    (_break_not_npz, r"1\.npz: holds a single array, not an \.npz archive"),
    (_break_garbage, r"1\.npz: not a readable \.npz archive"),
    (_break_pickled, r"1\.npz: cannot read its arrays"),
    (_break_tasks, r"1\.npz: holds tasks \['depth'\]"),
    (_break_class, r"1\.npz: segmentation: predicted class 7"),
    (_break_no_normals, r"no ground truth for \['normals'\]"),
    (_break_missing_gt, r"depth/0\.npy is missing"),
])
def test_score_cli_errors_name_the_file(tmp_path, breaker, message):
    data = _write_dataset(tmp_path / "data")
    pred = _write_predictions(tmp_path / "pred")
    breaker(pred, data)
    out = tmp_path / "metrics.json"
    result = _score(pred, data, out, "--num-classes", "3")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("mbmt-train score: error:")
    assert re.search(message, result.stderr), result.stderr
    assert not out.exists()


def test_score_folder_in_process_matches_and_rejects_bad_folders(tmp_path):
    data = _write_dataset(tmp_path / "data")
    pred = _write_predictions(tmp_path / "pred")
    _assert_metrics(score_folder(pred, data, "val", num_classes=3), EXPECTED)
    with pytest.raises(DataError, match="does not exist"):
        score_folder(tmp_path / "nope", data)
    with pytest.raises(DataError, match="train"):
        score_folder(pred, data, "train", num_classes=3)
