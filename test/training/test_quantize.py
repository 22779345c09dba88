"""``mbmt-train quantize`` end to end on tiny data: the INT8 graph lands in the bundle with its
calibration set and accuracy delta, runs INT8 on ONNX Runtime and OpenVINO through
``open_predictor``; over a limit nothing is written; the delta and limit arithmetic."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.quantize import Limits, _delta, _enforce, evenly_spaced

TINY = {"arch": "mbmt", "backbones": ["test_efficientnet"] * 2, "freeze_backbones": False,
        "fpn_channels": 16, "head_channels": 8, "task_hidden_channels": 16, "num_classes": 13}
SIZE = (64, 96)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synth.generate import write_synth_dataset

    return write_synth_dataset(tmp_path_factory.mktemp("q") / "data", count=14, height=SIZE[0],
                               width=SIZE[1], seed=3, val_fraction=0.25, bag=False)


@pytest.fixture(scope="module")
def bundle_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from mbmt_ros.models import build_model
    from training.export import export_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("q") / "bundle"
    return export_model(build_model(TINY, load_weights=False), out, input_size=SIZE,
                        exporter="torchscript", fp16=False)


@pytest.fixture
def bundle(bundle_master: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_master, tmp_path / "bundle"))


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
            if p.is_file()}


@pytest.mark.slow
def test_cli_writes_int8_graph_and_both_backends_run_it(bundle, dataset, capsys) -> None:
    from mbmt_ros.runtime import Bundle, open_predictor
    from training.cli import main

    code = main(["quantize", "--bundle", str(bundle), "--data", str(dataset), "--frames", "6",
                 "--max-miou-drop", "100", "--max-depth-increase", "1000",
                 "--max-normals-increase", "1000"])
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    loaded = Bundle.load(bundle, verify_checksums=True)  # meta lists it with its checksum
    assert loaded.int8_model_path == bundle / "model_int8.onnx"
    record = loaded.meta["quantization"]["int8"]
    assert record["calibration"]["split"] == "train" and record["calibration"]["frames"] == 6
    train = sorted(int(p.stem) for p in (dataset / "train" / "image").glob("*.npy"))
    assert record["calibration"]["indices"] == evenly_spaced(train, 6)
    accuracy = record["accuracy"]
    assert accuracy["split"] == "val" and accuracy["frames"] == 4
    backends = ["onnxruntime"] + (["openvino"] if _has_openvino() else [])
    assert sorted(accuracy["variants"]) == sorted(backends)
    for name in backends:
        assert set(accuracy["variants"][name]) >= {"segmentation", "depth"}
        assert accuracy["delta"][name]["miou_drop_points"] == pytest.approx(
            accuracy["fp32"]["segmentation"]["miou"]
            - accuracy["variants"][name]["segmentation"]["miou"])
    from training.data.layout import read_image

    image = read_image(sorted((dataset / "val" / "image").glob("*.npy"))[0])
    with open_predictor(bundle, backend="onnxruntime", precision="fp32", device="cpu") as ref:
        fp32 = ref.predict(image)
    for name in backends:
        with open_predictor(bundle, backend=name, precision="int8", device="cpu") as pred:
            assert pred.precision == "int8"
            out = pred.predict(image)
        assert out["segmentation"].shape == SIZE and out["depth"].dtype == np.float32
        assert np.mean(out["segmentation"] == fp32["segmentation"]) > 0.8
        assert np.abs(out["normals"] - fp32["normals"]).mean() < 0.1
    # the gate measured normals, and the INT8 figures on the reference set the robot's
    # verify derives its INT8 limits from
    for name in backends:
        assert accuracy["delta"][name]["normals_mean_err_increase_deg"] is not None
        assert accuracy["agreement"][name]["normals_mean_angle_diff_deg"] >= 0.0
        assert set(record["reference"][name]) == {"segmentation_agreement", "depth_rel_error",
                                                  "normals_angle_deg"}
    assert record["limits"]["max_normals_mean_err_increase_deg"] == 1000
    from mbmt_ros.runtime.verify import limits_for

    derived = limits_for(loaded, "int8")
    worst = min(f["segmentation_agreement"] for f in record["reference"].values())
    assert derived.min_segmentation_agreement == pytest.approx(
        max(0.0, 1.0 - (2 * (1.0 - worst) + 0.02)))
    with open_predictor(bundle, backend="onnxruntime", precision="int8", device="cpu",
                        verify=True) as pred:  # the same machine passes its own gate
        assert pred.verification.passed, pred.verification.summary


def _has_openvino() -> bool:
    from mbmt_ros.runtime import BACKENDS

    return BACKENDS["openvino"].availability("cpu") is None


def test_over_the_limit_nothing_is_written(bundle, dataset, capsys) -> None:
    from training.cli import main

    before = _digests(bundle)
    # a limit that demands INT8 be 50 % *better* than FP32: the measured delta exceeds it
    code = main(["quantize", "--bundle", str(bundle), "--data", str(dataset), "--frames", "3",
                 "--val-frames", "1", "--max-depth-increase", "-50", "--backends", "onnxruntime"])
    err = capsys.readouterr().err
    assert code == 2 and "refused, nothing was written" in err and "--max-depth-increase" in err
    assert len(err.strip().splitlines()) == 1
    assert _digests(bundle) == before and not (bundle / "model_int8.onnx").exists()


def test_bad_input_is_one_line_error(bundle, dataset, tmp_path, capsys) -> None:
    from training.cli import main

    assert main(["quantize", "--bundle", str(bundle), "--data", str(dataset),
                 "--frames", "0"]) == 2
    assert "--frames must be at least 1" in capsys.readouterr().err
    assert main(["quantize", "--bundle", str(bundle), "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["quantize", "--bundle", str(tmp_path / "none"), "--data", str(dataset)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_evenly_spaced_and_delta_arithmetic() -> None:
    assert evenly_spaced(list(range(10)), 3) == [0, 4, 9]
    assert evenly_spaced([5, 7], 10) == [5, 7] and evenly_spaced([1, 2, 3], None) == [1, 2, 3]
    fp32 = {"segmentation": {"miou": 50.0}, "depth": {"abs_err": 0.40}}
    int8 = {"segmentation": {"miou": 49.2}, "depth": {"abs_err": 0.41}}
    delta = _delta(fp32, int8)
    assert delta["miou_drop_points"] == pytest.approx(0.8)
    assert delta["depth_abs_err_increase_pct"] == pytest.approx(2.5)
    report = {"split": "val", "frames": 9, "delta": {"openvino": delta}}
    _enforce(report, Limits(max_miou_drop=1.0, max_depth_increase_pct=3.0))  # within
    from training.quantize import AccuracyLimitError

    with pytest.raises(AccuracyLimitError, match=r"depth abs err \+2.50 % > 2 %"):
        _enforce(report, Limits())  # defaults: 1 point, 2 %
    with pytest.raises(AccuracyLimitError, match=r"mIoU -0.80 points > 0.5"):
        _enforce(report, Limits(max_miou_drop=0.5, max_depth_increase_pct=5.0))
    assert _delta({"depth": {"abs_err": 1.0}}, {"depth": {"abs_err": 1.0}}) == {
        "miou_drop_points": None, "depth_abs_err_increase_pct": 0.0,
        "normals_mean_err_increase_deg": None}
    # normals are part of the gate: mean angle error increase in degrees
    normals = _delta({"normals": {"mean": 30.0}}, {"normals": {"mean": 32.5}})
    assert normals["normals_mean_err_increase_deg"] == pytest.approx(2.5)
    with pytest.raises(AccuracyLimitError, match=r"normals mean angle err \+2.50 deg > 2 deg"):
        _enforce({"split": "val", "frames": 9, "delta": {"onnxruntime": normals}}, Limits())
    _enforce({"split": "val", "frames": 9, "delta": {"onnxruntime": normals}},
             Limits(max_normals_increase_deg=3.0))
    assert json.dumps(delta)  # recorded in meta.json as plain numbers
