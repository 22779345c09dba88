"""Helpers of the runtime tests: the tiny model config, checkpoints, the independent PyTorch
reference and image-like test frames."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Tiny MBMT-Net: two timm ``test_efficientnet`` backbones (~0.1 M params each), narrow decoder.
TINY_MBMT: dict[str, Any] = {
    "arch": "mbmt", "backbones": ["test_efficientnet", "test_efficientnet"],
    "freeze_backbones": False, "fpn_channels": 16, "head_channels": 8,
    "task_hidden_channels": 16, "num_classes": 5,
}
#: Bundle input size (height, width): not square, so a swapped H/W shows up.
BUNDLE_SIZE = (64, 96)


def make_checkpoint(folder: Path, cfg: dict[str, Any], seed: int = 0,
                    metadata: dict[str, Any] | None = None) -> Path:
    import torch

    from mbmt_ros.models import build_model, save_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    return save_model(folder / "model.safetensors", model, metadata or {"data": "unit-test"})


def reference_outputs(model: Any, image: np.ndarray) -> dict[str, np.ndarray]:
    """The PyTorch model's own outputs for a uint8 (H, W, 3) image, in the predictor contract -
    computed independently of the bundle graph (own normalisation, argmax, softmax)."""
    import torch

    from mbmt_ros.tasks import IMAGENET_MEAN, IMAGENET_STD

    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1)
    with torch.no_grad():
        out = model(x)
    ref: dict[str, np.ndarray] = {}
    if "segmentation" in out:
        probs = torch.softmax(out["segmentation"][0], dim=0)
        ref["segmentation"] = probs.argmax(0).numpy().astype(np.int32)
        ref["segmentation_confidence"] = probs.max(0).values.numpy()
    if "depth" in out:
        ref["depth"] = out["depth"][0, 0].clamp(min=0).numpy()  # contract: never negative
    if "normals" in out:
        ref["normals"] = out["normals"][0].permute(1, 2, 0).numpy()
    return ref


def camera_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, image-like uint8 RGB frame (random low-frequency colour field + noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.integers(-8, 9, smooth.shape)
    return np.clip(smooth.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def break_graph(bundle: Path, factor: float = -3.0) -> str:
    """Perturb the weight of the last convolution of ``bundle``'s model.onnx (a task head;
    scaled by ``factor``) and re-stamp its size and SHA-256 in meta.json, so the checksum
    check passes and only the reference check can tell; returns the initializer's name."""
    import json

    import onnx
    from onnx import numpy_helper

    from mbmt_ros.runtime.bundle import sha256_file

    path = bundle / "model.onnx"
    model = onnx.load(str(path))
    last_conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    target = next(t for t in model.graph.initializer if t.name == last_conv.input[1])
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * factor, target.name))
    onnx.save(model, str(path))
    meta = json.loads((bundle / "meta.json").read_text())
    meta["files"]["model.onnx"] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (bundle / "meta.json").write_text(json.dumps(meta))
    return target.name


def drop_reference(bundle: Path) -> None:
    """Make ``bundle`` look exported by an older mbmt_ros: no reference set."""
    import json

    meta = json.loads((bundle / "meta.json").read_text())
    del meta["files"]["reference.npz"]
    meta.pop("reference", None)
    (bundle / "meta.json").write_text(json.dumps(meta))
    (bundle / "reference.npz").unlink()
