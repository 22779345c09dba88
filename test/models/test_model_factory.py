"""Model factory: registry, resolved configs that rebuild the model, config errors."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import tiny

from mbmt_ros.errors import ModelConfigError
from mbmt_ros.models import available_models, build_model, resolve_model_config


def test_builtin_architectures_registered() -> None:
    assert {"st", "mt", "mbmt", "teacher"} <= set(available_models())


def test_resolved_config_rebuilds_the_same_model() -> None:
    model = build_model(tiny("mbmt", fusion="add", tasks=["normals", "depth"]))
    assert model.tasks == ("depth", "normals")
    assert model.config["tasks"] == ["depth", "normals"]
    assert model.config["num_classes"] == 13 and model.num_classes == 13
    rebuilt = build_model(model.config)
    assert rebuilt.config == model.config
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == \
           [(k, v.shape) for k, v in model.state_dict().items()]


def test_defaults() -> None:
    assert resolve_model_config({"arch": "mt"})["backbone"] == "efficientnet_b5"
    mbmt = resolve_model_config({"arch": "mbmt"})
    assert mbmt["backbones"] == ["efficientnet_b2"] * 3
    assert mbmt["fusion"] == "cat" and mbmt["freeze_backbones"] is True
    assert mbmt["fpn_channels"] == 256 and mbmt["head_channels"] == 128


def test_decoder_width_is_configurable() -> None:
    model = build_model(tiny("st", tasks=["depth"], head_channels=8, task_hidden_channels=16))
    head = model.heads["depth"].layers
    assert head[0].in_channels == 32 and head[0].out_channels == 16
    assert model.fpn.out_channels == 16


BAD: list[tuple[dict[str, Any], str]] = [
    ({"arch": "nope"}, r"unknown model arch 'nope'; available: \["),
    ({"tasks": ["segmentation"]}, r"unknown model arch None"),
    ({"arch": "mt", "backbon": "x"}, r"unknown key\(s\) \['backbon'\].*allowed keys"),
    ({"arch": "mt", "tasks": ["depth", "flow"]}, r"model.tasks: unknown task\(s\) \['flow'\]"),
    ({"arch": "mt", "tasks": []}, r"model.tasks"),
    ({"arch": "mt", "num_classes": 0}, r"num_classes must be an integer >= 1, got 0"),
    ({"arch": "mt", "fpn_channels": "wide"}, r"fpn_channels must be an integer"),
    ({"arch": "st", "tasks": ["depth", "normals"]}, r"'st' model has exactly one task"),
    ({"arch": "mbmt", "fusion": "max"}, r"unknown model.fusion 'max'"),
    ({"arch": "mbmt", "backbones": "efficientnet_b2"}, r"non-empty list"),
    ({"arch": "mbmt", "backbones": ["a", "b"], "backbone_checkpoints": ["x"]},
     r"one checkpoint \(or null\) per backbone \(2 backbones\)"),
    ({"arch": "mbmt", "freeze_backbones": "yes"}, r"freeze_backbones must be true or false"),
    ({"arch": "teacher", "extra_modality": "lidar"}, r"unknown model.extra_modality 'lidar'"),
    ({"arch": "mt", "backbone": "resnet_9000"}, r"unknown backbone 'resnet_9000'"),
]


@pytest.mark.parametrize(("cfg", "message"), BAD, ids=[m[:30] for _, m in BAD])
def test_bad_configs(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_model(cfg)


def test_not_a_mapping() -> None:
    with pytest.raises(ModelConfigError, match="must be a mapping"):
        build_model(["mt"])  # type: ignore[arg-type]


def test_segmentation_classes() -> None:
    model = build_model(tiny("mt", num_classes=40, tasks=["segmentation"])).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32))["segmentation"].shape == (1, 40, 32, 32)
