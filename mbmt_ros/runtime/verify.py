"""Self-verifying bundles: the reference set that travels in a bundle, and the check of a
predictor against it.

``mbmt-train export`` stores ``reference.npz`` in the bundle (listed with its SHA-256 in
``meta.json["files"]``, so the bundle's checksum check covers it): a few image-like frames at
the bundle size (uint8 RGB, PNG-compressed) and the FP32 graph's outputs on them (ONNX
Runtime, CPU) at a regular grid of pixels (at most :data:`MAX_SAMPLES` per frame, which keeps
the file under about 400 kB even at 480x640 while every region of the image is checked).

:func:`verify_predictor` runs a predictor - any backend, precision and device - on the frames
and compares its outputs at the grid with the reference: segmentation agreement (share of
pixels with the reference class), depth relative error (``sum |d - d_ref| / sum d_ref``) and
normals angle error (mean angle between the unit vectors, degrees). Each precision has limits
(:data:`LIMITS`; INT8's derived from what ``mbmt-train quantize`` measured on the same frames,
see :func:`limits_for`). ``mbmt-engine verify`` and the node (at configure) use it. ROS-free,
no torch.
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mbmt_ros.io import atomic_path
from mbmt_ros.runtime.bundle import REFERENCE_FILE, Bundle
from mbmt_ros.tasks import DEPTH, NORMALS, SEGMENTATION

__all__ = ["REFERENCE_FILE", "MAX_SAMPLES", "Limits", "LIMITS", "VerifyResult", "ReferenceSet",
           "reference_frames", "sample_grid", "save_reference", "load_reference", "limits_for",
           "compare", "verify_predictor"]

_log = logging.getLogger(__name__)

#: Pixels per frame compared (a regular grid over the whole frame).
MAX_SAMPLES = 4096
_VERSION = 1


@dataclass(frozen=True)
class Limits:
    """The worst figures a precision may show against the FP32 reference."""

    min_segmentation_agreement: float  #: share of pixels, 0..1
    max_depth_rel_error: float  #: sum |d - d_ref| / sum d_ref
    max_normals_angle_deg: float  #: mean angle, degrees

    def as_dict(self) -> dict[str, float]:
        return {"min_segmentation_agreement": self.min_segmentation_agreement,
                "max_depth_rel_error": self.max_depth_rel_error,
                "max_normals_angle_deg": self.max_normals_angle_deg}


#: Default limits per precision. FP32 is tight (another FP32 backend differs by summation
#: order only; ties in the argmax flip a few pixels); FP16 / BF16 from their mantissa (11 /
#: 8 bits) on trained models (docs/deployment.md: BF16 99.66 % agreement, 0.46 % depth);
#: INT8 without a quantize-time measurement is the loosest (see :func:`limits_for`).
LIMITS: dict[str, Limits] = {
    "fp32": Limits(0.995, 0.001, 0.5),
    "fp16": Limits(0.98, 0.01, 2.0),
    "bf16": Limits(0.97, 0.02, 3.0),
    "int8": Limits(0.90, 0.10, 10.0),
}


@dataclass(frozen=True)
class ReferenceSet:
    """Frames (N, H, W, 3) uint8 at the bundle size, the grid (rows, cols) and the FP32
    outputs at the grid: segmentation (N, r, c), depth (N, r, c), normals (N, 3, r, c)."""

    frames: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    outputs: dict[str, np.ndarray]


@dataclass
class VerifyResult:
    """The reference check of one path; ``status``: passed, failed or skipped."""

    status: str
    backend: str = ""
    precision: str = ""
    device: str = ""
    figures: dict[str, float] = field(default_factory=dict)
    limits: Limits | None = None
    failures: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def summary(self) -> str:
        """One line for logs and ``/diagnostics``: the figures, or why it failed / skipped."""
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        figures = ", ".join(_show(k, v) for k, v in self.figures.items())
        if self.status == "failed":
            return f"FAILED: {'; '.join(self.failures)} (figures: {figures})"
        return f"passed ({self.precision} limits): {figures}"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "backend": self.backend, "precision": self.precision,
                "device": self.device, "figures": self.figures,
                "limits": self.limits.as_dict() if self.limits else None,
                "failures": self.failures, "reason": self.reason}


def _show(name: str, value: float) -> str:
    if name == "segmentation_agreement":
        return f"segmentation agreement {100 * value:.2f} %"
    if name == "depth_rel_error":
        return f"depth relative error {100 * value:.3f} %"
    return f"normals angle error {value:.3f} deg"


def reference_frames(height: int, width: int, count: int = 3, seed: int = 0) -> np.ndarray:
    """Deterministic image-like uint8 RGB frames: smooth colour fields with flat-coloured
    rectangles and discs (edges, like a room), noise-free so they compress well as PNG."""
    rng = np.random.default_rng(seed)
    frames = np.empty((count, height, width, 3), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        frame = np.array(Image.fromarray(coarse).resize((width, height),
                                                        Image.Resampling.BICUBIC))
        frame = frame // 4 * 4  # gentle banding: half the PNG size, still smooth
        for _ in range(4):
            colour = rng.integers(0, 256, 3, dtype=np.uint8)
            y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
            if rng.random() < 0.5:
                frame[y0:y0 + height // 3, x0:x0 + width // 3] = colour
            else:
                radius = min(height, width) // 6
                frame[(yy - y0) ** 2 + (xx - x0) ** 2 < radius ** 2] = colour
        frames[i] = frame
    return frames


def sample_grid(height: int, width: int, max_samples: int = MAX_SAMPLES
                ) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a regular grid of at most ``max_samples`` pixels."""
    stride = max(1, math.ceil(math.sqrt(height * width / max_samples)))
    return (np.arange(stride // 2, height, stride, dtype=np.int32),
            np.arange(stride // 2, width, stride, dtype=np.int32))


def _at_grid(outputs: dict[str, np.ndarray], rows: np.ndarray, cols: np.ndarray,
             channels_last: bool) -> dict[str, np.ndarray]:
    """Graph outputs (normals (N, 3, H, W), or (N, H, W, 3) with ``channels_last``) at the grid."""
    picked: dict[str, np.ndarray] = {}
    index = np.ix_(rows, cols)
    if SEGMENTATION in outputs:
        picked[SEGMENTATION] = np.stack([o[index] for o in outputs[SEGMENTATION]]).astype(
            np.int32)
    if DEPTH in outputs:
        picked[DEPTH] = np.stack([o[index] for o in outputs[DEPTH]]).astype(np.float32)
    if NORMALS in outputs:
        normals = outputs[NORMALS]
        if channels_last:
            normals = np.moveaxis(normals, -1, 1)
        picked[NORMALS] = np.stack([n[(slice(None), *index)] for n in normals]).astype(
            np.float32)
    return picked


def save_reference(path: str | Path, frames: np.ndarray, outputs: dict[str, np.ndarray]) -> Path:
    """Write ``reference.npz`` (atomically): ``frames`` (N, H, W, 3) uint8 and the FP32
    graph's raw ``outputs`` on them (segmentation (N, H, W), depth (N, H, W), normals
    (N, 3, H, W); confidence is not stored)."""
    path = Path(path)
    height, width = frames.shape[1:3]
    rows, cols = sample_grid(height, width)
    blobs = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG", optimize=True)
        blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    picked = _at_grid(outputs, rows, cols, channels_last=False)
    if SEGMENTATION in picked and 0 <= picked[SEGMENTATION].min() \
            and picked[SEGMENTATION].max() < 256:
        picked[SEGMENTATION] = picked[SEGMENTATION].astype(np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, version=np.int32(_VERSION), frames_png=np.concatenate(blobs),
                            frames_png_offsets=offsets, shape=np.array(frames.shape[1:3]),
                            rows=rows, cols=cols, **picked)
    return path


def load_reference(bundle: Bundle) -> ReferenceSet | None:
    """The bundle's reference set, ``None`` when it has none (exported before mbmt_ros had
    them). The file's checksum is part of the bundle's (``Bundle.verify``)."""
    path = bundle.reference_path
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as data:
        blob, offsets = data["frames_png"], data["frames_png_offsets"]
        frames = np.stack([np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB"))
                           for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
        outputs = {k: data[k] for k in (SEGMENTATION, DEPTH, NORMALS) if k in data.files}
        if SEGMENTATION in outputs:
            outputs[SEGMENTATION] = outputs[SEGMENTATION].astype(np.int32)
        return ReferenceSet(frames, data["rows"], data["cols"], outputs)


def limits_for(bundle: Bundle, precision: str) -> Limits:
    """The limits of ``precision``. INT8: derived from the quantize-time figures on this
    reference set (``meta["quantization"]["int8"]["reference"]``, per backend) where the
    bundle has them - the worst backend's disagreement doubled plus 2 points, its depth error
    doubled plus 1 %, its normals error doubled plus 2 degrees (the gate accepted those
    figures against the ground truth; :data:`LIMITS` without a measurement); this catches a robot whose INT8 path computes differently (e.g. overflow on
    CPUs without VNNI) while the gate's own scatter passes."""
    default = LIMITS.get(precision, LIMITS["fp32"])
    if precision != "int8":
        return default
    measured = (((bundle.meta.get("quantization") or {}).get("int8") or {})
                .get("reference") or {})
    figures = [f for f in measured.values() if isinstance(f, dict)]
    if not figures:
        return default
    worst_seg = min((f.get("segmentation_agreement", 1.0) for f in figures), default=1.0)
    worst_depth = max((f.get("depth_rel_error", 0.0) for f in figures), default=0.0)
    worst_normals = max((f.get("normals_angle_deg", 0.0) for f in figures), default=0.0)
    return Limits(min_segmentation_agreement=max(0.0, 1.0 - (2 * (1.0 - worst_seg) + 0.02)),
                  max_depth_rel_error=2 * worst_depth + 0.01,
                  max_normals_angle_deg=2 * worst_normals + 2.0)


def compare(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """The three figures of ``got`` against ``ref`` (both at the grid, same layout)."""
    figures: dict[str, float] = {}
    if SEGMENTATION in ref and SEGMENTATION in got:
        figures["segmentation_agreement"] = float(np.mean(got[SEGMENTATION]
                                                          == ref[SEGMENTATION]))
    if DEPTH in ref and DEPTH in got:
        diff = np.abs(got[DEPTH].astype(np.float64) - ref[DEPTH])
        total = float(np.sum(np.abs(ref[DEPTH].astype(np.float64))))
        figures["depth_rel_error"] = float(np.sum(diff) / total) if total > 0 else float(
            np.max(diff, initial=0.0))
    if NORMALS in ref and NORMALS in got:
        a, b = got[NORMALS].astype(np.float64), ref[NORMALS].astype(np.float64)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        valid = nb > 0.5
        cos = np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)
        angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        figures["normals_angle_deg"] = float(np.mean(angles[valid])) if valid.any() else 0.0
    return figures


def _failures(figures: dict[str, float], limits: Limits, precision: str) -> list[str]:
    failures = []
    seg = figures.get("segmentation_agreement")
    if seg is not None and not seg >= limits.min_segmentation_agreement:
        failures.append(f"segmentation agreement {100 * seg:.2f} % < "
                        f"{100 * limits.min_segmentation_agreement:.2f} % ({precision} limit)")
    depth = figures.get("depth_rel_error")
    if depth is not None and not depth <= limits.max_depth_rel_error:
        failures.append(f"depth relative error {100 * depth:.3f} % > "
                        f"{100 * limits.max_depth_rel_error:.3f} % ({precision} limit)")
    normals = figures.get("normals_angle_deg")
    if normals is not None and not normals <= limits.max_normals_angle_deg:
        failures.append(f"normals angle error {normals:.3f} deg > "
                        f"{limits.max_normals_angle_deg:.3f} deg ({precision} limit)")
    return failures


def run_reference(predictor: Any, reference: ReferenceSet) -> dict[str, np.ndarray]:
    """The predictor's outputs on the reference frames, at the grid."""
    results = predictor.predict_batch(reference.frames)
    stacked = {name: np.stack([r[name] for r in results]) for name in results[0]}
    return _at_grid(stacked, reference.rows, reference.cols, channels_last=True)


def verify_predictor(predictor: Any, bundle: Bundle | None = None) -> VerifyResult:
    """Check ``predictor`` (what it really runs: ``.precision`` picks the limits) against
    the bundle's reference set; ``skipped`` (with the reason) for a bundle without one."""
    bundle = bundle or predictor.bundle
    who = {"backend": str(predictor.backend), "precision": str(predictor.precision),
           "device": str(predictor.device)}
    reference = load_reference(bundle)
    if reference is None:
        return VerifyResult("skipped", reason=f"{bundle.path} has no reference set "
                            f"({REFERENCE_FILE}; exported by an older mbmt_ros - re-export it "
                            f"with `mbmt-train export` to verify on the robot)", **who)
    limits = limits_for(bundle, who["precision"])
    figures = compare(run_reference(predictor, reference), reference.outputs)
    failures = _failures(figures, limits, who["precision"])
    return VerifyResult("failed" if failures else "passed", figures=figures, limits=limits,
                        failures=failures, **who)
