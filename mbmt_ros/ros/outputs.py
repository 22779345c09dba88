"""Turn one prediction into the node's output messages (ROS-free apart from message types).

The node asks :func:`build_outputs` only for the topics that have subscribers, so colour
images and point clouds cost nothing when nobody looks. Every message carries the input
header and the input resolution.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from std_msgs.msg import Header

from mbmt_ros.imaging.colorize import colorize_depth, colorize_normals, colorize_segmentation
from mbmt_ros.ros.image_messages import numpy_to_image
from mbmt_ros.ros.pointcloud import Intrinsics, depth_to_points, points_to_msg
from mbmt_ros.tasks import DEPTH, NO_PREDICTION, NORMALS, SEGMENTATION
from mbmt_ros.topics import (  # the topic names live in one place (topics.py)
    DEPTH_TOPIC,
    NORMALS_COLOR,
    NORMALS_TOPIC,
    OUTPUT_TOPICS,
    POINTS,
    SEG,
    SEG_COLOR,
    TOPICS_BY_TASK,
)

__all__ = ["OUTPUT_TOPICS", "TOPICS_BY_TASK", "POINTS", "OutputOptions", "segmentation_ids",
           "build_outputs"]


@dataclass(frozen=True)
class OutputOptions:
    """How outputs look: palette LUT (256x3), overlay opacity, confidence floor, cloud options."""

    lut: np.ndarray
    overlay_alpha: float = 0.5
    min_confidence: float = 0.0
    pointcloud_stride: int = 2
    pointcloud_color: str = "segmentation"
    max_depth: float = 10.0


def segmentation_ids(prediction: dict[str, np.ndarray], min_confidence: float) -> np.ndarray:
    """Class ids as uint8; 255 (no prediction) where the confidence is below ``min_confidence``."""
    ids = prediction[SEGMENTATION].astype(np.uint8)
    confidence = prediction.get("segmentation_confidence")
    if min_confidence > 0.0 and confidence is not None:
        ids[confidence < min_confidence] = NO_PREDICTION
    return ids


def build_outputs(prediction: dict[str, np.ndarray], rgb: np.ndarray, header: Header,
                  wanted: Collection[str], options: OutputOptions,
                  intrinsics: Intrinsics | None = None) -> dict[str, object]:
    """Messages for the topics in ``wanted`` (``~/points`` only when ``intrinsics`` is known)."""
    wanted = set(wanted)
    out: dict[str, object] = {}
    ids = None
    if SEGMENTATION in prediction and (wanted & {SEG, SEG_COLOR} or POINTS in wanted):
        ids = segmentation_ids(prediction, options.min_confidence)
    if SEG in wanted and ids is not None:
        out[SEG] = numpy_to_image(ids, "mono8", header)
    if SEG_COLOR in wanted and ids is not None:
        colour = colorize_segmentation(ids, options.lut, rgb, options.overlay_alpha)
        out[SEG_COLOR] = numpy_to_image(colour, "rgb8", header)
    if DEPTH_TOPIC in wanted and DEPTH in prediction:
        out[DEPTH_TOPIC] = numpy_to_image(prediction[DEPTH].astype(np.float32, copy=False), "32FC1", header)
    if NORMALS in prediction:
        normals = prediction[NORMALS].astype(np.float32, copy=False)
        if NORMALS_TOPIC in wanted:
            out[NORMALS_TOPIC] = numpy_to_image(normals, "32FC3", header)
        if NORMALS_COLOR in wanted:
            out[NORMALS_COLOR] = numpy_to_image(colorize_normals(normals), "rgb8", header)
    if POINTS in wanted and intrinsics is not None and DEPTH in prediction:
        depth = prediction[DEPTH]
        if options.pointcloud_color == "segmentation" and ids is not None:  # sampled first
            step = options.pointcloud_stride
            colours = np.take(options.lut, ids[::step, ::step], axis=0)
        elif options.pointcloud_color == "depth":
            colours = colorize_depth(depth, options.max_depth)
        else:
            colours = np.asarray(rgb)
        points = depth_to_points(depth, intrinsics, colours, ids, options.pointcloud_stride,
                                 options.max_depth)
        out[POINTS] = points_to_msg(points, header)
    return out
