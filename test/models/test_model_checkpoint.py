"""Model checkpoints: round trip, metadata, MBMT assembly from ST checkpoints, and errors
for checkpoints of another architecture, corrupt files and non-checkpoint files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny

from mbmt_ros.errors import CheckpointError
from mbmt_ros.models import (
    build_model,
    load_backbone_weights,
    load_model,
    load_weights,
    read_checkpoint_config,
    read_checkpoint_metadata,
    save_model,
)


def _perturb_bn(model: torch.nn.Module) -> None:
    """Give BatchNorm non-default statistics so a round trip must carry buffers too."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def test_round_trip(tmp_path: Path) -> None:
    model = build_model(tiny("teacher", extra_modality="depth", tasks=["segmentation", "depth"]))
    _perturb_bn(model)
    model.eval()
    path = save_model(tmp_path / "stage" / "model.safetensors", model, {"stage": "teacher",
                                                                         "epoch": 3})
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    assert read_checkpoint_config(path) == model.config
    assert read_checkpoint_metadata(path) == {"stage": "teacher", "epoch": 3}
    loaded = load_model(tmp_path / "stage")  # a folder holding model.safetensors also works
    assert not loaded.training and loaded.config == model.config
    image, depth = torch.randn(1, 3, 48, 64), torch.rand(1, 1, 48, 64)
    with torch.no_grad():
        a, b = model(image, depth), loaded(image, depth)
    for task in model.tasks:
        torch.testing.assert_close(a[task], b[task], rtol=0, atol=0)


def test_load_model_does_not_need_referenced_weight_files(tmp_path: Path) -> None:
    st = build_model(tiny("st", tasks=["depth"]))
    save_model(tmp_path / "st.safetensors", st)
    mbmt = build_model(tiny("mbmt", backbones=["test_efficientnet"] * 2,
                            backbone_checkpoints=[str(tmp_path / "st.safetensors"), None]))
    save_model(tmp_path / "mbmt.safetensors", mbmt)
    (tmp_path / "st.safetensors").unlink()
    loaded = load_model(tmp_path / "mbmt.safetensors", expected_arch="mbmt")
    torch.testing.assert_close(loaded.state_dict(), mbmt.state_dict())


def test_mbmt_assembly_takes_st_backbones(tmp_path: Path) -> None:
    paths = []
    sts = []
    for task in ("segmentation", "depth"):
        st = build_model(tiny("st", tasks=[task]))
        _perturb_bn(st)
        sts.append(st)
        paths.append(save_model(tmp_path / f"{task}.safetensors", st))  # Path objects
    mbmt = build_model(tiny("mbmt", backbones=["test_efficientnet"] * 2, backbone_checkpoints=paths,
                            freeze_backbones=True))
    assert mbmt.config["backbone_checkpoints"] == [str(p) for p in paths]  # JSON-friendly
    save_model(tmp_path / "mbmt.safetensors", mbmt)
    for st, backbone in zip(sts, mbmt.encoder.backbones, strict=True):
        torch.testing.assert_close(backbone.state_dict(), st.encoder.backbones[0].state_dict())
        assert not any(p.requires_grad for p in backbone.parameters())


def test_wrong_architecture(tmp_path: Path) -> None:
    st = build_model(tiny("st", tasks=["depth"]))
    save_model(tmp_path / "st.safetensors", st)
    path = tmp_path / "st.safetensors"
    with pytest.raises(CheckpointError, match=r"holds a 'st' model but a 'mbmt' model is needed"):
        load_model(path, expected_arch="mbmt")
    with pytest.raises(CheckpointError, match=r"holds a 'st' model, not the 'mt' model"):
        load_weights(build_model(tiny("mt", tasks=["depth"])), path)
    # same arch, different configuration: the keys that differ are named
    other = build_model(tiny("st", tasks=["normals"]))
    with pytest.raises(CheckpointError,
                       match=rf"checkpoint {path} does not match the model \(missing keys: "
                             r"decoders.normals"):
        load_weights(other, path)
    wider = build_model(tiny("st", tasks=["depth"], fpn_channels=24))
    with pytest.raises(CheckpointError, match=r"shape mismatch \(file vs model\): decoders"):
        load_weights(wider, path)
    # an ST checkpoint of another backbone cannot seed an MBMT backbone
    with pytest.raises(CheckpointError, match=r"has backbone 'test_efficientnet'.*expects "
                                              r"'test_resnet'"):
        build_model(tiny("mbmt", backbones=["test_resnet"], backbone_checkpoints=[str(path)]))
    from mbmt_ros.models import create_backbone
    with pytest.raises(CheckpointError, match="expects 'test_convnext'"):
        load_backbone_weights(create_backbone("test_convnext"), path, index=0)


def test_training_reexports_the_same_error() -> None:
    import training.errors

    assert training.errors.CheckpointError is CheckpointError


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = build_model(tiny("st", tasks=["depth"]))
    good = save_model(tmp_path / "good.safetensors", model)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file" * 10)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=rf"{path.name}.*(corrupt|readable)"):
            load_model(path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an mbmt_ros model checkpoint"):
        load_model(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


@pytest.mark.gpu
def test_cuda_round_trip(tmp_path: Path) -> None:
    model = build_model(tiny("mbmt", backbones=["test_efficientnet"] * 2,
                             freeze_backbones=True)).cuda().eval()
    path = save_model(tmp_path / "m.safetensors", model)
    loaded = load_model(path, map_location="cuda")
    image = torch.randn(1, 3, 60, 84, device="cuda")
    with torch.no_grad():
        a, b = model(image), loaded(image)
    assert all(t.is_cuda and t.shape[-2:] == (60, 84) for t in b.values())
    for task in model.tasks:
        torch.testing.assert_close(a[task], b[task])
