"""``mbmt-train pipeline`` on the tiny config, end to end through the CLI: every stage's files on
disk, the MBMT assembly, pseudo labels with provenance, evaluation tables and grids, the
exported bundle, re-running (finished stages skipped) and the stage commands' error messages.

The tiny config runs at a reduced budget here (16 synthetic 32x64 frames, one epoch) - the same
stages and code paths as ``mbmt-train pipeline --config config/train/tiny.yaml``.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pipeline_budget import ENV, SMALL

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "config" / "train" / "tiny.yaml"
MBMT_TRAIN = Path(sys.executable).parent / "mbmt-train"
STAGES = ["split", "pretrain-st", "assemble", "mbmt", "mbmt-cold", "mt", "teacher", "pseudo",
          "ummt", "ummt-ps", "evaluate", "export"]
TRAINED = ["mbmt", "mbmt-cold", "mt", "teacher", "ummt", "ummt-ps"]


def mbmt_train(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(MBMT_TRAIN), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=ENV)


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tiny") / "run"
    proc = mbmt_train("pipeline", "--config", str(TINY), "--run-dir", str(run), *SMALL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "finished" in proc.stdout and str(run / "results.md") in proc.stdout
    return run


pytestmark = pytest.mark.slow


def test_every_stage_completed_with_its_artefacts(tiny_run):
    from mbmt_ros.models import load_model

    for stage in STAGES:
        done = json.loads((tiny_run / stage / "done.json").read_text())
        assert done["stage"] == stage and done["config_digest"]
    assert (tiny_run / "config.yaml").is_file() and (tiny_run / "pipeline.log").is_file()
    assert (tiny_run / "data" / "manifest.json").is_file()  # generated from data.synth
    for task in ("segmentation", "depth", "normals"):
        st = load_model(tiny_run / "pretrain-st" / task / "model.safetensors", expected_arch="st")
        assert st.tasks == (task,)
        assert (tiny_run / "pretrain-st" / task / "checkpoints" / "last.ckpt").is_file()
    arches = {"mbmt": "mbmt", "mbmt-cold": "mbmt", "mt": "mt", "teacher": "teacher",
              "ummt": "mt", "ummt-ps": "mt"}
    for stage, arch in arches.items():
        model = load_model(tiny_run / stage / "model.safetensors", expected_arch=arch)
        assert model.num_classes == 13
        assert list((tiny_run / stage / "logs").glob("events.out.tfevents.*"))  # TensorBoard
    assert load_model(tiny_run / "ummt-ps" / "model.safetensors").tasks == ("segmentation", "depth")


def test_mbmt_keeps_the_frozen_single_task_backbones(tiny_run):
    from mbmt_ros.models import load_model, read_checkpoint_config

    mbmt = load_model(tiny_run / "mbmt" / "model.safetensors")
    cfg = read_checkpoint_config(tiny_run / "mbmt" / "model.safetensors")
    assert cfg["freeze_backbones"] is True
    assert cfg["backbone_checkpoints"] == [
        str(tiny_run / "pretrain-st" / t / "model.safetensors")
        for t in ("segmentation", "depth", "normals")]
    for i, task in enumerate(("segmentation", "depth", "normals")):
        st = load_model(tiny_run / "pretrain-st" / task / "model.safetensors")
        ours = mbmt.encoder.backbones[i].state_dict()
        theirs = st.encoder.backbones[0].state_dict()
        assert ours.keys() == theirs.keys()
        # trained for an epoch on top of the ST weights, yet unchanged: frozen (BN stats too)
        assert all(np.array_equal(ours[k].numpy(), theirs[k].numpy()) for k in ours)
    cold = read_checkpoint_config(tiny_run / "mbmt-cold" / "model.safetensors")
    assert cold["backbone_checkpoints"] is None and cold["freeze_backbones"] is False


def test_pseudo_labels_recorded_with_provenance_never_overwriting_ground_truth(tiny_run):
    import torch

    from mbmt_ros.models import load_model
    from training.data.manifest import Manifest
    from training.stages.pseudo import label_batch

    split = Manifest.load(tiny_run / "split" / "manifest.json")
    pseudo = Manifest.load(tiny_run / "pseudo" / "manifest.json")
    prov = json.loads((tiny_run / "pseudo" / "pseudo_labels.json").read_text())
    gt_seg = {e.index for e in split.entries("train") if e.labels.get("segmentation") == "gt"}
    assert len(gt_seg) == 4
    labelled = {e.index for e in pseudo.entries("train") if e.labels.get("segmentation") == "pseudo"}
    assert labelled == {e.index for e in split.entries("train")} - gt_seg and len(labelled) == 8
    for e in pseudo.entries("train"):
        if e.index in gt_seg:
            assert e.labels["segmentation"] == "gt" and "segmentation" not in e.paths
    assert prov["tau"] == 0.5 and prov["frames"] == 8 and prov["task"] == "segmentation"
    assert prov["teacher_checkpoint"] == str(tiny_run / "teacher" / "model.safetensors")
    assert prov["teacher_sha256"] == hashlib.sha256(
        (tiny_run / "teacher" / "model.safetensors").read_bytes()).hexdigest()
    assert prov["pixels"] == 8 * 32 * 64
    assert 0 < prov["coverage"] < 1 and prov["coverage"] == pytest.approx(
        prov["labelled_pixels"] / prov["pixels"])
    assert sum(prov["pixels_per_class"]) == prov["labelled_pixels"]
    assert pseudo.info["pseudo_labels"]["tau"] == 0.5

    # each stored label is the teacher's argmax where its confidence >= tau, void elsewhere
    teacher = load_model(tiny_run / "teacher" / "model.safetensors")
    from training.stages.data import make_dataset

    ds = make_dataset(tiny_run / "data", "train", tiny_run / "split" / "manifest.json")
    index = sorted(labelled)[0]
    item = ds[[e.index for e in ds.entries].index(index)]
    with torch.no_grad():
        logits = teacher(item["image"][None], item["depth"][None])["segmentation"]
    expected, conf = label_batch(logits, 0.5)
    path = (tiny_run / "data" / pseudo.get("train", index).paths["segmentation"]).resolve()
    assert path.is_relative_to(tiny_run / "pseudo")  # not in the dataset's label folder
    stored = np.load(path, allow_pickle=False)
    np.testing.assert_array_equal(stored, expected[0])
    assert (stored[conf[0] < 0.5] == -1).all() and (stored[conf[0] >= 0.5] >= 0).all()


def test_pseudo_label_rerun_is_deterministic_and_leaves_the_dataset_alone(tiny_run, tmp_path):
    import shutil

    # on a copy: a forced re-run makes the stages downstream of it stale in that run folder
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    data_before = digest_tree(run / "data")
    labels_before = digest_tree(run / "pseudo" / "pseudo")
    proc = mbmt_train("pseudo-label", "--config", str(TINY), "--run-dir", str(run),
                      "--force", *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert digest_tree(run / "data") == data_before
    assert digest_tree(run / "pseudo" / "pseudo") == labels_before
    assert not list((run / "pseudo").glob(".pseudo.*"))  # no temporary folder left


def test_evaluation_metrics_tables_and_grids(tiny_run):
    from PIL import Image

    from training.metrics import METRIC_KEYS

    for stage in TRAINED:
        metrics = json.loads((tiny_run / stage / "metrics.json").read_text())
        tasks = ["segmentation", "depth"] if stage in ("teacher", "ummt", "ummt-ps") \
            else ["segmentation", "depth", "normals"]
        assert sorted(metrics) == sorted(tasks)
        for task in tasks:
            assert sorted(metrics[task]) == sorted(METRIC_KEYS[task])  # the keys of `score`
        with Image.open(tiny_run / stage / "plots" / "val.png") as img:
            assert img.format == "PNG"
    st = json.loads((tiny_run / "pretrain-st" / "metrics.json").read_text())
    for task in ("segmentation", "depth", "normals"):
        own = json.loads((tiny_run / "pretrain-st" / task / "metrics.json").read_text())
        assert st[task] == own[task]
    results = (tiny_run / "results.md").read_text()
    for stage in ["pretrain-st", *TRAINED]:
        assert f"| {stage} |" in results
    assert "Δm" in results and "Imbalanced split" in results
    rows = (tiny_run / "results.csv").read_text().splitlines()
    assert rows[0].startswith("run,description,segmentation.miou") and len(rows) == 8
    assert float(rows[1].split(",")[-1]) == pytest.approx(0.0)  # ST vs itself


def test_export_bundle(tiny_run):
    bundle = tiny_run / "export" / "bundle"
    meta = json.loads((bundle / "meta.json").read_text())
    assert (bundle / "model.onnx").is_file() and (bundle / "weights.safetensors").is_file()
    assert meta["tasks"] == ["segmentation", "depth", "normals"]
    assert meta["input_size"] == [32, 64]
    from mbmt_ros.runtime.trt_readiness import assert_bundle_tensorrt_ready

    assert "model.onnx" in assert_bundle_tensorrt_ready(bundle)  # CLI-exported: TensorRT-ready


def test_rerun_skips_finished_stages(tiny_run):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*.safetensors")}
    proc = mbmt_train("pipeline", "--config", str(TINY), "--run-dir", str(tiny_run), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in STAGES:
        assert f"stage '{stage}'" in proc.stderr and "already done, skipping" in proc.stderr
    assert "starting" not in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*.safetensors")} == before


def test_evaluate_command_on_checkpoints_and_bundles(tiny_run, tmp_path):
    out = tmp_path / "eval"
    proc = mbmt_train("evaluate", "--ckpt", str(tiny_run / "mbmt"),
                      str(tiny_run / "export" / "bundle"), "--data", str(tiny_run / "data"),
                      "--out", str(out), "--baseline", str(tiny_run / "pretrain-st" / "metrics.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch_metrics = json.loads((out / "mbmt" / "metrics.json").read_text())
    bundle_metrics = json.loads((out / "bundle" / "metrics.json").read_text())
    assert torch_metrics == json.loads((tiny_run / "mbmt" / "metrics.json").read_text())
    # the exported graph gives the same predictions up to float noise
    assert bundle_metrics["segmentation"]["pixel_acc"] == pytest.approx(
        torch_metrics["segmentation"]["pixel_acc"], abs=0.5)
    assert bundle_metrics["depth"]["abs_err"] == pytest.approx(
        torch_metrics["depth"]["abs_err"], rel=1e-2)
    assert (out / "mbmt" / "val.png").is_file() and (out / "bundle" / "val.png").is_file()
    assert "| mbmt |" in (out / "results.md").read_text()


# -- error cases: each a clear one-line message, exit code 2 -----------------------------------
# (the CLI's main() in-process: the same argument parsing and error printing, without paying
# for a fresh interpreter per case)


def cli(capsys, *args: str) -> tuple[int, str]:
    import logging

    from training.cli import main

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        code = main(list(args))
    finally:  # drop the handlers main() added (stderr under capsys, the run's log file)
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
    return code, capsys.readouterr().err


def _config_on(tiny_run: Path, tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(TINY.read_text())
    raw["data"] = {"root": str(tiny_run / "data")}
    raw["train"].update(epochs=1, batch_size=4)
    for key, value in changes.items():
        raw[key] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_assemble_without_single_task_checkpoints(tiny_run, tmp_path, capsys):
    cfg = _config_on(tiny_run, tmp_path)
    code, err = cli(capsys, "assemble", "--config", str(cfg), "--run-dir", str(tmp_path / "r"))
    assert code == 2
    missing = tmp_path / "r" / "pretrain-st" / "segmentation" / "model.safetensors"
    assert f"single-task checkpoint for segmentation is missing ({missing})" in err
    assert "Traceback" not in err and not (tmp_path / "r" / "assemble" / "done.json").exists()


def test_mismatched_class_counts(tiny_run, tmp_path, capsys):
    cfg = _config_on(tiny_run, tmp_path)
    code, err = cli(capsys, "train-mt", "--config", str(cfg), "--run-dir", str(tmp_path / "r"),
                    "--set", "model.num_classes=7")
    assert code == 2
    assert "mismatched class counts" in err and "has 7 segmentation classes" in err
    assert "says 13" in err
    # and an ST checkpoint of another class count cannot be assembled into MBMT
    run = tmp_path / "r2"
    for task in ("segmentation", "depth", "normals"):
        (run / "pretrain-st" / task).mkdir(parents=True)
        (run / "pretrain-st" / task / "model.safetensors").symlink_to(
            tiny_run / "pretrain-st" / task / "model.safetensors")
    code, err = cli(capsys, "assemble", "--config", str(cfg), "--run-dir", str(run),
                    "--set", "model.num_classes=7")
    assert code == 2 and "mismatched class counts" in err and "13 classes" in err


def test_manifest_referring_to_missing_files(tiny_run, tmp_path, capsys):
    manifest = json.loads((tiny_run / "data" / "manifest.json").read_text())
    manifest["samples"].append({"split": "train", "index": 999, "labels": {"depth": "gt"}})
    bad = tmp_path / "bad_manifest.json"
    bad.write_text(json.dumps(manifest))
    cfg = _config_on(tiny_run, tmp_path)
    code, err = cli(capsys, "train-mt", "--config", str(cfg), "--run-dir", str(tmp_path / "r"),
                    "--set", f"data.manifest={bad}")
    assert code == 2
    assert "999" in err and "Traceback" not in err


def test_corrupt_resume_checkpoint(tiny_run, tmp_path, capsys):
    from training.config import load_config
    from training.run_dir import RunDir
    from training.stages.fingerprint import fingerprint_of

    cfg = _config_on(tiny_run, tmp_path)
    last = tmp_path / "r" / "mt" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 truncated")
    # a killed run of this very config left it (another config's folder would be set aside)
    run = RunDir(tmp_path / "r")
    run.write_fingerprint("mt", fingerprint_of(load_config(cfg), run, "mt"))
    code, err = cli(capsys, "train-mt", "--config", str(cfg), "--run-dir", str(tmp_path / "r"))
    assert code == 2
    assert str(last) in err and "delete it" in err
    assert not (tmp_path / "r" / "mt" / "done.json").exists()


def test_killed_stage_resumes_from_its_last_checkpoint(tiny_run, tmp_path):
    import signal
    import time

    from training.checkpoint_io import load_resume_state

    cfg = _config_on(tiny_run, tmp_path)
    run = tmp_path / "r"
    args = ["train-mt", "--config", str(cfg), "--run-dir", str(run), "--set", "train.epochs=4"]
    proc = subprocess.Popen([str(MBMT_TRAIN), *args], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "mt" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    try:
        while not last.exists():
            assert proc.poll() is None, "the stage ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "mt" / "done.json").exists()
    assert not (run / "mt" / "model.safetensors").exists()
    # complete and safe to load (never truncated), saved after an epoch but before the end:
    # 12 training frames, batch 4 -> 3 steps per epoch, 12 in all
    killed_at = load_resume_state(last)["global_step"]
    assert killed_at in (3, 6, 9)

    again = mbmt_train(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {last}" in again.stderr
    done = json.loads((run / "mt" / "done.json").read_text())
    assert done["epochs"] == 4 and (run / "mt" / "model.safetensors").is_file()
    assert load_resume_state(last)["global_step"] == 12


def test_affinity_reports_which_task_helps_which(tiny_run, tmp_path):
    cfg = _config_on(tiny_run, tmp_path, stages=[
        {"name": "split", "kind": "make-split", "depth": 12, "segmentation": 6},
        {"name": "affinity", "kind": "affinity", "manifest": "split"}])
    run = tmp_path / "r"
    proc = mbmt_train("pipeline", "--config", str(cfg), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run / "affinity" / "affinity.json").read_text())
    metrics = report["metrics"]
    assert sorted(metrics) == ["depth_input", "rgb", "segmentation_input"]
    gain = metrics["depth_input"]["segmentation"]["miou"] - metrics["rgb"]["segmentation"]["miou"]
    assert report["segmentation_miou_gain"] == pytest.approx(gain)
    assert report["depth_helps_segmentation"] == (gain > 0)
    rmse_gain = metrics["rgb"]["depth"]["rmse"] - metrics["segmentation_input"]["depth"]["rmse"]
    assert report["depth_rmse_gain"] == pytest.approx(rmse_gain)
    assert report["segmentation_helps_depth"] == (rmse_gain > 0)
    for sub in metrics:  # same budget: the same frames (6 with both labels), same epochs
        done = json.loads((run / "affinity" / sub / "done.json").read_text())
        assert done["train_samples"] == 6 and done["epochs"] == 1
    assert "segmentation -> depth" in (run / "affinity" / "affinity.md").read_text()
