"""A pipeline that never reuses stale results, through ``mbmt-train pipeline`` end to end.

Each stage's fingerprint covers its config and the stages it reads: changing the teacher's
epochs, or ``--force teacher``, re-runs the teacher, the pseudo labels, the student trained on
them and the evaluation - and not the single-task pretraining or the split; a changed stage's
old folder is kept aside; a process killed while writing a checkpoint leaves nothing behind
after the next run, and a checkpoint of another config is never resumed.

A small pipeline (12 synthetic 32x64 frames, one epoch, one single-task net) keeps this fast.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_budget import ENV

REPO = Path(__file__).resolve().parents[2]
MBMT_TRAIN = Path(sys.executable).parent / "mbmt-train"
STAGES = ["split", "pretrain-st", "teacher", "pseudo", "student", "evaluate"]
DOWNSTREAM_OF_TEACHER = ["teacher", "pseudo", "student", "evaluate"]

pytestmark = pytest.mark.slow

#: fault injection for the kill test: SIGKILL the process when it flushes the Nth temporary
#: file of a checkpoint whose path contains MBMT_TEST_KILL_PATH - after torch.save wrote it,
#: before the rename that would publish it (mbmt_ros.io.atomic_path)
SITECUSTOMIZE = '''
import os, signal, sys
_where, _nth, _seen = os.environ.get("MBMT_TEST_KILL_PATH"), int(os.environ.get(
    "MBMT_TEST_KILL_NTH", "1")), []
def _hook(event, args):
    if event == "open" and _where and args and str(args[0]).endswith(".tmp") \\
            and _where in str(args[0]) and "+" in str(args[1] or ""):
        _seen.append(args[0])
        if len(_seen) == _nth:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(_hook)
'''


def write_config(folder: Path) -> Path:
    raw = {
        "name": "fingerprints", "seed": 0,
        "model": {"arch": "mbmt", "backbones": ["test_efficientnet"] * 3,
                  "tasks": ["segmentation", "depth", "normals"], "num_classes": 13,
                  "fpn_channels": 8, "head_channels": 8, "task_hidden_channels": 8},
        "data": {"synth": {"count": 12, "size": [32, 64], "seed": 0, "val_fraction": 0.25}},
        "train": {"epochs": 1, "batch_size": 3, "lr": 0.002, "log_every_n_steps": 1,
                  "num_threads": 1},
        "stages": [
            {"name": "split", "kind": "make-split", "depth": 9, "segmentation": 3},
            {"name": "pretrain-st", "kind": "pretrain-st", "tasks": ["depth"]},
            {"name": "teacher", "kind": "train-teacher", "manifest": "split",
             "extra_modality": "depth", "model": {"tasks": ["segmentation", "depth"]}},
            {"name": "pseudo", "kind": "pseudo-label", "teacher": "teacher",
             "manifest": "split", "tau": 0.0},
            {"name": "student", "kind": "train-student", "manifest": "pseudo",
             "model": {"tasks": ["segmentation", "depth"]}},
            {"name": "evaluate", "kind": "evaluate", "baseline": "pretrain-st"},
        ],
    }
    path = folder / "fingerprints.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def pipeline(config: Path, run: Path, *args: str, env: dict | None = None
             ) -> subprocess.CompletedProcess:
    return subprocess.run([str(MBMT_TRAIN), "pipeline", "--config", str(config), "--run-dir",
                           str(run), *args], capture_output=True, text=True, cwd=REPO,
                          env=env or ENV, timeout=600)


def run_ids(run: Path) -> dict[str, str]:
    return {s: json.loads((run / s / "done.json").read_text())["run_id"] for s in STAGES}


def started(stderr: str) -> list[str]:
    """The stages a pipeline run started (the others it skipped as done), in order."""
    return re.findall(r"stage '([^']+)' \([^)]*\): starting", stderr)


def temporaries(run: Path) -> list[Path]:
    return [p for p in run.rglob(".*") if p.name.endswith((".tmp", ".partial"))]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("fingerprints")
    config, run = write_config(folder), folder / "run"
    proc = pipeline(config, run)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert started(proc.stderr) == STAGES
    return config, run


def copy_of(base_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base_run, run, symlinks=True)
    # the manifests keep paths relative to the dataset, the stages find each other by run dir
    return run


def test_force_teacher_reruns_the_same_stages(base, tmp_path):
    config, run = base[0], copy_of(base[1], tmp_path)
    before = run_ids(run)
    proc = pipeline(config, run, "--force", "teacher")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert started(proc.stderr) == DOWNSTREAM_OF_TEACHER
    after = run_ids(run)
    assert {s for s in STAGES if after[s] != before[s]} == set(DOWNSTREAM_OF_TEACHER)
    assert not list(run.glob("teacher.stale-*"))  # --force deletes the forced stage's folder
    assert len(list(run.glob("pseudo.stale-*"))) == 1  # downstream ones are set aside


def test_changed_teacher_epochs_after_a_kill_during_a_checkpoint_write(base, tmp_path):
    """Killed while writing the changed teacher's second checkpoint, then re-run with yet other
    epochs: the teacher and everything downstream re-run, nothing upstream; the old folders are
    kept aside; the half-trained teacher's checkpoint (another config) is not resumed; no
    temporary file is left anywhere."""
    config, run = base[0], copy_of(base[1], tmp_path)
    before = run_ids(run)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(hooks), ENV.get("PYTHONPATH", "")]),
           "MBMT_TEST_KILL_PATH": str(run / "teacher" / "checkpoints" / ".last.ckpt."),
           "MBMT_TEST_KILL_NTH": "2"}
    killed = pipeline(config, run, "--set", "stages.teacher.train.epochs=3", env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpts = run / "teacher" / "checkpoints"
    assert [p.name for p in ckpts.glob(".last.ckpt.*.tmp")], "killed before the write"
    assert (ckpts / "last.ckpt").is_file() and not (run / "teacher" / "done.json").exists()

    proc = pipeline(config, run, "--set", "stages.teacher.train.epochs=2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert started(proc.stderr) == DOWNSTREAM_OF_TEACHER
    assert "stage 'pretrain-st' (pretrain-st): already done, skipping" in proc.stderr
    after = run_ids(run)
    assert {s for s in STAGES if after[s] != before[s]} == set(DOWNSTREAM_OF_TEACHER)
    assert temporaries(run) == []  # nothing half-written anywhere, the kept-aside folders too
    # the epochs=3 checkpoint was not resumed: 2 epochs of 1 step each, from scratch
    from training.checkpoint_io import load_resume_state

    assert "resuming from" not in proc.stderr
    state = load_resume_state(run / "teacher" / "checkpoints" / "last.ckpt")
    assert state["epoch"] == 1 and state["global_step"] == 2
    assert json.loads((run / "teacher" / "done.json").read_text())["epochs"] == 2
    # the old folders are kept aside, not deleted: the finished ones and the killed teacher
    for stage in DOWNSTREAM_OF_TEACHER:
        finished = [json.loads((p / "done.json").read_text())["run_id"]
                    for p in run.glob(f"{stage}.stale-*") if (p / "done.json").is_file()]
        assert finished == [before[stage]], stage
    killed_teacher = [p for p in run.glob("teacher.stale-*") if not (p / "done.json").exists()]
    assert len(killed_teacher) == 1
    assert (killed_teacher[0] / "checkpoints" / "last.ckpt").is_file()
    assert not list(run.glob("pretrain-st.stale-*")) and not list(run.glob("split.stale-*"))
    # the student learnt from the new teacher's pseudo labels
    from mbmt_ros.runtime.bundle import sha256_file

    pseudo = json.loads((run / "pseudo" / "pseudo_labels.json").read_text())
    assert pseudo["teacher_sha256"] == sha256_file(run / "teacher" / "model.safetensors")
