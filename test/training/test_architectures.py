"""The other papers' architectures in the training pipeline's building blocks: MTI-Net's deep
supervision and MT-UNet's weighting parameter group in the LightningModule, DDP's unused-
parameter search, per-stage model configs of mtinet / mtunet / mti_teacher, stage weighting
options, checkpoint architecture checks, evaluation labels and ``mbmt-train summary``."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from training.config import load_config, parse_config
from training.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "config" / "train"
TRAIN = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "weighting": "equal",
         "weighting_options": {}}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_mtinet(**overrides):
    from mbmt_ros.models import build_model

    cfg = {"arch": "mtinet", "backbones": ["test_efficientnet"], "task_channels": 8,
           "head_channels": 8, "aux_tasks": ["edges"], "num_classes": 5,
           "tasks": ["segmentation", "depth", "normals"], **overrides}
    return build_model(cfg)


def batch(n: int = 2, h: int = 32, w: int = 32, has_seg=None) -> dict:
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(n, 3, h, w, generator=g), dim=1)
    return {"image": torch.randn(n, 3, h, w, generator=g),
            "segmentation": torch.randint(0, 5, (n, h, w), generator=g),
            "depth": torch.rand(n, 1, h, w, generator=g) * 3 + 0.5, "normals": normals,
            "has_segmentation": torch.tensor(has_seg if has_seg is not None else [True] * n),
            "has_depth": torch.ones(n, dtype=torch.bool),
            "has_normals": torch.ones(n, dtype=torch.bool), "index": torch.arange(n)}


# -- LightningModule ---------------------------------------------------------------------------


def test_deep_supervision_adds_initial_and_auxiliary_losses_in_training_only():
    from training.deep_supervision import deep_supervision_losses
    from training.lightning_module import MultiTaskModule
    from training.losses import compute_losses

    model = tiny_mtinet()
    module = MultiTaskModule(model, TRAIN)
    data = batch()
    module.train()
    with torch.no_grad():
        losses = module._step_losses(data)
        aux_loss = module._aux_loss
        outputs, aux = model(data["image"], return_aux=True)  # train-mode BN: same batch stats
        final = compute_losses(outputs, data, model.tasks)
        initial, expected_aux = deep_supervision_losses(aux, data, model.tasks, ("edges",),
                                                        compute_losses)
    assert len(aux) == 4 and sorted(losses) == sorted(model.tasks)
    for task in model.tasks:
        assert float(initial[task]) > 0
        assert float(losses[task]) == pytest.approx(float(final[task] + initial[task]), rel=1e-5)
    assert aux_loss is not None and float(aux_loss) == pytest.approx(float(expected_aux), rel=1e-5)
    # validation (eval mode) scores the final predictions only; nothing auxiliary is computed
    module.eval()
    with torch.no_grad():
        val = module._step_losses(data)
        plain = compute_losses(model(data["image"]), data, model.tasks)
    assert module._aux_loss is None
    assert all(float(val[t]) == pytest.approx(float(plain[t]), rel=1e-5) for t in model.tasks)


def test_deep_supervision_skips_tasks_without_labels():
    from training.lightning_module import MultiTaskModule

    module = MultiTaskModule(tiny_mtinet(), TRAIN).train()
    with torch.no_grad():
        losses = module._step_losses(batch(has_seg=[False, False]))
    assert "segmentation" not in losses and module._aux_loss is None  # edges come from seg
    assert sorted(losses) == ["depth", "normals"]


def test_training_with_deep_supervision_logs_and_steps_the_auxiliary_loss():
    import lightning.pytorch as pl

    from training.lightning_module import MultiTaskModule

    torch.manual_seed(0)
    module = MultiTaskModule(tiny_mtinet(), TRAIN)
    head = module.model.decoder
    before = {k: v.clone() for k, v in head.state_dict().items() if v.is_floating_point()}
    loader = torch.utils.data.DataLoader([{k: v[i] for k, v in batch().items()}
                                          for i in range(2)], batch_size=2)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(module, loader)
    metrics = trainer.callback_metrics
    assert float(metrics["train/loss_auxiliary"]) > 0
    assert float(metrics["train/loss"]) > float(metrics["train/loss_auxiliary"])
    after = head.state_dict()
    # the initial predictions' 1x1 layers (edges: the auxiliary task) get gradient only
    # through deep supervision - they were trained
    predict = [k for k in before if ".predict." in k]
    assert any(".edges.predict." in k for k in predict)
    assert all(not torch.equal(before[k], after[k]) for k in predict), predict


def test_learned_weighting_gets_its_own_parameter_group():
    from mbmt_ros.models import build_model
    from training.lightning_module import MultiTaskModule

    model = build_model({"arch": "mtunet", "base_channels": 4, "num_classes": 5,
                         "tasks": ["segmentation", "depth"]})
    module = MultiTaskModule(model, {**TRAIN, "weight_decay": 1e-4, "weighting": "mtunet",
                                     "weighting_options": {"lr": 5e-2}})
    optimiser = module.configure_optimizers()
    assert len(optimiser.param_groups) == 2
    net, weights = optimiser.param_groups
    assert net["lr"] == 1e-3 and net["weight_decay"] == 1e-4
    assert weights["lr"] == 5e-2 and weights["weight_decay"] == 0.0
    assert [id(p) for p in weights["params"]] == [id(module.weighting.log_weights)]
    assert len(net["params"]) == len(list(model.parameters()))
    # a weighting with parameters but no lr of its own (uncertainty) stays in the one group
    module = MultiTaskModule(model, {**TRAIN, "weighting": "uncertainty"})
    (group,) = module.configure_optimizers().param_groups
    ids = {id(p) for p in group["params"]}
    assert all(id(p) in ids for p in module.weighting.parameters())


@pytest.mark.parametrize("given, expected", [
    ("ddp", "ddp_find_unused_parameters_true"),
    ("ddp_spawn", "ddp_spawn_find_unused_parameters_true"),
    ("ddp_find_unused_parameters_false", "ddp_find_unused_parameters_false"),
    ("auto", "auto"), ("single_device", "single_device"),
])
def test_ddp_searches_for_unused_parameters(given, expected):
    from lightning.pytorch.strategies import StrategyRegistry

    from training.stages.common import resolve_strategy

    assert resolve_strategy({"strategy": given}) == expected
    if "ddp" in expected:
        assert expected in StrategyRegistry.available_strategies()


# -- per-stage model configs -------------------------------------------------------------------


def _stage_arch_config(config, name):
    """The model config the stage's runner builds (the same default-arch rules)."""
    from training.model_configs import TEACHER_ARCHS, multitask_arch, stage_model_config

    spec = config.stage(name)
    if spec.kind in ("train-mt", "train-student"):
        return stage_model_config(config.model, spec, multitask_arch(config.model))
    if spec.kind == "train-teacher":
        shared = config.model.get("arch")
        return stage_model_config(config.model, spec,
                                  shared if shared in TEACHER_ARCHS else "teacher",
                                  extra_modality=spec.options["extra_modality"])
    return stage_model_config(config.model, spec, "mbmt")


@pytest.mark.parametrize("name, expected", [
    ("tiny_architectures", {"mtinet": "mtinet", "mtunet": "mtunet", "teacher": "mti_teacher",
                            "ummt": "mtinet", "ummt-ps": "mtinet", "assemble-mti": "mtinet"}),
    ("nyuv2_mtinet", {"mtinet": "mtinet"}),
    ("nyuv2_mtunet", {"mtunet": "mtunet"}),
    ("nyuv2_imbalanced_mti_teacher", {"teacher": "mti_teacher", "ummt": "mtinet",
                                      "ummt-ps": "mtinet"}),
    ("tiny", {"mt": "mt", "teacher": "teacher", "ummt": "mt", "assemble": "mbmt"}),
])
def test_shipped_configs_build_each_stage_architecture(name, expected):
    from mbmt_ros.models import resolve_model_config

    config = load_config(CONFIGS / f"{name}.yaml")
    for stage, arch in expected.items():
        cfg = resolve_model_config(_stage_arch_config(config, stage))
        assert cfg["arch"] == arch, stage


def test_mti_family_shares_decoder_settings_and_mtinet_takes_the_backbones():
    from training.model_configs import stage_model_config

    config = load_config(CONFIGS / "nyuv2_imbalanced_mti_teacher.yaml")
    raw = copy.deepcopy(config.raw)
    raw["model"].update(task_channels=[8, 16, 24, 32], aux_tasks=["edges"], fpm=False)
    config = parse_config(raw)
    student = stage_model_config(config.model, config.stage("ummt"), "mt")
    assert student["arch"] == "mtinet" and student["backbones"] == ["hrnet_w18_small_v2"]
    assert student["task_channels"] == [8, 16, 24, 32] and student["fpm"] is False
    assert student["aux_tasks"] == ["edges"] and "extra_modality" not in student

    tiny = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())  # shared: MBMT-Net, CAT fusion
    tiny["model"]["fusion"] = "add"
    tiny["stages"].append({"name": "mti", "kind": "train-mt", "model": {"arch": "mtinet"}})
    tiny["stages"].append({"name": "mti-teacher", "kind": "train-teacher",
                           "model": {"arch": "mti_teacher"}})
    config = parse_config(tiny)
    mti = stage_model_config(config.model, config.stage("mti"), "mt")
    assert mti["backbones"] == ["test_efficientnet"] * 3 and mti["fusion"] == "add"
    teacher = stage_model_config(config.model, config.stage("mti-teacher"), "teacher", extra_modality="depth")
    assert teacher["backbone"] == "test_efficientnet" and "backbones" not in teacher
    assert "fusion" not in teacher and "aux_tasks" not in teacher


def test_a_stage_with_another_weighting_gets_only_its_own_options():
    raw = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())  # dwa, temperature 2.0
    raw["stages"] += [
        {"name": "unet", "kind": "train-mt", "model": {"arch": "mtunet"},
         "train": {"weighting": "mtunet", "weighting_options": {"window": 1}}},
        {"name": "equal", "kind": "train-mt", "train": {"weighting": "equal"}},
        {"name": "hotter", "kind": "train-mt", "train": {"weighting_options": {"temperature": 4}}},
        {"name": "dwa-again", "kind": "train-mt", "train": {"weighting": "dwa"}},
    ]
    config = parse_config(raw)
    assert config.stage("unet").train["weighting_options"] == {"window": 1}
    assert config.stage("equal").train["weighting_options"] == {}
    assert config.stage("hotter").train["weighting_options"] == {"temperature": 4}
    assert config.stage("dwa-again").train["weighting_options"] == {"temperature": 2.0}
    assert config.stage("mt").train["weighting_options"] == {"temperature": 2.0}


def test_stage_models_are_checked_for_their_architecture(tmp_path):
    from mbmt_ros.models import build_model, save_model
    from training.model_configs import MULTI_BACKBONE_ARCHS, TEACHER_ARCHS
    from training.stages.models import load_stage_model

    teacher = build_model({"arch": "mti_teacher", "backbone": "test_efficientnet",
                           "task_channels": 8, "head_channels": 8, "num_classes": 5})
    save_model(tmp_path / "teacher.safetensors", teacher)
    loaded = load_stage_model(tmp_path / "teacher.safetensors", TEACHER_ARCHS, "stage 'pseudo'")
    assert loaded.config["arch"] == "mti_teacher" and loaded.extra_channels == 1
    mti = tiny_mtinet(backbones=["test_efficientnet"] * 3, aux_tasks=[])
    save_model(tmp_path / "mti.safetensors", mti)
    assert load_stage_model(tmp_path / "mti.safetensors", MULTI_BACKBONE_ARCHS, "x").tasks == \
        mti.tasks
    with pytest.raises(CheckpointError) as info:
        load_stage_model(tmp_path / "mti.safetensors", TEACHER_ARCHS, "stage 'pseudo'")
    message = str(info.value)
    assert "stage 'pseudo'" in message and "'mtinet'" in message and "mti_teacher" in message
    assert str(tmp_path / "mti.safetensors") in message


# -- evaluation labels and summary -------------------------------------------------------------


def test_result_rows_name_the_architecture(tmp_path):
    from mbmt_ros.models import build_model, save_model
    from training.run_dir import RunDir
    from training.stages.evaluate import _describe

    cases = [
        ({"arch": "mtinet", "backbones": ["test_efficientnet"], "aux_tasks": ["edges"],
          "task_channels": 8, "head_channels": 8}, "train-mt",
         "MTI-Net test_efficientnet, aux edges"),
        ({"arch": "mtinet", "backbones": ["test_efficientnet"] * 3, "task_channels": 8,
          "head_channels": 8, "freeze_backbones": True}, "train-mbmt",
         "MTI-Net 3xtest_efficientnet, cold, backbones frozen"),
        ({"arch": "mtinet", "backbones": ["test_efficientnet"], "task_channels": 8,
          "head_channels": 8, "tasks": ["segmentation", "depth"]}, "train-student",
         "student MTI-Net test_efficientnet"),
        ({"arch": "mtunet", "base_channels": 4}, "train-mt", "MT-UNet base 4"),
        ({"arch": "mti_teacher", "backbone": "test_efficientnet", "task_channels": 8,
          "head_channels": 8}, "train-teacher",
         "MTI teacher test_efficientnet + test_efficientnet (FFM) + depth input (GT at test)"),
        ({"arch": "mt", "backbone": "test_efficientnet", "fpn_channels": 16,
          "head_channels": 8}, "train-mt", "MT test_efficientnet"),
    ]
    for i, (cfg, kind, expected) in enumerate(cases):
        path = tmp_path / f"{i}.safetensors"
        save_model(path, build_model({"num_classes": 5, **cfg}))
        assert _describe(RunDir(tmp_path), "x", kind, path) == expected


def test_summary_of_the_architecture_configs(tmp_path, capsys):
    from training.commands import summary

    parser = __import__("argparse").ArgumentParser()
    summary.add_arguments(parser)
    # a pipeline config: the input size comes from data.input_size
    cfg = yaml.safe_load((CONFIGS / "nyuv2_imbalanced_mti_teacher.yaml").read_text())
    cfg.pop("input_size")
    cfg["model"].update(backbone="test_efficientnet", task_channels=8, head_channels=8)
    cfg["data"]["input_size"] = [64, 96]
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert summary.run(parser.parse_args(["--config", str(path)])) == 0
    out = capsys.readouterr().out
    assert "model           mti_teacher  (FFM: features added per scale)" in out
    assert "backbones       test_efficientnet, test_efficientnet (depth input)" in out
    assert "input size      64 x 96" in out
    cfg = yaml.safe_load((CONFIGS / "tiny_architectures.yaml").read_text())
    path.write_text(yaml.safe_dump({**cfg, "data": {"input_size": [32, 64]}}))
    assert summary.run(parser.parse_args(["--config", str(path)])) == 0
    out = capsys.readouterr().out
    assert "(auxiliary: edges)" in out and "input size      32 x 64" in out
