"""``mbmt-train summary`` end to end (subprocess) and ``model_summary``'s figures."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import tiny

from mbmt_ros.models import build_model, model_summary


def test_model_summary_counts_macs() -> None:
    model = build_model(tiny("st", tasks=["segmentation"], num_classes=3))
    summary = model_summary(model, (64, 64))
    assert summary["outputs"] == {"segmentation": [1, 3, 64, 64]}
    assert summary["params_total"] == sum(p.numel() for p in model.parameters())
    # the final 1x1 conv alone: 32 -> 3 channels at 16x16 = 32*3*256 MACs; doubling the
    # input area roughly doubles the MACs (all conv work scales with area)
    bigger = model_summary(model, (64, 128))
    assert 1.9 < bigger["gflops"] / summary["gflops"] < 2.1
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.Conv2d(4, 5, 3, padding=1, bias=False)
    with FlopCounterMode(display=False) as counter:
        conv(torch.zeros(1, 4, 8, 8))
    assert counter.get_total_flops() == 2 * 4 * 5 * 9 * 64  # FLOPs = 2 x MACs, as documented


def test_teacher_summary_feeds_extra_input() -> None:
    model = build_model(tiny("teacher", extra_modality="segmentation", num_classes=4))
    assert model_summary(model, (32, 32))["outputs"]["normals"] == [1, 3, 32, 32]


def _cli(repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(repo_root / ".venv/bin/mbmt-train"), "summary", *args],
                          capture_output=True, text=True, timeout=300, cwd=repo_root)


@pytest.mark.slow
def test_summary_cli(repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    result = _cli(repo_root, "--config", str(repo_root / "config/train/model_tiny.yaml"),
                  "--json", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert {"params_total", "params_trainable", "gflops", "outputs"} <= set(data)
    assert data["outputs"] == {"segmentation": [1, 13, 64, 64], "depth": [1, 1, 64, 64],
                               "normals": [1, 3, 64, 64]}
    assert 0 < data["params_trainable"] < data["params_total"]  # frozen backbones
    assert data["gflops"] > 0
    for text in ("trainable", "total", "GFLOPs", "segmentation", "64 x 64"):
        assert text in result.stdout


def test_summary_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    assert main(["summary", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("input_size: [64, 64]\nmodel: {arch: mt, backbone: not_a_model}\n")
    assert main(["summary", "--config", str(bad)]) == 2
    assert "error: unknown backbone 'not_a_model'" in capsys.readouterr().err
    no_size = tmp_path / "no_size.yaml"
    no_size.write_text("model: {arch: mt}\n")
    assert main(["summary", "--config", str(no_size)]) == 2
    assert "input_size must be [height, width]" in capsys.readouterr().err
