"""CVAT "Segmentation mask 1.1" archives: frames out for labelling, corrected masks back in.

The layout CVAT exports and imports (docs.cvat.ai, Dataset formats, "Segmentation Mask")::

    task.zip/
    ├── labelmap.txt                         # label:color_rgb:parts:actions, one line a label
    ├── ImageSets/Segmentation/default.txt   # frame names without extension
    ├── SegmentationClass/<name>.png         # class colour masks (colours from labelmap.txt)
    ├── SegmentationObject/<name>.png        # instance masks
    └── JPEGImages/<name>.png                # the images (what "save images" adds)

:func:`write_task` writes the frames' images with ``labelmap.txt`` holding the dataset's class
names and palette (``background`` = black = unlabelled) and pre-annotations as the masks, so a
labeller corrects predictions instead of painting from scratch. :func:`read_masks` reads a
CVAT export of the corrected task back as 8-bit label values (0 = background/unlabelled,
``k`` = class ``k-1``, as in label PNGs: a byte a pixel, so a thousand 720p frames stay under
1 GB; :func:`class_ids` makes one frame's class ids when it is written), checking the label
map against the dataset's classes and every pixel's colour; it only reads, so a bad archive
changes nothing. Writing the labels into a dataset is :mod:`training.labeling.apply`.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from mbmt_ros.io import atomic_path
from mbmt_ros.tasks import IGNORE_INDEX
from training.errors import DataError

__all__ = ["BACKGROUND", "LABELMAP", "IMAGESET", "CLASS_DIR", "OBJECT_DIR", "IMAGE_DIR",
           "TaskFrame", "labelmap_text", "cvat_labels", "parse_labelmap", "write_task",
           "read_masks", "class_ids", "voc_colormap"]

BACKGROUND = "background"
LABELMAP = "labelmap.txt"
IMAGESET = "ImageSets/Segmentation/default.txt"
CLASS_DIR = "SegmentationClass"
OBJECT_DIR = "SegmentationObject"
IMAGE_DIR = "JPEGImages"
_HEADER = "# label:color_rgb:parts:actions"


@dataclass(frozen=True)
class TaskFrame:
    """One frame of a task: its name, RGB image and pre-annotation (class ids, -1 = none)."""

    name: str
    rgb: np.ndarray
    segmentation: np.ndarray | None = None


def voc_colormap(n: int) -> list[tuple[int, int, int]]:
    """The Pascal VOC colour map (CVAT's instance colours): index 0 black, then bit-spread."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def labelmap_text(class_names: Sequence[str], palette: Sequence[Sequence[int]]) -> str:
    """``labelmap.txt``: the header, ``background:0,0,0::``, then one line per class."""
    if len(palette) < len(class_names):
        raise DataError(f"{len(class_names)} classes but {len(palette)} palette colours")
    lines = [_HEADER, f"{BACKGROUND}:0,0,0::"]
    for name, rgb in zip(class_names, palette[:len(class_names)], strict=True):
        if ":" in name:
            raise DataError(f"class name {name!r} contains ':', which labelmap.txt cannot hold")
        lines.append(f"{name}:{','.join(str(int(v)) for v in rgb[:3])}::")
    return "\n".join(lines) + "\n"


def cvat_labels(class_names: Sequence[str], palette: Sequence[Sequence[int]]) -> list[dict]:
    """The task's labels for CVAT's "Raw" label editor (name, colour, no attributes), so the
    task gets the names and colours of ``labelmap.txt`` without typing them."""
    return [{"name": n, "color": "#{:02x}{:02x}{:02x}".format(*(int(v) for v in c[:3])),
             "type": "any", "attributes": []}
            for n, c in zip(class_names, palette[:len(class_names)], strict=True)]


def parse_labelmap(text: str, where: str) -> dict[str, tuple[int, int, int]]:
    """label name -> colour of a ``labelmap.txt`` (in file order)."""
    out: dict[str, tuple[int, int, int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        colour = rest.split(":", 1)[0]
        try:
            rgb = tuple(int(v) for v in colour.split(","))
        except ValueError:
            rgb = ()
        if not name or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DataError(f"{where}:{n}: {line!r} is not a 'name:r,g,b::' label line")
        if name in out:
            raise DataError(f"{where}:{n}: label {name!r} is listed twice")
        out[name] = rgb  # type: ignore[assignment]
    if not out:
        raise DataError(f"{where} lists no labels")
    colours = list(out.values())
    clash = [n for n, c in out.items() if colours.count(c) > 1]
    if clash:
        raise DataError(f"{where}: labels {clash} share a colour, so their masks cannot be told "
                        "apart; give each label its own colour in CVAT")
    return out


def _png(array: np.ndarray) -> bytes:
    img = Image.fromarray(np.ascontiguousarray(array))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _indexed(values: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> bytes:
    """A palette PNG (mode P, as CVAT writes its masks) of 8-bit ``values``."""
    img = Image.frombytes("P", (values.shape[1], values.shape[0]),
                          np.ascontiguousarray(values.astype(np.uint8)).tobytes())
    flat = [v for rgb in palette for v in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_task(out: str | Path, frames: Sequence[TaskFrame], class_names: Sequence[str],
               palette: Sequence[Sequence[int]]) -> Path:
    """Write a CVAT task archive (layout in the module docstring) atomically to ``out``.

    Class masks are palette PNGs whose index is ``class id + 1`` (0 = background) and whose
    colours are those of ``labelmap.txt``; object masks give each class present one
    instance, coloured with the VOC colour map.
    """
    if len(class_names) >= 255:
        raise DataError(f"{len(class_names)} classes do not fit an 8-bit mask (at most 254)")
    names = [f.name for f in frames]
    if len(set(names)) != len(names):
        raise DataError("two frames of the task have the same name")
    colours = [(0, 0, 0), *[tuple(int(v) for v in c[:3]) for c in palette[:len(class_names)]]]
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(LABELMAP, labelmap_text(class_names, palette))
        zf.writestr(IMAGESET, "".join(f"{n}\n" for n in names))
        for frame in frames:
            h, w = frame.rgb.shape[:2]
            seg = (frame.segmentation if frame.segmentation is not None
                   else np.full((h, w), IGNORE_INDEX))
            if seg.shape != (h, w):
                raise DataError(f"frame {frame.name}: pre-annotation is {seg.shape} but the "
                                f"image is {h}x{w}")
            values = np.where((seg < 0) | (seg >= len(class_names)), 0, seg + 1)  # void
            present = [v for v in np.unique(values) if v > 0]
            instances = np.zeros_like(values)
            for k, v in enumerate(present, 1):
                instances[values == v] = k
            zf.writestr(f"{IMAGE_DIR}/{frame.name}.png", _png(frame.rgb))
            zf.writestr(f"{CLASS_DIR}/{frame.name}.png", _indexed(values, colours))
            zf.writestr(f"{OBJECT_DIR}/{frame.name}.png",
                        _indexed(instances, voc_colormap(256)))
    return Path(out)


def _task_folder(name: str) -> str | None:
    """The folder ('' or 'a/b/') whose task file ``name`` is (a class mask or the image set),
    or None for another file."""
    if name == IMAGESET or name.endswith(f"/{IMAGESET}"):
        return name[:-len(IMAGESET)]
    parts = PurePosixPath(name).parts
    if len(parts) >= 2 and parts[-2] == CLASS_DIR:
        return "".join(f"{p}/" for p in parts[:-2])
    return None


def _members(zf: zipfile.ZipFile, where: str) -> tuple[str, dict[str, str]]:
    """The folder prefix the archive's files sit under ('' or 'task/': the folder of the
    ``labelmap.txt`` beside the masks) and its file names."""
    files = [n for n in zf.namelist() if not n.endswith("/")]
    maps = [n[:-len(LABELMAP)] for n in files if PurePosixPath(n).name == LABELMAP]
    if not maps:
        raise DataError(f"{where}: no {LABELMAP}; export the task from CVAT as "
                        "'Segmentation mask 1.1'")
    tasks = {f for f in map(_task_folder, files) if f is not None}
    beside = [m for m in maps if m in tasks]
    if not beside and tasks:
        shown = ", ".join(f"'{m}{LABELMAP}'" for m in sorted(maps))
        folders = ", ".join(f"'{t or '(top)'}'" for t in sorted(tasks))
        raise DataError(f"{where}: {LABELMAP} is misplaced: found {shown}, but the masks "
                        f"({CLASS_DIR}/, {IMAGESET}) are under {folders}; CVAT's layout keeps "
                        f"{LABELMAP} in the same folder as {CLASS_DIR}/ - move it there, or "
                        "export the task from CVAT again and import that archive unchanged")
    prefix = min(beside or maps, key=len)
    return prefix, {n[len(prefix):]: n for n in files if n.startswith(prefix)}


def _decode_mask(data: bytes, labelmap: dict[str, tuple[int, int, int]],
                 to_class: dict[str, int], where: str) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:
        raise DataError(f"{where}: not a readable PNG ({exc})") from exc
    names = list(labelmap)
    lut = np.array([to_class[n] + 1 for n in names], dtype=np.uint8)  # label values
    if img.mode in ("L", "I", "I;16"):  # one channel: the index of the label in labelmap.txt
        values = np.asarray(img)
        if values.max(initial=0) >= len(names):
            raise DataError(f"{where}: value {int(values.max())} but {LABELMAP} has "
                            f"{len(names)} labels")
        return lut[values]
    rgb = np.asarray(img.convert("RGB")).astype(np.int32)  # this frame only
    key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal = np.array(list(labelmap.values()), dtype=np.int32)
    pal_key = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pal_key)
    pos = np.clip(np.searchsorted(pal_key[order], key), 0, len(pal_key) - 1)
    ok = pal_key[order][pos] == key
    if not ok.all():
        bad = tuple(rgb[~ok][0].tolist())
        raise DataError(f"{where}: colour {bad} at {int((~ok).sum())} pixels is not in "
                        f"{LABELMAP}; repaint them with a label of the task")
    return lut[order[pos]]


def class_ids(values: np.ndarray) -> np.ndarray:
    """Class ids (int16, -1 = void) of a mask of label values (uint8, 0 = void)."""
    return values.astype(np.int16) - 1


def read_masks(archive: str | Path, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Frame name -> label values (uint8 (H, W): 0 = background/unlabelled, ``k`` = class
    ``k-1``; :func:`class_ids` converts) of a CVAT export.

    The label map must name exactly the dataset's classes (plus ``background``, or a label
    called ``void`` / ``unlabeled`` with colour black); every listed frame needs a class mask
    and every pixel a colour of the label map. Anything else is a DataError.
    """
    archive = Path(archive)
    where = str(archive)
    if len(class_names) > 254:
        raise DataError(f"{len(class_names)} classes do not fit an 8-bit mask (at most 254)")
    if not archive.is_file():
        raise DataError(f"{where} does not exist")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{where}: not a zip archive ({exc}); export the task from CVAT as "
                        "'Segmentation mask 1.1'") from exc
    with zf:
        prefix, files = _members(zf, where)
        labelmap = parse_labelmap(zf.read(files[LABELMAP]).decode("utf-8", "replace"),
                                  f"{where}:{prefix}{LABELMAP}")
        to_class = _match_classes(labelmap, class_names, where)
        if IMAGESET in files:
            listed = [n.strip() for n in zf.read(files[IMAGESET]).decode("utf-8").splitlines()
                      if n.strip()]
        else:  # tolerate archives without the image set: every class mask is a frame
            listed = sorted(PurePosixPath(n).stem for n in files
                            if n.startswith(f"{CLASS_DIR}/") and n.endswith(".png"))
        if not listed:
            raise DataError(f"{where}: the task has no frames: no {IMAGESET} and no "
                            f"{CLASS_DIR}/*.png beside {prefix}{LABELMAP}; export the task "
                            "from CVAT as 'Segmentation mask 1.1'")
        missing = [n for n in listed if f"{CLASS_DIR}/{n}.png" not in files]
        if missing:
            raise DataError(f"{where}: frames {', '.join(missing[:5])} have no mask in "
                            f"{CLASS_DIR}/ ({len(missing)} of {len(listed)}); were they left "
                            "unlabelled in CVAT?")
        return {n: _decode_mask(zf.read(files[f"{CLASS_DIR}/{n}.png"]), labelmap, to_class,
                                f"{where}:{CLASS_DIR}/{n}.png") for n in listed}


_VOID_NAMES = (BACKGROUND, "void", "unlabeled", "unlabelled")


def _match_classes(labelmap: dict[str, tuple[int, int, int]], class_names: Sequence[str],
                   where: str) -> dict[str, int]:
    """label name -> class id (-1 for the background label); a mismatch is a DataError."""
    ids = {n: i for i, n in enumerate(class_names)}
    void = [n for n in labelmap if n.lower() in _VOID_NAMES and n not in ids]
    unknown = [n for n in labelmap if n not in ids and n not in void]
    absent = [n for n in class_names if n not in labelmap]
    if unknown or absent:
        parts = []
        if unknown:
            parts.append(f"labels {unknown} are not classes of the dataset")
        if absent:
            parts.append(f"classes {absent} are missing from it")
        raise DataError(f"{where}: {LABELMAP} does not match the dataset's classes: "
                        + "; ".join(parts) + f" (dataset classes: {list(class_names)})")
    return {n: ids.get(n, IGNORE_INDEX) for n in labelmap}
