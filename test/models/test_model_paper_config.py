"""The paper's MBMT-Net configuration reproduces its parameter / FLOP table (Table 3):
32.06 M total, 8.7 M trainable (CAT; ADD/MUL 7.1 M), ~25 G multiply-accumulates."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mbmt_ros.models import build_model, model_summary


@pytest.mark.slow
def test_nyuv2_mbmt_matches_paper(repo_root: Path) -> None:
    cfg = yaml.safe_load((repo_root / "config/train/nyuv2_mbmt.yaml").read_text())
    assert cfg["input_size"] == [288, 384]
    model = build_model(cfg["model"])
    assert model.backbone_names() == ["efficientnet_b2"] * 3
    assert [b.channels[-1] for b in model.encoder.backbones] == [1408] * 3
    summary = model_summary(model, cfg["input_size"])
    assert 31.5e6 <= summary["params_total"] <= 32.6e6          # paper: 32.06 M
    assert 8.6e6 <= summary["params_trainable"] <= 8.8e6        # paper: 8.72 M (8.69 M CAT)
    assert 23.5 <= summary["gflops"] <= 25.5                    # paper: 24.68 G (MACs)
    assert summary["outputs"] == {"segmentation": [1, 13, 288, 384],
                                  "depth": [1, 1, 288, 384], "normals": [1, 3, 288, 384]}
    # ADD fusion: only the FPN's lateral convs shrink (paper: ~7.05 M trainable); no FLOPs
    # run here - parameters only, to keep the test short.
    add = build_model({**cfg["model"], "fusion": "add"})
    trainable = sum(p.numel() for p in add.parameters() if p.requires_grad)
    assert 6.95e6 <= trainable <= 7.15e6
