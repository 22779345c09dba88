"""Task names, label conventions and class palettes shared by training, runtime and the node.

Kept free of torch so the runtime and the node can import it on a robot.
"""
from __future__ import annotations

__all__ = [
    "SEGMENTATION", "DEPTH", "NORMALS", "TASKS", "IGNORE_INDEX", "NO_PREDICTION",
    "IMAGENET_MEAN", "IMAGENET_STD", "UINT8_SCALE", "UINT8_SHIFT", "NYU13_CLASSES", "NYU13_PALETTE", "validate_tasks",
    "default_palette",
]

SEGMENTATION = "segmentation"
DEPTH = "depth"
NORMALS = "normals"
#: Every dense task, in the canonical order used for outputs, tables and losses.
TASKS: tuple[str, ...] = (SEGMENTATION, DEPTH, NORMALS)

#: Segmentation label for unlabelled / void pixels in datasets (MTAN convention).
IGNORE_INDEX = -1
#: Class id published by the node where no prediction is made (mono8 image).
NO_PREDICTION = 255

#: Input normalisation of every backbone (timm / ImageNet statistics), RGB order.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The normalisation applied to a uint8 RGB pixel, ``(x / 255 - mean) / std``, folded into
#: ``x * UINT8_SCALE + UINT8_SHIFT`` per channel: the one formula of the data loader
#: (training) and the exported graph (runtime), so both feed the network the same values.
UINT8_SCALE: tuple[float, ...] = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD)
UINT8_SHIFT: tuple[float, ...] = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD,
                                                               strict=True))

#: The 13 NYUv2 classes of Couprie et al. / MTAN (label id = index).
NYU13_CLASSES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "picture", "sofa", "table", "tv", "wall", "window",
)
#: One RGB colour per NYU13 class, for overlays, result grids and rviz.
NYU13_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255), (232, 88, 47), (0, 217, 0), (148, 0, 240), (222, 241, 23),
    (255, 205, 205), (0, 223, 228), (106, 135, 204), (116, 28, 41), (240, 35, 235),
    (0, 166, 156), (249, 139, 0), (225, 228, 194),
)


def validate_tasks(tasks: object) -> tuple[str, ...]:
    """Return ``tasks`` as a canonical-order tuple, or raise ValueError naming the bad entry."""
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise ValueError(f"tasks must be a non-empty list drawn from {list(TASKS)}, got {tasks!r}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks are {list(TASKS)}")
    return tuple(t for t in TASKS if t in tasks)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """NYU13's palette for up to 13 classes, then deterministic distinct colours."""
    palette = list(NYU13_PALETTE[:num_classes])
    i = len(palette)
    while len(palette) < num_classes:
        # golden-ratio hue walk gives well separated colours
        h = (i * 0.618033988749895) % 1.0
        r, g, b = _hsv_to_rgb(h, 0.75, 0.95)
        palette.append((int(r * 255), int(g * 255), int(b * 255)))
        i += 1
    return palette


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    k = [(n + h * 6) % 6 for n in (5, 3, 1)]
    r, g, b = (v - v * s * max(0.0, min(x, 4 - x, 1.0)) for x in k)
    return r, g, b
