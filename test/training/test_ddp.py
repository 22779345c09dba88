"""A 2-process DDP run launched the way a user launches one on GPUs - ``torchrun
--nproc_per_node 2`` - here with gloo on CPU: a tiny training stage gives the same kind of
checkpoint and run folder as a single-process run."""
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


@pytest.mark.slow
def test_torchrun_two_process_ddp_trains_a_stage(tmp_path):
    from mbmt_ros.models import load_model
    from training.checkpoint_io import load_resume_state

    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        torchrun = Path(shutil.which("torchrun") or "torchrun")
    data = tmp_path / "data"
    synth = subprocess.run([str(BIN / "mbmt-train"), "synth", "--out", str(data), "--count", "12",
                            "--size", "32", "64", "--seed", "1"],
                           capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    assert synth.returncode == 0, synth.stderr[-2000:]
    raw = yaml.safe_load((REPO / "config" / "train" / "tiny.yaml").read_text())
    raw["data"] = {"root": str(data)}
    raw["train"].update(epochs=2, batch_size=2)
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "training.cli",
           "train-mt", "--config", str(cfg), "--run-dir", str(run),
           "--set", "train.devices=2", "--set", "train.strategy=ddp",
           "--set", "train.accelerator=cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done = json.loads((run / "mt" / "done.json").read_text())
    assert done["kind"] == "train-mt" and done["epochs"] == 2
    model = load_model(run / "mt" / "model.safetensors", expected_arch="mt")
    assert model.tasks == ("segmentation", "depth", "normals")
    state = load_resume_state(run / "mt" / "checkpoints" / "last.ckpt")
    assert state["epoch"] == 1  # saved at the end of the second (0-based: 1) epoch
    # 10 training frames split over 2 ranks, batch 2: 3 optimiser steps per epoch on each rank
    # (a single process would take 5)
    assert state["global_step"] == 6
    assert sorted(p.name for p in (run / "mt").iterdir()) == [
        "checkpoints", "done.json", "logs", "model.safetensors"]
