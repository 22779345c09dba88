"""Every shipped NYUv2 config through ``mbmt-train pipeline`` on datasets exactly as MTAN ships
them (float64 files, labels with -1 void, depth (H, W, 1), no manifest.json) - synthetic
scenes (always) and real NYU frames from ../shared/data (skipped when absent) - plus MTAN's
Cityscapes copy (``label_7`` / ``label_19``, no normals).

Each run swaps in timm's tiny ``test_efficientnet`` backbones, 32x32 inputs and one epoch with
``--set``: the configs' own stages and stage kinds (make-split, pretrain-st, assemble,
train-mbmt, train-mt, train-teacher, pseudo-label, train-student, affinity, evaluate, export),
only smaller. The CLI's ``main`` runs in-process to save the per-config interpreter start-up.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mtan_folders import real_nyu_frames, synthetic_frames, write_mtan_folder

from training.cli import main as mbmt_train

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "config" / "train"
TINY_HEADS = ["model.fpn_channels=16", "model.head_channels=8", "model.task_hidden_channels=16"]
TB = "test_efficientnet"
#: config -> the --set overrides that make its networks tiny (its stages stay as they are)
TINY = {
    "nyuv2_mbmt": [f"model.backbones=[{TB},{TB},{TB}]", *TINY_HEADS,
                   f"stages.mt.model.backbone={TB}", "stages.mt.model.pretrained=null",
                   "stages.pretrain-st.model.pretrained=null"],
    "nyuv2_imbalanced": [f"model.backbone={TB}", *TINY_HEADS, "stages.split.depth=4",
                         "model.pretrained=null", "stages.teacher.model.pretrained=null",
                         "stages.split.segmentation=2", "stages.pseudo.tau=0.0"],
    "nyuv2_imbalanced_mti_teacher": [
        f"model.backbone={TB}", "model.head_channels=8", "model.task_channels=8",
        "model.pretrained=null", "stages.ummt.model.pretrained=null",
        "stages.ummt-ps.model.pretrained=null",
        "stages.split.depth=4", "stages.split.segmentation=2", "stages.pseudo.tau=0.0",
        f"stages.ummt.model.backbones=[{TB}]", f"stages.ummt-ps.model.backbones=[{TB}]"],
    "nyuv2_mtinet": [f"model.backbones=[{TB}]", *TINY_HEADS, "model.task_channels=8",
                     "model.pretrained=null", "stages.pretrain-st.model.pretrained=null"],
    "nyuv2_mtunet": ["model.base_channels=4", f"stages.pretrain-st.model.backbone={TB}",
                     "stages.pretrain-st.model.pretrained=null",
                     *TINY_HEADS],
}
BUDGET = ["train.epochs=1", "train.batch_size=2", "train.num_workers=0", "train.augment=false",
          "data.input_size=[32,32]", "train.log_every_n_steps=1"]


def test_every_shipped_nyuv2_config_is_covered():
    shipped = sorted(p.stem for p in CONFIGS.glob("nyuv2_*.yaml"))
    assert shipped == sorted(TINY)


def run_pipeline(config: str, data: Path, run: Path, *extra: str) -> int:
    sets = [*BUDGET, f"data.root={data}", *TINY[config], *extra]
    argv = ["pipeline", "--config", str(CONFIGS / f"{config}.yaml"), "--run-dir", str(run)]
    for item in sets:
        argv += ["--set", item]
    return mbmt_train(argv)


def assert_finished(config: str, run: Path) -> None:
    from training.config import load_config

    for spec in load_config(CONFIGS / f"{config}.yaml").stages:
        done = json.loads((run / spec.name / "done.json").read_text())
        assert done["kind"] == spec.kind
    assert (run / "results.md").is_file()
    assert (run / "export" / "bundle" / "model.onnx").is_file()


@pytest.fixture(scope="module")
def mtan_nyuv2(tmp_path_factory) -> Path:
    """6 synthetic scenes (4 train, 2 val) written exactly in MTAN's NYUv2 dtypes."""
    return write_mtan_folder(tmp_path_factory.mktemp("mtan") / "nyuv2",
                             synthetic_frames(6, 32, 40), n_val=2)


def test_folder_is_mtan_as_downloaded(mtan_nyuv2):
    import numpy as np

    assert not (mtan_nyuv2 / "manifest.json").exists()
    image = np.load(mtan_nyuv2 / "train" / "image" / "0.npy")
    label = np.load(mtan_nyuv2 / "train" / "label" / "0.npy")
    depth = np.load(mtan_nyuv2 / "train" / "depth" / "0.npy")
    assert image.dtype == np.float64 and image.shape == (32, 40, 3) and image.max() <= 1.0
    assert label.dtype == np.float64 and label.min() >= -1
    assert depth.shape == (32, 40, 1)


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(TINY))
def test_shipped_config_runs_on_mtan_nyuv2(config, mtan_nyuv2, tmp_path):
    assert run_pipeline(config, mtan_nyuv2, tmp_path / "run") == 0
    assert_finished(config, tmp_path / "run")
    assert not (mtan_nyuv2 / "manifest.json").exists()  # the dataset folder is left as it was


@pytest.mark.slow
def test_real_nyu_frames_with_a_validation_split_carved_from_train(shared_data, tmp_path):
    """Real NYU frames in MTAN dtypes; ``data.val_from_train`` validates on held-out training
    frames, which make-split never draws, so the official test split is only evaluated."""
    data = write_mtan_folder(tmp_path / "nyuv2",
                             real_nyu_frames(shared_data, 10, 48, 64, tmp_path), n_val=2)
    run = tmp_path / "run"
    assert run_pipeline("nyuv2_imbalanced", data, run, "data.val_from_train=0.25",
                        "stages.split.depth=4", "stages.split.segmentation=2") == 0
    assert_finished("nyuv2_imbalanced", run)
    split = json.loads((run / "split" / "manifest.json").read_text())
    from training.data.manifest import Manifest, holdout_indices

    held = holdout_indices(Manifest.from_layout(data), 0.25, 0, "train")
    assert len(held) == 2
    train = {s["index"] for s in split["samples"] if s["split"] == "train"}
    assert len(train) == 4 and not train & held
    teacher = json.loads((run / "teacher" / "done.json").read_text())
    assert teacher["train_samples"] == 2  # the two frames with both labels, none held out


@pytest.mark.slow
def test_cityscapes_copy_without_manifest(tmp_path):
    """MTAN's Cityscapes: label_7 (7 classes) and depth, no normals, no manifest."""
    data = write_mtan_folder(tmp_path / "cityscapes", synthetic_frames(6, 32, 64), n_val=2,
                             cityscapes=True)
    run = tmp_path / "run"
    assert run_pipeline("nyuv2_imbalanced", data, run, "model.num_classes=7") == 0
    assert_finished("nyuv2_imbalanced", run)
    meta = json.loads((run / "export" / "bundle" / "meta.json").read_text())
    assert len(meta["class_names"]) == 7
