"""Backbones: stride-4..32 features, EfficientNet conv_head as the stride-32 feature,
features_only models, extra input channels, local pretrained weights, clear errors."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from mbmt_ros.errors import CheckpointError, ModelConfigError
from mbmt_ros.models import STRIDES, create_backbone


def _check_strides(backbone, h: int = 64, w: int = 96, in_chans: int = 3) -> None:
    feats = backbone(torch.randn(1, in_chans, h, w))
    assert len(feats) == len(STRIDES)
    for f, stride, ch in zip(feats, STRIDES, backbone.channels, strict=True):
        assert f.shape == (1, ch, h // stride, w // stride)


def test_efficientnet_stride32_is_conv_head_output() -> None:
    import timm

    backbone = create_backbone("test_efficientnet")
    full = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    # the stride-32 feature is conv_head's width (num_features), not the last block's
    assert backbone.channels[-1] == full.num_features == full.conv_head.out_channels
    assert backbone.channels[-1] != full.feature_info[-1]["num_chs"]
    _check_strides(backbone)
    full.load_state_dict(backbone.body.state_dict())
    full.eval()
    backbone.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[-1], full.forward_features(x))


@pytest.mark.parametrize("name", ["test_resnet", "test_convnext"])
def test_features_only_backbones(name: str) -> None:
    _check_strides(create_backbone(name))


def test_extra_input_channels() -> None:
    _check_strides(create_backbone("test_efficientnet", in_chans=1), in_chans=1)
    _check_strides(create_backbone("test_resnet", in_chans=13), in_chans=13)


def test_unknown_backbone_names_how_to_list() -> None:
    with pytest.raises(ModelConfigError, match=r"unknown backbone 'efficientnet_b99'.*list_models"):
        create_backbone("efficientnet_b99")


def test_backbone_without_four_scales() -> None:
    with pytest.raises(ModelConfigError, match="no feature map at stride 4"):
        create_backbone("test_vit")


def test_pretrained_from_local_file(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_efficientnet", pretrained=False)  # with classifier
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth"):
        backbone = create_backbone("test_efficientnet", pretrained=str(path))
        torch.testing.assert_close(backbone.body.conv_stem.weight, source.conv_stem.weight)
        torch.testing.assert_close(backbone.body.conv_head.weight, source.conv_head.weight)


def test_pretrained_errors(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="does not exist"):
        create_backbone("test_efficientnet", pretrained=str(tmp_path / "missing.safetensors"))
    other = timm.create_model("test_resnet", pretrained=False)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()},
              str(tmp_path / "resnet.safetensors"))
    with pytest.raises(CheckpointError, match=r"resnet.safetensors does not match.*missing keys"):
        create_backbone("test_efficientnet", pretrained=str(tmp_path / "resnet.safetensors"))
    # a pickle with arbitrary objects is refused (weights_only)
    torch.save({"model": argparse.Namespace(payload=1)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        create_backbone("test_efficientnet", pretrained=str(tmp_path / "evil.pth"))
