"""MT-UNet: blocks, the model at odd input sizes, cross-task skips between the decoders,
ONNX export, and the paper's learned loss-variance-normalised weighting (Eq. 5)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mbmt_ros.errors import ModelConfigError, ModelInputError
from mbmt_ros.models import build_model, resolve_model_config
from mbmt_ros.models.mtunet_blocks import (
    AttentionDecoderBlock,
    Bottleneck,
    DenseEncoderBlock,
    SoftAttention,
)
from training.errors import ConfigError
from training.weighting import make_weighting
from training.weighting.mtunet import MtUnetWeighting

REPO = Path(__file__).resolve().parents[2]


def tiny_unet(**overrides):
    return {"arch": "mtunet", "base_channels": 4, "num_classes": 5, **overrides}


def _unreached(module: torch.nn.Module, prefix: str = "") -> list[str]:
    return [n for n, p in module.named_parameters(prefix=prefix)
            if p.requires_grad and p.grad is None]


# ------------------------------------------------------------------------------ blocks

def test_dense_encoder_block_connects_every_layer() -> None:
    block = DenseEncoderBlock(3, 4)
    x = torch.randn(2, 3, 8, 10)
    skip, dense = block(x)
    a = block.layer1(x)
    assert torch.allclose(skip, block.layer2(torch.cat([x, a], dim=1)))
    assert torch.allclose(dense, torch.cat([x, a, skip], dim=1))
    assert dense.shape[1] == block.dense_channels == 3 + 2 * 4
    (skip.sum() + dense.sum()).backward()
    assert not _unreached(block)


def test_bottleneck_upsamples_by_two() -> None:
    y = Bottleneck(6, 8, 8)(torch.randn(2, 6, 3, 5))
    assert y.shape == (2, 8, 6, 10)


def test_soft_attention_is_a_mask() -> None:
    mask = SoftAttention(4)(torch.randn(2, 4, 5, 5) * 10)
    assert mask.shape == (2, 4, 5, 5) and bool(((mask >= 0) & (mask <= 1)).all())


def test_attention_decoder_block_multiplies_the_mask() -> None:
    block = AttentionDecoderBlock(6, 4)
    a, b = torch.randn(2, 2, 6, 7), torch.randn(2, 4, 6, 7)
    features, up = block([a, b])
    first = block.layer1(torch.cat([a, b], dim=1))
    assert torch.allclose(features, block.attention(first) * block.layer2(first))
    assert up.shape == (2, 4, 12, 14)
    (features.sum() + up.sum()).backward()
    assert not _unreached(block)
    last = AttentionDecoderBlock(6, 4, up_channels=0)
    assert last([a, b])[1] is None and last.up is None
    assert AttentionDecoderBlock(6, 4, up_channels=2)([a, b])[1].shape == (2, 2, 12, 14)


# ------------------------------------------------------------------------------ model

@pytest.mark.parametrize("size", [(33, 47), (17, 20), (32, 64)])
def test_outputs_at_any_input_size(size) -> None:
    model = build_model(tiny_unet())
    h, w = size
    out = model(torch.randn(2, 3, h, w))
    assert out["segmentation"].shape == (2, 5, h, w)
    assert out["depth"].shape == (2, 1, h, w) and out["normals"].shape == (2, 3, h, w)
    assert torch.allclose(out["normals"].norm(dim=1), torch.ones(2, h, w), atol=1e-4)
    sum(v.mean() for v in out.values()).backward()
    assert not _unreached(model)


def test_rejects_bad_input() -> None:
    model = build_model(tiny_unet())
    with pytest.raises(ModelInputError):
        model(torch.randn(2, 1, 32, 32))


def _depth_loss_reach(cross_talk: bool) -> dict[str, bool]:
    model = build_model(tiny_unet(tasks=["segmentation", "depth"], cross_talk=cross_talk))
    model(torch.randn(2, 3, 32, 48))["depth"].square().mean().backward()

    def reached(module: torch.nn.Module) -> bool:
        grads = [p.grad for p in module.parameters()]
        return any(g is not None and bool(g.abs().sum() > 0) for g in grads)

    seg = model.decoders["segmentation"]
    return {"block1": reached(seg[0]), "block2": reached(seg[1]), "block3": reached(seg[2]),
            "block4": reached(seg[3]), "head": reached(model.heads["segmentation"]),
            "encoder": reached(model.encoder)}


def test_cross_task_skip_carries_depth_gradient_into_segmentation_blocks_1_and_2() -> None:
    reach = _depth_loss_reach(cross_talk=True)
    assert reach == {"block1": True, "block2": True, "block3": False, "block4": False,
                     "head": False, "encoder": True}


def test_without_cross_talk_the_decoders_are_independent() -> None:
    reach = _depth_loss_reach(cross_talk=False)
    assert reach == {"block1": False, "block2": False, "block3": False, "block4": False,
                     "head": False, "encoder": True}


def test_three_tasks_see_both_other_decoders() -> None:
    model = build_model(tiny_unet())
    b = 4
    # block 3 input: upsampled block 2 (2b) + encoder skip (2b) + two other tasks' block 2 (2 x 2b)
    assert model.decoders["depth"][2].layer1[0].in_channels == 2 * b + 2 * b + 2 * 2 * b
    # block 2: upsampled block 1 (4b) + encoder skip (4b); block 1: bottleneck (16b) + skip (8b)
    assert model.decoders["depth"][1].layer1[0].in_channels == 4 * b + 4 * b
    assert model.decoders["depth"][0].layer1[0].in_channels == 16 * b + 8 * b
    single = build_model(tiny_unet(tasks=["depth"]))
    assert not single.cross_talk


@pytest.mark.parametrize("bad", [{"base_channels": 0}, {"dropout": 1.0}, {"cross_talk": "on"},
                                 {"backbone": "resnet18"}])
def test_bad_configs_are_model_config_errors(bad) -> None:
    with pytest.raises(ModelConfigError):
        build_model(tiny_unet(**bad))


def test_published_config_resolves() -> None:
    cfg = yaml.safe_load((REPO / "config/train/nyuv2_mtunet.yaml").read_text())
    resolved = resolve_model_config(cfg["model"])
    assert resolved["arch"] == "mtunet" and resolved["base_channels"] == 64
    assert cfg["train"]["weighting"] == "mtunet"
    make_weighting("mtunet", resolved["tasks"], **cfg["train"]["weighting_options"])


# ------------------------------------------------------------------------------ export

def test_onnx_bundle_export_parity(tmp_path: Path) -> None:
    from training.export import export_model

    out = export_model(build_model(tiny_unet()), tmp_path / "bundle", input_size=(32, 64),
                       fp16=False)
    parity = json.loads((out / "meta.json").read_text())["parity"]["fp32"]
    assert parity["segmentation_agreement"] >= 0.999
    assert parity["depth_max_abs"] < 1e-3 and parity["normals_max_abs"] < 1e-3


def test_onnx_export_at_an_odd_size_pads_and_crops(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = build_model(tiny_unet(tasks=["depth", "normals"])).eval()

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image):
            out = self.model(image)
            return out["depth"], out["normals"]

    wrapped = Outputs().eval()
    image = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        ref = wrapped(image)
        torch.onnx.export(wrapped, (image,), str(tmp_path / "m.onnx"), input_names=["image"],
                          opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]
                               ).run(None, {"image": image.numpy()})
    for g, r in zip(got, ref, strict=True):
        assert g.shape == tuple(r.shape)
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ weighting

def _epoch(weighting: MtUnetWeighting, steps: list[dict[str, float]]) -> None:
    for step in steps:
        weighting({t: torch.tensor(float(v), requires_grad=True) for t, v in step.items()})
    weighting.epoch_end({})


def test_weighting_eq5_by_hand() -> None:
    w = make_weighting("mtunet", ["depth", "segmentation"], window=2)
    assert isinstance(w, MtUnetWeighting) and w.tasks == ("segmentation", "depth")
    assert w.weights() == pytest.approx({"segmentation": 0.5, "depth": 0.5})
    # epoch 0: variances seg var(1, 3) = 2, depth var(2, 2, 5) = 3 (unbiased)
    _epoch(w, [{"segmentation": 1, "depth": 2}, {"segmentation": 3, "depth": 2}, {"depth": 5}])
    assert w.weights() == pytest.approx({"segmentation": 0.5, "depth": 0.5})  # a = 1 so far
    # epoch 1: seg var(0, 4) = 8, depth var(1, 1) = 0 -> sigma(1) = mean over 2 epochs = (5, 1.5)
    _epoch(w, [{"segmentation": 0, "depth": 1}, {"segmentation": 4, "depth": 1}])
    # a = sigma(1) / sigma(0) = (5 / 2, 1.5 / 3)
    assert w.alphas.tolist() == pytest.approx([2.5, 0.5])
    assert w.weights() == pytest.approx({"segmentation": 2.5 / 3, "depth": 0.5 / 3})
    # epoch 2: seg var(1, 1, 1) = 0, depth var(2, 4) = 2 -> sigma(2) = (4, 1); a = (4/5, 1/1.5)
    _epoch(w, [{"segmentation": 1, "depth": 2}, {"segmentation": 1, "depth": 4},
               {"segmentation": 1}])
    assert w.alphas.tolist() == pytest.approx([0.8, 1 / 1.5])
    # learned W = (2, 1): weights W a / sum(W a)
    with torch.no_grad():
        w.log_weights.copy_(torch.log(torch.tensor([2.0, 1.0])))
    wa = np.array([2 * 0.8, 1 / 1.5])
    expected = wa / wa.sum()
    assert list(w.weights().values()) == pytest.approx(expected.tolist())
    losses = {"segmentation": torch.tensor(1.0), "depth": torch.tensor(2.0)}
    total = w(losses)
    mean = float(expected @ np.array([1.0, 2.0]))
    assert float(total.detach()) == pytest.approx(mean)
    # the weights learn with the losses held fixed, from the scale-free ratios
    # r = L / Lbar (Lbar: epoch 2's means, seg 1, depth 3): d total / d log W_k = W_k r_k - 1
    total.backward()
    assert w.log_weights.grad.tolist() == pytest.approx([2 * 1.0 - 1, 1 * (2 / 3) - 1])
    # a task missing from a step adds no term but keeps its share of the normalisation
    assert float(w({"depth": torch.tensor(2.0)})) == pytest.approx(expected[1] * 2)


def test_weighting_records_only_training_steps() -> None:
    w = MtUnetWeighting(["segmentation", "depth"])
    w.eval()
    w({"segmentation": torch.tensor(1.0), "depth": torch.tensor(1.0)})
    w.train()
    with torch.no_grad():
        w({"segmentation": torch.tensor(1.0), "depth": torch.tensor(1.0)})
    assert float(w.step_stats.abs().sum()) == 0.0
    w({"segmentation": torch.tensor(1.0), "depth": torch.tensor(3.0)})
    assert w.step_stats[:, 1].tolist() == [1.0, 3.0, 9.0]


def test_weighting_unknown_variance_keeps_alpha_one_and_state_round_trips() -> None:
    w = MtUnetWeighting(["segmentation", "depth"], window=1)
    _epoch(w, [{"segmentation": 1, "depth": 1}, {"segmentation": 2, "depth": 3}])
    _epoch(w, [{"segmentation": 1, "depth": 2}, {"segmentation": 3}])  # depth: one step only
    assert w.alphas.tolist() == pytest.approx([2.0 / 0.5, 1.0])
    other = MtUnetWeighting(["segmentation", "depth"], window=1)
    other.load_state_dict(w.state_dict())
    assert other.weights() == pytest.approx(w.weights())
    assert int(other.epochs_seen) == 2


@pytest.mark.parametrize("bad", [{"window": 0}, {"eps": -1.0}, {"lr": 0}, {"init_weight": 0},
                                 {"temperature": 2.0}])
def test_weighting_bad_options_are_config_errors(bad) -> None:
    with pytest.raises(ConfigError):
        make_weighting("mtunet", ["segmentation", "depth"], **bad)


def test_training_steps_with_the_learned_weighting() -> None:
    """A few Adam steps on a fixed batch: the loss falls and the weights W are learned."""
    torch.manual_seed(0)
    model = build_model(tiny_unet(tasks=["segmentation", "depth"], dropout=0.0))
    weighting = make_weighting("mtunet", model.tasks)
    optimiser = torch.optim.Adam([
        {"params": model.parameters(), "lr": 1e-2},
        {"params": weighting.parameters(), "lr": weighting.lr},
    ])
    image = torch.randn(2, 3, 32, 32)
    seg = torch.randint(0, 5, (2, 32, 32))
    depth = torch.rand(2, 1, 32, 32) * 3 + 0.5
    totals = []
    for _ in range(6):
        out = model(image)
        losses = {"segmentation": torch.nn.functional.cross_entropy(out["segmentation"], seg),
                  "depth": (out["depth"] - depth).abs().mean()}
        total = weighting(losses)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        totals.append(float(total))
    weighting.epoch_end({})
    assert all(math.isfinite(t) for t in totals) and totals[-1] < totals[0]
    assert not torch.allclose(weighting.log_weights.detach(), torch.zeros(2))
    assert sum(weighting.weights().values()) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ pipeline

PIPELINE = {
    "name": "other_archs", "seed": 0,
    "model": {"arch": "mtinet", "backbones": ["test_efficientnet"], "task_channels": 8,
              "head_channels": 8, "aux_tasks": ["edges"], "tasks": ["segmentation", "depth"],
              "num_classes": 13},
    "data": {"synth": {"count": 12, "size": [32, 64], "seed": 0, "val_fraction": 0.25}},
    "train": {"epochs": 1, "batch_size": 4, "lr": 1.0e-3, "weighting": "equal",
              "num_workers": 0},
    "stages": [
        {"name": "mtinet", "kind": "train-mt", "model": {"arch": "mtinet"}},
        {"name": "mtunet", "kind": "train-mt",
         "model": {"arch": "mtunet", "base_channels": 4},
         "train": {"epochs": 3, "weighting": "mtunet", "weighting_options": {"window": 1}}},
        {"name": "teacher", "kind": "train-teacher", "extra_modality": "depth",
         "model": {"arch": "mti_teacher", "backbone": "test_efficientnet", "task_channels": 8}},
        {"name": "evaluate", "kind": "evaluate"},
        {"name": "export", "kind": "export", "from": "mtunet"},
    ],
}


@pytest.mark.slow
def test_pipeline_trains_evaluates_and_exports_the_other_architectures(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = tmp_path / "other_archs.yaml"
    config.write_text(yaml.safe_dump(PIPELINE))
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mbmt-train"), "pipeline", "--config", str(config),
         "--run-dir", str(run)], capture_output=True, text=True, timeout=900, cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    from mbmt_ros.models import load_model

    for stage, arch in (("mtinet", "mtinet"), ("mtunet", "mtunet"), ("teacher", "mti_teacher")):
        assert (run / stage / "done.json").is_file()
        assert load_model(run / stage).config["arch"] == arch
    weights = json.loads((run / "mtunet" / "done.json").read_text())["weights"]
    assert sum(weights.values()) == pytest.approx(1.0)
    results = (run / "results.md").read_text()
    assert all(f"| {stage} |" in results for stage in ("mtinet", "mtunet", "teacher"))
    meta = json.loads((run / "export" / "bundle" / "meta.json").read_text())
    assert meta["arch"] == "mtunet" and meta["parity"]["fp32"]["segmentation_agreement"] >= 0.999
