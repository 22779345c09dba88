"""Tiny model configs for the model tests: timm's ~0.1 M-parameter backbones and narrow
decoders, so each forward/backward takes well under a second on a CPU."""
from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="the model tests need torch (pip install -e .[train])")

TINY_DECODER: dict[str, Any] = {"fpn_channels": 16, "head_channels": 8,
                                "task_hidden_channels": 16}
TINY_BACKBONE = "test_efficientnet"


def tiny(arch: str, **overrides: Any) -> dict[str, Any]:
    """A tiny ``model:`` config of ``arch``."""
    cfg: dict[str, Any] = {"arch": arch, **TINY_DECODER}
    if arch == "mbmt":
        cfg["backbones"] = [TINY_BACKBONE] * 3
        cfg["freeze_backbones"] = False
    else:
        cfg["backbone"] = TINY_BACKBONE
    cfg.update(overrides)
    return cfg


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
