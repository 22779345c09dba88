"""Synthetic RGB-D indoor scenes: random rooms ray-cast with NumPy into RGB, exact depth,
camera-frame normals and NYU13 class ids (see :func:`render_frame`)."""
from __future__ import annotations

from training.data.synth.generate import write_synth_dataset
from training.data.synth.render import SynthFrame, render_frame, render_scene, synth_camera
from training.data.synth.scene import Scene, random_scene

__all__ = ["SynthFrame", "render_frame", "render_scene", "synth_camera", "Scene",
           "random_scene", "write_synth_dataset"]
