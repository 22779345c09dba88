"""Unit tests of the pipeline's building blocks: config validation, overrides, per-stage model
configs, the safe checkpoint I/O, non-finite-loss handling, result grids and tables."""
from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from training.config import load_config, parse_config
from training.errors import CheckpointError, ConfigError, TrainingError

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "config" / "train" / "tiny.yaml"


def tiny_raw() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.mark.parametrize("name", ["tiny", "nyuv2_mbmt", "nyuv2_imbalanced", "rosbag"])
def test_shipped_configs_parse_and_build_stage_models(name):
    from mbmt_ros.models import resolve_model_config
    from training.model_configs import stage_model_config

    config = load_config(REPO / "config" / "train" / f"{name}.yaml")
    assert config.stages
    defaults = {"train-mt": "mt", "train-student": "mt", "train-teacher": "teacher",
                "train-mbmt": "mbmt"}
    for spec in config.stages:
        if spec.kind in defaults:
            cfg = stage_model_config(config.model, spec, defaults[spec.kind])
            resolve_model_config(cfg)  # every derived config is valid for build_model


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(bogus=1), "unknown top-level key(s) ['bogus']"),
    (lambda r: r["train"].update(epoch=3), "unknown key(s) ['epoch']"),
    (lambda r: r["train"].update(batch_size=0), "train.batch_size: Input should be greater than or equal to 1"),
    (lambda r: r["stages"].append({"name": "x", "kind": "train-everything"}),
     "unknown kind 'train-everything'"),
    (lambda r: r["stages"][1].update(colour="red"), "unknown option(s) ['colour']"),
    (lambda r: r["stages"].insert(0, {"name": "early", "kind": "assemble", "from": "pretrain-st"}),
     "'pretrain-st' is not an earlier stage"),
    (lambda r: r["stages"][7].update(tau=1.5), ".tau: Input should be less than 1"),
    (lambda r: r["stages"].append({"name": "mt"}), "stage name 'mt' is used twice"),
    (lambda r: r["stages"][7].update(teacher="mt"), "is a train-mt stage"),
    (lambda r: r.pop("model"), "'model:' section is required"),
    (lambda r: r["data"].update(synth=None), "give either 'root'"),
])
def test_config_errors_name_the_problem(mutate, message):
    raw = tiny_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, Path("tiny.yaml"))
    assert message in str(info.value)
    assert "tiny.yaml" in str(info.value)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_reach_every_stage_and_single_stages():
    from training.stages.options import apply_overrides

    raw = apply_overrides(copy.deepcopy(tiny_raw()),
                          ["train.epochs=1", "stages.pseudo.tau=0.5", "data.synth.count=10",
                           "stages.teacher.model.tasks=[segmentation]"])
    config = parse_config(raw)
    assert {s.train["epochs"] for s in config.stages} == {1}  # teacher's own 8 is overridden
    assert config.stage("pseudo").options["tau"] == 0.5
    assert config.stage("teacher").model["tasks"] == ["segmentation"]
    assert config.data["synth"]["count"] == 10
    with pytest.raises(ConfigError, match="no stage named 'nope'"):
        apply_overrides(tiny_raw(), ["stages.nope.tau=0.5"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(tiny_raw(), ["train.epochs"])


def test_stage_models_derive_from_the_shared_mbmt_section():
    from mbmt_ros.models import build_model
    from training.model_configs import stage_model_config

    raw = tiny_raw()
    raw["model"]["backbones"] = ["test_efficientnet", "resnet10t", "test_efficientnet"]
    config = parse_config(raw)
    mt = stage_model_config(config.model, config.stage("mt"), "mt")
    assert mt["arch"] == "mt" and mt["backbone"] == "test_efficientnet"
    assert "backbones" not in mt and mt["fpn_channels"] == 16
    teacher = stage_model_config(config.model, config.stage("teacher"), "teacher",
                                 extra_modality="depth")
    model = build_model(teacher)
    assert model.tasks == ("segmentation", "depth") and model.extra_channels == 1


def test_safe_checkpoint_io_is_atomic_and_refuses_pickled_objects(tmp_path):
    from training.checkpoint_io import SafeCheckpointIO

    io = SafeCheckpointIO()
    state = {"state_dict": {"w": torch.ones(2)}, "epoch": 3, "loops": {"a": [1, 2.5, "x"]}}
    io.save_checkpoint(state, tmp_path / "ck" / "last.ckpt")
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["last.ckpt"]  # no temp file left
    back = io.load_checkpoint(tmp_path / "ck" / "last.ckpt")
    assert back["epoch"] == 3 and torch.equal(back["state_dict"]["w"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"x": Evil()}))
    torch.save({"obj": Evil()}, tmp_path / "evil2.ckpt")
    for path in (evil, tmp_path / "evil2.ckpt"):
        with pytest.raises(CheckpointError, match="cannot be read safely"):
            io.load_checkpoint(path)
    (tmp_path / "trunc.ckpt").write_bytes((tmp_path / "ck" / "last.ckpt").read_bytes()[:50])
    with pytest.raises(CheckpointError, match="trunc.ckpt"):
        io.load_checkpoint(tmp_path / "trunc.ckpt")


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _items(n: int, poison: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        image = torch.randn(3, 32, 32, generator=g)
        if poison and i == n - 1:
            image[:, :4, :4] = float("nan")
        items.append({"image": image, "segmentation": torch.randint(0, 3, (32, 32), generator=g),
                      "depth": torch.rand(1, 32, 32, generator=g) + 0.5,
                      "has_segmentation": True, "has_depth": True, "index": i})
    return items


def _stage_ctx(tmp_path, epochs: int):
    from training.run_dir import RunDir
    from training.stages.common import StageContext

    raw = tiny_raw()
    raw["train"].update(epochs=epochs, batch_size=2, deterministic=True)
    config = parse_config(raw)
    return StageContext(config, RunDir(tmp_path / "run"), config.stage("mt"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from torch.utils.data import DataLoader

    from mbmt_ros.models import build_model
    from training.checkpoint_io import load_resume_state
    from training.lightning_module import MultiTaskModule
    from training.stages.common import fit_model

    cfg = {"arch": "mt", "backbone": "test_efficientnet", "tasks": ["segmentation", "depth"],
           "num_classes": 3, "fpn_channels": 8, "head_channels": 8, "task_hidden_channels": 8}
    ctx = _stage_ctx(tmp_path, epochs=1)
    clean = DataLoader(_ListDataset(_items(4)), batch_size=2)
    fit_model(ctx, MultiTaskModule(build_model(cfg), ctx.train), clean, None)
    last = ctx.dir / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    assert load_resume_state(last)["global_step"] == 2  # one finished epoch: 4 items, batch 2

    ctx = _stage_ctx(tmp_path, epochs=3)
    poisoned = DataLoader(_ListDataset(_items(4, poison=True)), batch_size=2)
    with pytest.raises(TrainingError, match="non-finite loss at epoch 1.*last good checkpoint"):
        fit_model(ctx, MultiTaskModule(build_model(cfg), ctx.train), poisoned, None)
    assert last.read_bytes() == good  # resumed from it, never overwritten with a bad state
    state = load_resume_state(last)
    assert all(torch.isfinite(v).all() for k, v in state["state_dict"].items()
               if k.startswith("model.") and v.is_floating_point())


def test_teacher_extra_input_from_labels():
    from training.lightning_module import teacher_extra_input

    seg = torch.tensor([[[0, 2], [-1, 1]]])
    onehot = teacher_extra_input({"segmentation": seg}, "segmentation", 3)
    assert onehot.shape == (1, 3, 2, 2)
    assert onehot[0, :, 0, 0].tolist() == [1, 0, 0] and onehot[0, :, 0, 1].tolist() == [0, 0, 1]
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 0]  # void -> all zero
    depth = torch.rand(1, 1, 2, 2)
    assert torch.equal(teacher_extra_input({"depth": depth}, "depth", 3), depth)
    with pytest.raises(ConfigError):
        teacher_extra_input({}, "normals", 3)


def test_colour_maps():
    """The result grids colour with the node's module (mbmt_ros.imaging.colorize): void and
    invalid pixels black, one depth colour map."""
    from mbmt_ros.imaging.colorize import (
        colorize_depth,
        colorize_normals,
        colorize_segmentation,
        palette_lut,
    )

    seg = colorize_segmentation(np.array([[0, 1], [-1, 7]]), palette_lut([(10, 20, 30), (40, 50, 60)]))
    assert seg[0, 0].tolist() == [10, 20, 30] and seg[0, 1].tolist() == [40, 50, 60]
    assert seg[1, 0].tolist() == [0, 0, 0] and seg[1, 1].tolist() == [0, 0, 0]
    n = colorize_normals(np.array([[[0, 0, -1], [0, 0, 0]]], np.float32))
    assert n[0, 0].tolist() == [128, 128, 0] and n[0, 1].tolist() == [0, 0, 0]
    d = colorize_depth(np.array([[0.0, 1.0, 3.0]]), max_depth=3.0, min_depth=1.0)
    assert d[0, 0].tolist() == [0, 0, 0] and d[0, 1].tolist() != d[0, 2].tolist()


def test_result_grid_png(tmp_path):
    from PIL import Image

    from training.plots import save_result_grid

    rng = np.random.default_rng(0)
    sample = {"rgb": rng.integers(0, 255, (16, 24, 3), dtype=np.uint8),
              "gt_segmentation": rng.integers(-1, 13, (16, 24)),
              "pred_segmentation": rng.integers(0, 13, (16, 24)),
              "gt_depth": rng.random((16, 24)) + 0.5, "pred_depth": rng.random((16, 24)),
              "pred_normals": rng.normal(size=(16, 24, 3))}
    path = save_result_grid(tmp_path / "g" / "grid.png", [sample, sample])
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]


def test_tables_delta_m_against_single_task_baseline():
    from training.metrics import delta_m
    from training.tables import TableRow, csv_table, markdown_table

    st = {"segmentation": {"miou": 40.0, "pixel_acc": 60.0},
          "depth": {"abs_err": 0.5, "rel_err": 0.2}}
    mt = {"segmentation": {"miou": 44.0, "pixel_acc": 60.0},
          "depth": {"abs_err": 0.55, "rel_err": 0.2}}
    rows = [TableRow("st", st, "ST"), TableRow("mt", mt, "MT")]
    md = markdown_table(rows, baseline=st)
    # seg: (+10 % + 0) / 2 = +5; depth: (-10 % + 0) / 2 = -5  -> mean 0.00
    assert "| mt | MT | 44.0000 | 60.0000 | 0.5500 | 0.2000 | 0.00 |" in md
    assert md.splitlines()[0].startswith("| Run | Description | Seg mIoU ↑")
    lines = csv_table(rows, baseline=st).splitlines()
    assert lines[0] == ("run,description,segmentation.miou,segmentation.pixel_acc,"
                        "depth.abs_err,depth.rel_err,delta_m")
    assert float(lines[2].split(",")[-1]) == pytest.approx(delta_m(mt, st)) == pytest.approx(0.0)


def test_disk_full_is_a_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno
    import os

    import training.stages as stages
    from training.run_dir import RunDir

    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "training.cli", "synth", "--out", str(data), "--count",
                    "6", "--size", "16", "32", "--seed", "0"], check=True, capture_output=True,
                   cwd=REPO)
    raw = tiny_raw()
    raw["data"] = {"root": str(data)}
    raw["stages"][0].update(depth=4, segmentation=2)
    config = parse_config(raw)
    run = RunDir(tmp_path / "run")

    def no_space(fd):  # the kernel reports a full disk when the data is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(TrainingError, match="no space left on the device.*re-run to continue"):
        stages.run_stage(config, run, "split")
    assert not run.is_done("split")
    assert [p.name for p in (tmp_path / "run" / "split").iterdir()] == []  # no partial file


def test_dwa_weights_follow_the_epoch_mean_losses_during_training(tmp_path):
    import math

    from torch.utils.data import DataLoader

    from mbmt_ros.models import build_model
    from training.lightning_module import MultiTaskModule
    from training.stages.common import fit_model

    cfg = {"arch": "mt", "backbone": "test_efficientnet", "tasks": ["segmentation", "depth"],
           "num_classes": 3, "fpn_channels": 8, "head_channels": 8, "task_hidden_channels": 8}
    ctx = _stage_ctx(tmp_path, epochs=3)
    module = MultiTaskModule(build_model(cfg), ctx.train)
    seen, step_losses = [], []
    original_epoch_end = module.weighting.epoch_end

    def record(means):
        seen.append(dict(means))
        original_epoch_end(means)

    module.weighting.epoch_end = record
    original_step = module._step_losses

    def step(batch):
        losses = original_step(batch)
        step_losses.append({t: float(v.detach()) for t, v in losses.items()})
        return losses

    module._step_losses = step
    fit_model(ctx, module, DataLoader(_ListDataset(_items(4)), batch_size=2), None)
    assert len(seen) == 3 and all(sorted(m) == ["depth", "segmentation"] for m in seen)
    for epoch, means in enumerate(seen):  # the mean of the epoch's unweighted step losses
        steps = step_losses[2 * epoch:2 * epoch + 2]
        for task, value in means.items():
            assert value == pytest.approx(sum(s[task] for s in steps) / 2)
    # after epoch t = 2 the weights hold for epoch 3: K softmax(w / T), w = L(t-1) / L(t-2)
    w = {t: seen[2][t] / seen[1][t] for t in ("segmentation", "depth")}
    z = sum(math.exp(v / 2.0) for v in w.values())
    expected = {t: 2 * math.exp(v / 2.0) / z for t, v in w.items()}
    assert module.weighting.weights() == pytest.approx(expected)
