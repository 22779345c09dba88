"""CAT / ADD / MUL fusion of per-scale features and its channel checks."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny

from mbmt_ros.errors import ModelConfigError
from mbmt_ros.models import FeatureFusion, build_model


def _feats(channels: list[int], value: float) -> list[torch.Tensor]:
    return [torch.full((1, c, 16 // 2**i, 16 // 2**i), value) for i, c in enumerate(channels)]


def test_cat_add_mul_values() -> None:
    a, b = _feats([2, 3, 4, 5], 2.0), _feats([2, 3, 4, 5], 3.0)
    cat = FeatureFusion("cat", [[2, 3, 4, 5]] * 2)
    assert cat.out_channels == (4, 6, 8, 10)
    out = cat([a, b])
    assert [o.shape[1] for o in out] == [4, 6, 8, 10]
    assert torch.equal(out[0][:, :2], a[0]) and torch.equal(out[0][:, 2:], b[0])
    assert all(torch.all(o == 5.0) for o in FeatureFusion("add", [[2, 3, 4, 5]] * 2)([a, b]))
    assert all(torch.all(o == 6.0) for o in FeatureFusion("mul", [[2, 3, 4, 5]] * 2)([a, b]))


def test_cat_of_different_channels() -> None:
    fusion = FeatureFusion("cat", [[2, 3, 4, 5], [1, 1, 1, 1]])
    assert fusion.out_channels == (3, 4, 5, 6)


@pytest.mark.parametrize("mode", ["add", "mul"])
def test_elementwise_fusion_needs_equal_channels(mode: str) -> None:
    with pytest.raises(ModelConfigError,
                       match=rf"fusion '{mode}' needs equal channels.*b0: \[2, 3, 4, 5\].*b1"):
        FeatureFusion(mode, [[2, 3, 4, 5], [2, 3, 4, 6]], ["b0", "b1"])


def test_model_with_mismatching_backbones_names_them() -> None:
    cfg = tiny("mbmt", backbones=["test_efficientnet", "test_convnext"], fusion="add")
    with pytest.raises(ModelConfigError, match=r"test_efficientnet: \[.*test_convnext: \["):
        build_model(cfg)


def test_unknown_fusion() -> None:
    with pytest.raises(ModelConfigError, match="unknown fusion 'max'"):
        FeatureFusion("max", [[1, 1, 1, 1]])
