"""2-process DDP pipelines on CPU (gloo), started the two ways users start them on GPUs:
Lightning's own launcher (``train.devices: 2`` on a plain command: the second process is
started inside the first ``trainer.fit`` and re-runs the command) and ``torchrun
--nproc_per_node 2`` (both processes from the start). Each run generates its synthetic data,
makes a split, trains a teacher, pseudo-labels, trains a student and evaluates: global rank 0
alone writes (data, labels, markers, results - each once), both ranks train, and no partial
or stale folder is left.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


STAGES = ["split", "teacher", "pseudo", "student", "evaluate"]


def ddp_config(tmp_path: Path) -> Path:
    raw = yaml.safe_load((REPO / "config" / "train" / "tiny.yaml").read_text())
    raw["model"].update(fpn_channels=8, head_channels=8, task_hidden_channels=8)
    raw["data"] = {"synth": {"count": 12, "size": [32, 64], "seed": 1, "val_fraction": 0.25}}
    raw["train"].update(epochs=1, batch_size=2, num_threads=1, devices=2, strategy="ddp",
                        accelerator="cpu")
    raw["stages"] = [
        {"name": "split", "kind": "make-split", "depth": 9, "segmentation": 4},
        {"name": "teacher", "kind": "train-teacher", "manifest": "split",
         "extra_modality": "depth", "model": {"tasks": ["segmentation", "depth"]}},
        {"name": "pseudo", "kind": "pseudo-label", "teacher": "teacher", "manifest": "split",
         "tau": 0.0},
        {"name": "student", "kind": "train-student", "manifest": "pseudo",
         "model": {"tasks": ["segmentation", "depth"]}},
        {"name": "evaluate", "kind": "evaluate"},
    ]
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def launch(launcher: str, config: Path, run: Path) -> subprocess.CompletedProcess:
    args = ["pipeline", "--config", str(config), "--run-dir", str(run)]
    if launcher == "torchrun":
        torchrun = BIN / "torchrun"
        if not torchrun.exists():
            torchrun = Path(shutil.which("torchrun") or "torchrun")
        cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "training.cli",
               *args]
    else:  # Lightning's own launcher starts the second process at the first fit
        cmd = [str(BIN / "mbmt-train"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["lightning", "torchrun"])
def test_two_process_ddp_pipeline_with_synthetic_data_and_pseudo_labels(tmp_path, launcher):
    from mbmt_ros.models import load_model
    from training.checkpoint_io import load_resume_state

    run = tmp_path / "run"
    proc = launch(launcher, ddp_config(tmp_path), run)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # two processes, ranked as Lightning ranks them (its own launcher sets no RANK)
    environment = "LightningEnvironment" if launcher == "lightning" else "TorchElasticEnvironment"
    for rank in (0, 1):
        assert f"global rank {rank} of 2 (node 0, local rank {rank}; {environment})" in out
    for stage in STAGES:
        done = json.loads((run / stage / "done.json").read_text())
        assert done["stage"] == stage and done["fingerprint"]
    # rank 0 alone generated the data, pseudo-labelled and evaluated: once each
    assert out.count("synth --out") == 1
    assert out.count("pseudo: 5 frames pseudo-labelled") == 1
    assert out.count("evaluate: student {") == 1
    assert (run / "results.md").is_file() and (run / "data" / "manifest.json").is_file()
    assert json.loads((run / "pseudo" / "pseudo_labels.json").read_text())["frames"] == 5
    # no half-written or set-aside folder: neither rank took the other's work for stale
    assert not [p for p in run.rglob(".*") if p.name.endswith((".tmp", ".partial"))]
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.yaml", "data", "pipeline.log", "results.csv", "results.md", *STAGES])
    assert sorted(p.name for p in (run / "student").iterdir()) == [
        "checkpoints", "curves.png", "done.json", "fingerprint.json", "logs", "metrics.json",
        "model.safetensors", "plots", "stage.log"]
    # the validation metrics of both ranks reached rank 0's metrics.csv (all-reduced)
    assert "val/segmentation/miou" in (run / "student" / "logs" / "metrics.csv").read_text()
    # both ranks trained: 9 frames split over 2 ranks (5 each), batch 2 -> 3 steps per rank
    # (a single process would take 5)
    assert load_resume_state(run / "student" / "checkpoints" / "last.ckpt")["global_step"] == 3
    student = load_model(run / "student" / "model.safetensors", expected_arch="mt")
    assert student.tasks == ("segmentation", "depth")


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE",
                  "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_NAME",
                  "SLURM_PROCID", "LSB_JOBID")


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, (0, 4, "LightningEnvironment")),  # before its first fit: devices x num_nodes
    # a process Lightning's launcher started: no RANK, the node's and its local rank
    ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, (1, 2, "LightningEnvironment")),
    ({"LOCAL_RANK": "0", "NODE_RANK": "1", "WORLD_SIZE": "4"}, (2, 4, "LightningEnvironment")),
    # torchrun
    ({"RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "WORLD_SIZE": "4",
      "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}, (3, 4, "TorchElasticEnvironment")),
])
def test_ranks_as_lightning_sees_them(monkeypatch, variables, expected):
    from training.distributed import is_rank_zero, rank_info

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    info = rank_info({"devices": 2, "num_nodes": 2})
    assert (info.global_rank, info.world_size, info.launcher) == expected
    assert is_rank_zero({"devices": 2, "num_nodes": 2}) == (expected[0] == 0)


def test_lightning_launcher_across_nodes_is_refused_with_advice(monkeypatch):
    from training.distributed import setup
    from training.errors import ConfigError

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NODE_RANK", "1")
    with pytest.raises(ConfigError, match="torchrun .* or srun"):
        setup({"devices": 2, "num_nodes": 2})
