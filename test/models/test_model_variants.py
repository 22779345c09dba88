"""Every architecture variant: output shapes at odd input sizes, unit normals, gradients,
frozen backbones (no gradient, eval mode after ``.train()``), teacher inputs."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny

from mbmt_ros.errors import ModelInputError
from mbmt_ros.models import build_model
from mbmt_ros.tasks import TASKS

H, W = 60, 84  # not multiples of 32: outputs must still match the input size

VARIANTS = {
    "st-segmentation": tiny("st", tasks=["segmentation"], num_classes=5),
    "st-depth": tiny("st", tasks=["depth"]),
    "st-normals": tiny("st", tasks=["normals"]),
    "mt": tiny("mt"),
    "mt-convnext": tiny("mt", backbone="test_convnext"),
    "mbmt-cat": tiny("mbmt"),
    "mbmt-add": tiny("mbmt", fusion="add"),
    "mbmt-mul": tiny("mbmt", fusion="mul"),
    "mb2-xnormals-frozen": tiny("mbmt", backbones=["test_efficientnet"] * 2,
                                tasks=["segmentation", "depth"], freeze_backbones=True),
    "mbmt-mixed-cat": tiny("mbmt", backbones=["test_efficientnet", "test_resnet"]),
    "teacher-depth": tiny("teacher", extra_modality="depth", tasks=["segmentation", "depth"]),
    "teacher-segmentation": tiny("teacher", extra_modality="segmentation", num_classes=4),
}


def _inputs(model, batch: int = 2) -> list[torch.Tensor]:
    inputs = [torch.randn(batch, 3, H, W)]
    if model.extra_channels:
        inputs.append(torch.randn(batch, model.extra_channels, H, W))
    return inputs


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_backward(name: str) -> None:
    cfg = VARIANTS[name]
    model = build_model(cfg).train()
    out = model(*_inputs(model))
    assert tuple(out) == model.tasks == tuple(t for t in TASKS if t in cfg.get("tasks", TASKS))
    expected_channels = {"segmentation": model.num_classes, "depth": 1, "normals": 3}
    for task, tensor in out.items():
        assert tensor.shape == (2, expected_channels[task], H, W), task
        assert torch.isfinite(tensor).all()
    if "normals" in out:
        norms = out["normals"].norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-4, rtol=0)
    sum(t.square().mean() for t in out.values()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    # every head and the FPN learn
    for part in (model.fpn, *model.heads.values(), *model.decoders.values()):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_frozen_backbones_get_no_gradient_and_stay_in_eval_mode() -> None:
    model = build_model(tiny("mbmt", backbones=["test_efficientnet"] * 2, freeze_backbones=True))
    model.train()
    assert model.training and model.fpn.training
    for backbone in model.encoder.backbones:
        assert not backbone.training
        assert all(not m.training for m in backbone.modules())
        assert all(not p.requires_grad for p in backbone.parameters())
    stats = [m.running_mean.clone() for m in model.encoder.backbones.modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    out = model(*_inputs(model))
    sum(t.mean() for t in out.values()).backward()
    assert all(p.grad is None for p in model.encoder.backbones.parameters())
    after = [m.running_mean for m in model.encoder.backbones.modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(stats, after, strict=True))
    # trainable/total split
    frozen = sum(p.numel() for p in model.encoder.backbones.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == total - frozen


def test_unfrozen_mbmt_backbones_train() -> None:
    model = build_model(tiny("mbmt", backbones=["test_efficientnet"] * 2)).train()
    assert all(b.training for b in model.encoder.backbones)
    out = model(*_inputs(model))
    out["depth"].mean().backward()
    assert all(any(p.grad is not None for p in b.parameters()) for b in model.encoder.backbones)


def test_teacher_uses_the_extra_input() -> None:
    model = build_model(tiny("teacher", extra_modality="segmentation", num_classes=3)).eval()
    image = torch.randn(1, 3, H, W)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 3, (1, H, W)), 3)
    onehot = onehot.permute(0, 3, 1, 2).float()
    with torch.no_grad():
        a = model(image, onehot)["depth"]
        b = model(image, torch.zeros_like(onehot))["depth"]
    assert model.extra_channels == 3 and not torch.allclose(a, b)
    assert model.encoder.backbones[1].in_chans == 3
    depth_teacher = build_model(tiny("teacher", extra_modality="depth"))
    assert depth_teacher.extra_channels == 1


def test_forward_rejects_bad_inputs() -> None:
    teacher = build_model(tiny("teacher", extra_modality="depth"))
    with pytest.raises(ModelInputError, match=r"forward\(image, extra\)"):
        teacher(torch.randn(1, 3, 64, 64))
    mt = build_model(tiny("mt", tasks=["depth"]))
    with pytest.raises(ModelInputError, match="RGB"):
        mt(torch.randn(1, 4, 64, 64))
    with pytest.raises(ModelInputError, match="extra"):
        mt(torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64))
