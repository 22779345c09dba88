"""``init:`` (training/stages/init.py): a stage starts from another run's weights - matching
tensors copied, the backbone required in full, a clear error otherwise - and its fingerprint
follows the content of the file it starts from."""
from __future__ import annotations

import pytest
import torch

from mbmt_ros.models import build_model, save_model
from training.config import parse_config
from training.errors import CheckpointError
from training.run_dir import RunDir
from training.stages.fingerprint import fingerprint_of
from training.stages.init import init_file, init_model

_SMALL = {"num_classes": 13, "fpn_channels": 8, "head_channels": 4, "task_hidden_channels": 8}


def _mt(backbone="test_efficientnet", tasks=("segmentation", "depth", "normals")):
    return build_model({"arch": "mt", "backbone": backbone, "tasks": list(tasks), **_SMALL})


def test_matching_tensors_are_copied_and_the_rest_kept(tmp_path):
    torch.manual_seed(0)
    source = _mt()
    path = tmp_path / "mt" / "model.safetensors"
    path.parent.mkdir()
    save_model(path, source)
    torch.manual_seed(1)
    student = _mt(tasks=("segmentation", "depth"))
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    info = init_model(student, init_file(tmp_path / "mt"), "stage 'ummt'")
    copied, total = info["init_tensors"]
    assert copied == total == len(fresh)  # a two-task student is a subset of the three-task net
    src = source.state_dict()
    for key, value in student.state_dict().items():
        assert torch.equal(value, src[key]), key
    assert not all(torch.equal(fresh[k], src[k]) for k in fresh)
    # the other way round the normals branch keeps its fresh initialisation
    three = _mt()
    before = {k: v.clone() for k, v in three.state_dict().items()}
    two = tmp_path / "two.safetensors"
    save_model(two, student)
    info = init_model(three, two, "stage 'mt-src'")
    assert info["init_tensors"][0] < info["init_tensors"][1]
    normals = [k for k in before if ".normals." in k]
    assert normals and all(torch.equal(three.state_dict()[k], before[k]) for k in normals)


def test_another_backbone_or_a_missing_file_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_model(path, _mt("test_resnet"))
    with pytest.raises(CheckpointError, match="does not fit this model.*same backbone"):
        init_model(_mt(), path, "stage 'mt-src'")
    with pytest.raises(CheckpointError, match="study_source.yaml"):
        init_file(tmp_path / "nowhere", "depth")


def test_the_fingerprint_follows_the_init_file(tmp_path):
    path = tmp_path / "src" / "model.safetensors"
    path.parent.mkdir()
    torch.manual_seed(0)
    save_model(path, _mt())
    raw = {"name": "t", "model": {"arch": "mt", "backbone": "test_efficientnet", **_SMALL},
           "data": {"synth": {"count": 8}},
           "stages": [{"name": "mt", "kind": "train-mt", "init": str(tmp_path / "src")},
                      {"name": "plain", "kind": "train-mt"}]}
    config, run = parse_config(raw), RunDir(tmp_path / "run")
    first, plain = fingerprint_of(config, run, "mt"), fingerprint_of(config, run, "plain")
    torch.manual_seed(1)
    save_model(path, _mt())  # the source was re-trained
    assert fingerprint_of(config, run, "mt") != first
    assert fingerprint_of(config, run, "plain") == plain
