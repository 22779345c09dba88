"""docs/robot.md, steps 2-6, as commands on a recording (the synthetic one standing in for a
robot's ``ros2 bag record``): extract with labels and a held-back validation part, check,
train with ``config/train/rosbag.yaml`` (tiny backbones, one epoch), export, inspect the
bundle with ``mbmt-engine info``. Steps 0, 1, 6 (engine build) and 7 need ROS 2 / TensorRT
installations and are covered by the node and runtime tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = ["--set", "model.backbones=[test_efficientnet,test_efficientnet,test_efficientnet]",
              "--set", "model.fpn_channels=16", "--set", "model.head_channels=8",
              "--set", "model.task_hidden_channels=16", "--set", "train.epochs=1",
              "--set", "train.num_workers=0", "--set", "train.batch_size=4",
              "--set", "data.input_size=[64,96]"]


def _run(*cmd: str) -> str:
    env_cmd = [sys.executable, "-m", *cmd]
    proc = subprocess.run(env_cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_robot_workflow_commands(tmp_path: Path) -> None:
    from training.data.label_png import write_label_png

    rec = tmp_path / "recording"
    _run("training.cli", "synth", "--out", str(rec), "--count", "20", "--size", "64", "96",
         "--seed", "3", "--val-fraction", "0")
    # 3. label a few frames: <stamp_ns>.png, 0 = void, k = class k-1
    masks = tmp_path / "masks"
    masks.mkdir()
    manifest = json.loads((rec / "manifest.json").read_text())
    for entry in manifest["samples"][:6]:
        label = np.load(rec / "train" / "label" / f"{entry['index']}.npy")
        write_label_png(masks / f"{entry['stamp_ns']}.png", label, 13)
    # 2. extract (with the labels), holding the last 20 % back for validation
    data = tmp_path / "data"
    out = _run("training.cli", "extract-bag", str(rec / "bag"), "--rgb", "/camera/color/image_raw",
               "--depth", "/camera/depth/image_raw", "--camera-info",
               "/camera/color/camera_info", "--labels", str(masks), "--val-fraction", "0.2",
               "--out", str(data))
    assert "20 frames (6 with segmentation labels)" in out
    assert len(list((data / "train" / "image").glob("*.npy"))) == 16
    assert len(list((data / "val" / "image").glob("*.npy"))) == 4
    _run("training.cli", "check-data", str(data))
    # 4. train: teacher -> pseudo labels -> ST -> MBMT -> evaluate -> export
    run = tmp_path / "runs" / "lab"
    _run("training.cli", "pipeline", "--config", "config/train/rosbag.yaml", "--run-dir", str(run),
         "--set", f"data.root={data}", *TINY_MODEL)
    assert (run / "export" / "bundle" / "model.onnx").is_file()
    assert (run / "results.md").is_file()
    # 5. export (again, by hand, as the doc shows)
    bundle = tmp_path / "bundles" / "lab"
    _run("training.cli", "export", "--ckpt", str(run / "mbmt"), "--out", str(bundle),
         "--input-size", "64", "96", "--no-fp16")
    # 6. what `mbmt-engine info` shows on the robot before the engine is built
    info = _run("mbmt_ros.runtime.engine_cli", "info", str(bundle))
    assert "segmentation, depth, normals" in info and "none cached" in info
