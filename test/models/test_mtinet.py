"""MTI-Net and the imbalanced-data paper's MTI-Net teacher: blocks, models, deep
supervision, auxiliary edges, MBMT-style fused backbones, checkpoints and ONNX export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_BACKBONE

from mbmt_ros.errors import ModelConfigError, ModelInputError
from mbmt_ros.models import build_model, load_model, save_model
from mbmt_ros.models.backbone import create_backbone
from mbmt_ros.models.mtinet import EDGES, MTINetDecoder, create_mti_backbone
from mbmt_ros.models.mtinet_blocks import (
    BasicResidualBlock,
    FeatureAggregation,
    FeaturePropagation,
    InitialTaskHead,
    MultiModalDistillation,
    SqueezeExcitation,
)
from training.deep_supervision import deep_supervision_losses, edge_loss, semantic_edges

H, W = 33, 47  # odd sizes: every output must still be at the input size
REPO = Path(__file__).resolve().parents[2]


def tiny_mti(arch: str = "mtinet", **overrides):
    cfg = {"arch": arch, "task_channels": 8, "head_channels": 8, "num_classes": 5}
    if arch == "mtinet":
        cfg["backbones"] = [TINY_BACKBONE]
    else:
        cfg["backbone"] = TINY_BACKBONE
    cfg.update(overrides)
    return cfg


def _grads_everywhere(module: torch.nn.Module) -> list[str]:
    """Trainable parameters the backward pass did not reach (empty when all were)."""
    return [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]


# ------------------------------------------------------------------------------ blocks

def test_basic_block_projects_channels_and_trains() -> None:
    block = BasicResidualBlock(6, 4)
    x = torch.randn(2, 6, 9, 7, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 4, 9, 7) and bool((y >= 0).all())  # ReLU output
    y.sum().backward()
    assert x.grad is not None and not _grads_everywhere(block)


def test_squeeze_excitation_gates_channels() -> None:
    se = SqueezeExcitation(8)
    x = torch.randn(2, 8, 5, 6)
    y = se(x)
    gate = y / x
    # one gate in (0, 1) per sample and channel, constant over the image
    assert torch.allclose(gate, gate[..., :1, :1].expand_as(gate), atol=1e-5)
    assert bool(((gate > 0) & (gate < 1)).all())


def test_initial_head_gives_features_and_prediction() -> None:
    head = InitialTaskHead(6, 8, 5)
    feats, pred = head(torch.randn(2, 6, 7, 9))
    assert feats.shape == (2, 8, 7, 9) and pred.shape == (2, 5, 7, 9)
    (feats.mean() + pred.mean()).backward()
    assert not _grads_everywhere(head)


def test_distillation_is_eq1_and_never_targets_auxiliary_tasks() -> None:
    mmd = MultiModalDistillation(["segmentation", "depth", EDGES], ["segmentation", "depth"], 4)
    feats = {t: torch.randn(2, 4, 6, 5, requires_grad=True)
             for t in ("segmentation", "depth", EDGES)}
    out = mmd(feats)
    assert set(out) == {"segmentation", "depth"}
    # Eq. 1 by hand for segmentation: own features + attended depth and edge features
    expected = feats["segmentation"].clone()
    for src in ("depth", EDGES):
        att = mmd.attention[f"segmentation__{src}"]
        expected = expected + torch.sigmoid(att.mask(feats[src])) * att.value(feats[src])
    assert torch.allclose(out["segmentation"], expected, atol=1e-6)
    # depth's distilled features depend on segmentation's (cross-task flow)
    out["depth"].sum().backward()
    assert feats["segmentation"].grad is not None and bool(feats["segmentation"].grad.abs().sum() > 0)
    assert "segmentation__segmentation" not in mmd.attention
    assert not any(key.startswith(f"{EDGES}__") for key in mmd.attention)


def test_feature_propagation_upsamples_every_task() -> None:
    fpm = FeaturePropagation(["segmentation", "depth", "normals"], 8, 4)
    feats = {t: torch.randn(2, 8, 3, 4, requires_grad=True)
             for t in ("segmentation", "depth", "normals")}
    out = fpm(feats, (6, 7))
    assert {t: tuple(v.shape) for t, v in out.items()} == {
        t: (2, 4, 6, 7) for t in ("segmentation", "depth", "normals")}
    out["depth"].sum().backward(retain_graph=True)
    # the shared representation mixes every task into each task's output
    assert all(bool(feats[t].grad.abs().sum() > 0) for t in feats)
    sum(v.sum() for v in out.values()).backward()
    assert not _grads_everywhere(fpm)


def test_feature_aggregation_decodes_all_scales() -> None:
    fa = FeatureAggregation([4, 6, 8, 10], 8, 3)
    feats = [torch.randn(2, c, 12 // 2 ** i + 1, 10 // 2 ** i + 1, requires_grad=True)
             for i, c in enumerate([4, 6, 8, 10])]
    y = fa(feats)
    assert y.shape == (2, 3, 13, 11)
    y.sum().backward()
    assert all(bool(f.grad.abs().sum() > 0) for f in feats)


def test_decoder_without_fpm_has_no_propagation() -> None:
    dec = MTINetDecoder([4, 6, 8, 10], ["segmentation", "depth"], 3, [4, 4, 4, 4], 8, fpm=False)
    assert len(dec.propagate) == 0
    feats = [torch.randn(2, c, 16 // 2 ** i, 16 // 2 ** i) for i, c in enumerate([4, 6, 8, 10])]
    out, aux = dec(feats, (64, 64))
    assert out["segmentation"].shape == (2, 3, 64, 64) and len(aux) == 4


# ------------------------------------------------------------------------------ models

def test_mtinet_outputs_deep_supervision_and_gradients() -> None:
    model = build_model(tiny_mti(aux_tasks=["edges"]))
    assert model.tasks == ("segmentation", "depth", "normals") and model.aux_tasks == (EDGES,)
    assert model.deep_supervision and model.extra_channels == 0
    out, aux = model(torch.randn(2, 3, H, W), return_aux=True)
    assert out["segmentation"].shape == (2, 5, H, W)
    assert out["depth"].shape == (2, 1, H, W) and out["normals"].shape == (2, 3, H, W)
    assert EDGES not in out
    norms = out["normals"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    # one dict per scale (1/4 .. 1/32), every front-end task, all at the input size
    assert len(aux) == 4
    for scale in aux:
        assert set(scale) == {"segmentation", "depth", "normals", EDGES}
        assert scale[EDGES].shape == (2, 1, H, W) and scale["segmentation"].shape == (2, 5, H, W)
        assert torch.allclose(scale["normals"].norm(dim=1), torch.ones(2, H, W), atol=1e-4)
    loss = sum(v.mean() for v in out.values()) + sum(v.mean() for s in aux for v in s.values())
    loss.backward()
    assert not _grads_everywhere(model)
    # plain forward: just the dict
    assert isinstance(model.eval()(torch.randn(1, 3, 32, 32)), dict)


def test_deep_supervision_alone_trains_the_front_end() -> None:
    model = build_model(tiny_mti(tasks=["segmentation", "depth"], aux_tasks=["normals"]))
    _, aux = model(torch.randn(2, 3, H, W), return_aux=True)
    aux[3]["normals"].sum().backward()  # coarsest scale's auxiliary normals prediction
    head = model.decoder.heads[3]["normals"]
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is None for p in model.decoder.aggregate.parameters())


def test_mtinet_with_fpn_neck_and_no_fpm() -> None:
    model = build_model(tiny_mti(neck="fpn", fpn_channels=16, fpm=False, task_channels=[4, 4, 8, 8]))
    out = model(torch.randn(2, 3, H, W))
    assert out["depth"].shape == (2, 1, H, W)
    assert len(model.decoder.propagate) == 0


def test_mtinet_as_decoder_of_fused_frozen_backbones() -> None:
    model = build_model(tiny_mti(backbones=[TINY_BACKBONE] * 2, fusion="cat",
                                 freeze_backbones=True))
    one = create_backbone(TINY_BACKBONE).channels
    assert model.encoder.out_channels == tuple(2 * c for c in one)
    model.train()
    out, aux = model(torch.randn(2, 3, H, W), return_aux=True)
    (sum(v.mean() for v in out.values()) + sum(v.mean() for s in aux for v in s.values())
     ).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(not b.training for b in model.encoder.backbones)
    assert not _grads_everywhere(model.decoder)


def test_mti_teacher_fuses_the_extra_modality_by_addition() -> None:
    model = build_model(tiny_mti("mti_teacher", extra_modality="segmentation"))
    assert model.tasks == ("segmentation", "depth") and model.extra_channels == 5
    assert model.encoder.fusion.mode == "add" and model.encoder.streams == (0, 1)
    model.eval()
    image, extra = torch.randn(1, 3, H, W), torch.randn(1, 5, H, W)
    with torch.no_grad():
        a = model(image, extra)
        b = model(image, torch.zeros_like(extra))
    assert a["segmentation"].shape == (1, 5, H, W) and a["depth"].shape == (1, 1, H, W)
    assert not torch.allclose(a["depth"], b["depth"])  # the extra input is used
    with pytest.raises(ModelInputError, match="extra"):
        model(image)
    with pytest.raises(ModelInputError, match="extra"):
        model(image, torch.randn(1, 1, H, W))
    depth_teacher = build_model(tiny_mti("mti_teacher"))
    assert depth_teacher.extra_channels == 1


@pytest.mark.parametrize("bad", [
    {"aux_tasks": ["depth"]},                  # already a final task
    {"aux_tasks": ["edges", "edges"]},
    {"aux_tasks": ["contours"]},
    {"neck": "bifpn"},
    {"task_channels": [8, 8]},
    {"fpm": "yes"},
    {"backbones": "test_efficientnet"},
    {"fusion": "max"},
    {"backbone_checkpoints": ["a.safetensors"], "backbones": [TINY_BACKBONE] * 2},
])
def test_bad_configs_are_model_config_errors(bad) -> None:
    with pytest.raises(ModelConfigError):
        build_model(tiny_mti(**bad))


def test_teacher_rejects_unknown_modality() -> None:
    with pytest.raises(ModelConfigError, match="extra_modality"):
        build_model(tiny_mti("mti_teacher", extra_modality="lidar"))


def test_hrnet_exposes_raw_branches() -> None:
    branches = create_mti_backbone("hrnet_w18_small")
    assert branches.channels == (16, 32, 64, 128)
    x = torch.randn(1, 3, 64, 64)
    assert [tuple(f.shape[1:]) for f in branches(x)] == [
        (16, 16, 16), (32, 8, 8), (64, 4, 4), (128, 2, 2)]
    assert create_mti_backbone("hrnet_w18_small", hrnet_branches=False).channels == \
        create_backbone("hrnet_w18_small").channels
    assert create_mti_backbone(TINY_BACKBONE).channels == create_backbone(TINY_BACKBONE).channels


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_model(tiny_mti(aux_tasks=["edges"])).eval()
    save_model(tmp_path / "m.safetensors", model)
    loaded = load_model(tmp_path / "m.safetensors")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert loaded.config == model.config
    assert all(torch.allclose(a[t], b[t]) for t in a)


# ------------------------------------------------------------------------------ edges

def test_semantic_edges_by_hand() -> None:
    seg = torch.tensor([[[0, 0, 1],
                         [0, 0, 1],
                         [-1, 2, 2]]])
    edges, valid = semantic_edges(seg)
    expected = torch.tensor([[[0, 1, 1],
                              [0, 1, 1],
                              [0, 1, 1]]], dtype=torch.float32)
    # (1,0)-(2,0): void neighbour -> no edge; (1,1)-(2,1): 0 vs 2 -> edge on both
    assert torch.equal(edges[:, 0], expected)
    assert torch.equal(valid[:, 0], seg != -1)


def test_edge_loss_is_weighted_bce_over_valid_pixels() -> None:
    seg = torch.tensor([[[0, 1], [-1, 1]]])  # edges at (0,0), (0,1); (1,1) not; (1,0) void
    logits = torch.tensor([[[[0.5, -1.0], [3.0, 2.0]]]])
    loss = edge_loss(logits, seg, pos_weight=0.9)

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + np.exp(-x))
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    expected = (0.9 * bce(0.5, 1) + 0.9 * bce(-1.0, 1) + 0.1 * bce(2.0, 0)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert edge_loss(logits, torch.full_like(seg, -1)) is None
    assert edge_loss(logits, seg, labelled=torch.tensor([False])) is None


def _batch(n: int = 2, has_segmentation: bool = True) -> dict:
    torch.manual_seed(1)
    return {"image": torch.randn(n, 3, 32, 48),
            "segmentation": torch.randint(-1, 5, (n, 32, 48)),
            "depth": torch.rand(n, 1, 32, 48) * 4,
            "normals": torch.nn.functional.normalize(torch.randn(n, 3, 32, 48), dim=1),
            "has_segmentation": torch.full((n,), has_segmentation),
            "has_depth": torch.ones(n, dtype=torch.bool),
            "has_normals": torch.ones(n, dtype=torch.bool)}


def test_deep_supervision_losses_sum_the_scales() -> None:
    from training.losses import compute_losses, normals_loss

    model = build_model(tiny_mti(tasks=["segmentation", "depth"], aux_tasks=["normals", "edges"]))
    batch = _batch()
    _, aux = model(batch["image"], return_aux=True)
    per_task, extra = deep_supervision_losses(aux, batch, model.tasks, model.aux_tasks,
                                              compute_losses)
    assert set(per_task) == {"segmentation", "depth"}
    for task in per_task:
        by_hand = sum(compute_losses(s, batch, [task])[task] for s in aux)
        assert torch.allclose(per_task[task], by_hand)
    by_hand = sum(normals_loss(s["normals"], batch["normals"])
                  + edge_loss(s[EDGES], batch["segmentation"]) for s in aux)
    assert torch.allclose(extra, by_hand)
    (sum(per_task.values()) + extra).backward()
    assert model.decoder.heads[0][EDGES].predict.weight.grad is not None
    # without segmentation labels: no segmentation or edge terms
    unlabelled = _batch(has_segmentation=False)
    per_task, extra = deep_supervision_losses(aux, unlabelled, model.tasks, model.aux_tasks,
                                              compute_losses)
    assert set(per_task) == {"depth"}
    assert torch.allclose(extra, sum(normals_loss(s["normals"], unlabelled["normals"])
                                     for s in aux))


# ------------------------------------------------------------------------------ export

def test_onnx_export_parity(tmp_path: Path) -> None:
    import json

    from training.export import export_model

    model = build_model(tiny_mti(aux_tasks=["edges"]))
    out = export_model(model, tmp_path / "bundle", input_size=(32, 64), fp16=False)
    meta = json.loads((out / "meta.json").read_text())
    parity = meta["parity"]["fp32"]
    assert parity["segmentation_agreement"] >= 0.999
    assert parity["depth_max_abs"] < 1e-3 and parity["normals_max_abs"] < 1e-3
    assert meta["arch"] == "mtinet"


def test_teacher_onnx_export_with_two_inputs(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = build_model(tiny_mti("mti_teacher", neck="fpn", fpn_channels=8)).eval()

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image, extra):
            out = self.model(image, extra)
            return out["segmentation"], out["depth"]

    image, extra = torch.randn(1, 3, 32, 64), torch.rand(1, 1, 32, 64) * 5
    path = tmp_path / "teacher.onnx"
    wrapped = Wrapped().eval()
    with torch.no_grad():
        ref = wrapped(image, extra)
        torch.onnx.export(wrapped, (image, extra), str(path), input_names=["image", "extra"],
                          output_names=["segmentation", "depth"], opset_version=17,
                          dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image.numpy(), "extra": extra.numpy()})
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ configs

def test_published_teacher_config_builds_hrnet_w18_small_v2() -> None:
    """The shipped imbalanced-data teacher config: two HRNet-W18-small-v2 (raw branches; the
    MTI-Net paper's backbone), FFM, MTI."""
    cfg = yaml.safe_load((REPO / "config/train/nyuv2_imbalanced_mti_teacher.yaml").read_text())
    model = build_model(cfg["model"], load_weights=False).eval()
    assert model.config["arch"] == "mti_teacher" and model.backbone_names() == ["hrnet_w18_small_v2"] * 2
    assert model.encoder.out_channels == (18, 36, 72, 144)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), torch.rand(1, 1, 64, 64))
    assert out["segmentation"].shape == (1, model.num_classes, 64, 64)


@pytest.mark.parametrize("name", ["nyuv2_mtinet", "nyuv2_mtunet", "nyuv2_imbalanced_mti_teacher"])
def test_shipped_pipeline_configs_are_valid(name: str) -> None:
    """Each config parses; its shared model and every stage's own architecture resolve; every
    training stage's weighting can be built."""
    from mbmt_ros.models import resolve_model_config
    from training.config import load_config
    from training.weighting import make_weighting

    cfg = load_config(REPO / "config" / "train" / f"{name}.yaml")
    assert resolve_model_config(cfg.model)["arch"] in ("mtinet", "mtunet", "mti_teacher")
    common = {k: cfg.model[k] for k in ("tasks", "num_classes") if k in cfg.model}
    for spec in cfg.stages:
        if spec.model.get("arch") in ("mtinet", "mtunet", "mti_teacher"):
            own = cfg.model if spec.model["arch"] == cfg.model["arch"] else common
            resolve_model_config({**own, **spec.model})
        if spec.trains:
            make_weighting(spec.train["weighting"], ["segmentation", "depth"],
                           **spec.train["weighting_options"])
