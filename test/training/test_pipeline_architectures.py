"""``mbmt-train pipeline`` on ``config/train/tiny_architectures.yaml`` end to end through the CLI:
MTI-Net (deep supervision, auxiliary edges), MTI-Net decoding MBMT's frozen ST backbones,
MT-UNet with its learned weighting, the MTI teacher -> pseudo labels -> MTI-Net students,
evaluation tables and both exported bundles; and a 2-process DDP run (``torchrun``, gloo on CPU)
of a stage whose batches lack a task's labels.

At a reduced budget (16 synthetic 32x64 frames, one epoch; the teacher 15 quick epochs) - the
same stages and code paths as the shipped config.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_budget import ENV, SMALL

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "train" / "tiny_architectures.yaml"
BIN = Path(sys.executable).parent
STAGES = ["split", "pretrain-st", "mtinet", "assemble-mti", "mbmt-mti", "mtunet", "teacher",
          "pseudo", "ummt", "ummt-ps", "evaluate", "export-mtinet", "export-mtunet"]
TRAINED = {"mtinet": "mtinet", "mbmt-mti": "mtinet", "mtunet": "mtunet",
           "teacher": "mti_teacher", "ummt": "mtinet", "ummt-ps": "mtinet"}

pytestmark = pytest.mark.slow


def mbmt_train(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mbmt-train"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=ENV)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("archs") / "run"
    proc = mbmt_train("pipeline", "--config", str(CONFIG), "--run-dir", str(out), *SMALL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_every_architecture_is_trained_by_the_stages(run):
    from mbmt_ros.models import load_model, read_checkpoint_config

    for stage in STAGES:
        assert json.loads((run / stage / "done.json").read_text())["stage"] == stage
    for stage, arch in TRAINED.items():
        model = load_model(run / stage / "model.safetensors", expected_arch=arch)
        assert model.num_classes == 13
    mtinet = load_model(run / "mtinet" / "model.safetensors")
    assert mtinet.tasks == ("segmentation", "depth", "normals") and mtinet.aux_tasks == ("edges",)
    teacher = read_checkpoint_config(run / "teacher" / "model.safetensors")
    assert teacher["extra_modality"] == "depth" and teacher["task_channels"] == 8
    student = load_model(run / "ummt-ps" / "model.safetensors")
    assert student.tasks == ("segmentation", "depth") and student.extra_channels == 0
    # MT-UNet's Eq. 5 weights sum to 1 and were optimised in their own group at lr 1e-3
    from training.checkpoint_io import load_resume_state

    done = json.loads((run / "mtunet" / "done.json").read_text())
    assert sum(done["weights"].values()) == pytest.approx(1.0)
    groups = load_resume_state(run / "mtunet" / "checkpoints" / "last.ckpt")[
        "optimizer_states"][0]["param_groups"]
    assert [g["lr"] for g in groups] == [2.0e-3, 1.0e-3]


def test_mtinet_is_deeply_supervised(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "mtinet" / "logs")).Reload()
    aux = [e.value for e in events.Scalars("train/loss_auxiliary_epoch")]
    assert aux and all(np.isfinite(aux)) and min(aux) > 0
    # MT-UNet has no initial predictions: nothing auxiliary is logged
    assert "train/loss_auxiliary_epoch" not in EventAccumulator(
        str(run / "mtunet" / "logs")).Reload().Tags()["scalars"]


def test_mti_net_decodes_the_frozen_single_task_backbones(run):
    from mbmt_ros.models import load_model, read_checkpoint_config

    cfg = read_checkpoint_config(run / "mbmt-mti" / "model.safetensors")
    tasks = ("segmentation", "depth", "normals")
    assert cfg["freeze_backbones"] is True and cfg["fusion"] == "cat"
    assert cfg["backbone_checkpoints"] == [
        str(run / "pretrain-st" / t / "model.safetensors") for t in tasks]
    model = load_model(run / "mbmt-mti" / "model.safetensors")
    for i, task in enumerate(tasks):
        st = load_model(run / "pretrain-st" / task / "model.safetensors")
        ours = model.encoder.backbones[i].state_dict()
        theirs = st.encoder.backbones[0].state_dict()
        assert all(np.array_equal(ours[k].numpy(), theirs[k].numpy()) for k in theirs)


def test_mti_teacher_pseudo_labels(run):
    prov = json.loads((run / "pseudo" / "pseudo_labels.json").read_text())
    assert prov["teacher_checkpoint"] == str(run / "teacher" / "model.safetensors")
    assert prov["teacher_extra_modality"] == "depth" and prov["frames"] == 8
    assert 0 < prov["coverage"] < 1
    manifest = json.loads((run / "pseudo" / "manifest.json").read_text())
    pseudo = [s for s in manifest["samples"] if s["labels"].get("segmentation") == "pseudo"]
    assert len(pseudo) == 8


def test_results_and_bundles(run):
    results = (run / "results.md").read_text()
    for stage in ["pretrain-st", *TRAINED]:
        assert f"| {stage} |" in results
    for label in ("MTI-Net test_efficientnet, aux edges",
                  "MTI-Net 3xtest_efficientnet, aux edges, ST-pretrained, backbones frozen",
                  "MT-UNet base 4", "MTI teacher test_efficientnet + test_efficientnet (FFM)",
                  "student MTI-Net test_efficientnet"):
        assert label in results
    for stage in TRAINED:
        assert (run / stage / "metrics.json").is_file()
        assert (run / stage / "plots" / "val.png").is_file()
    for stage, arch in (("export-mtinet", "mtinet"), ("export-mtunet", "mtunet")):
        meta = json.loads((run / stage / "bundle" / "meta.json").read_text())
        assert meta["arch"] == arch and meta["input_size"] == [32, 64]
        assert meta["tasks"] == ["segmentation", "depth", "normals"]
        assert meta["parity"]["fp32"]["segmentation_agreement"] >= 0.999
        assert (run / stage / "bundle" / "model.onnx").is_file()


def test_ddp_with_batches_missing_a_task(tmp_path):
    """Two ranks train the MTI-Net student on the imbalanced split with batch 2: most batches
    have no segmentation label, so the segmentation and edge heads get no gradient there - plain
    DDP fails on that; the stages ask for its unused-parameter search."""
    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        torchrun = Path(shutil.which("torchrun") or "torchrun")
    out = tmp_path / "run"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "training.cli",
           "pipeline", "--config", str(CONFIG), "--run-dir", str(out), *SMALL,
           "--set", "train.batch_size=2",
           "--set", "train.devices=2", "--set", "train.strategy=ddp",
           "--set", "train.accelerator=cpu",
           "--set", "stages=[{name: split, kind: make-split, depth: 12, segmentation: 2},"
                    "{name: ummt, kind: train-student, manifest: split}]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done = json.loads((out / "ummt" / "done.json").read_text())
    assert done["epochs"] == 1 and done["train_samples"] == 12
    # 12 frames over 2 ranks, batch 2: 3 steps; only 2 frames carry segmentation
    assert done["global_step"] == 3
