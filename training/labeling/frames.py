"""Frames of a dataset as the labelling loop names them, and frame-list files.

A frame is ``<split>/<index>`` (e.g. ``train/12``), the dataset file index of the NYUv2 layout.
Frame lists (written by ``mbmt-train select``, read by ``label-export``) are text files with
one frame per line; ``#`` starts a comment (``select`` writes the strategy and each frame's
score there). In an annotation tool a frame is named by its header stamp when the manifest
records one (``<stamp_ns>``, the name ``extract-bag --labels`` expects for its PNGs), else
``<split>_<index>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mbmt_ros.io import atomic_write_text
from training.data.layout import SPLITS
from training.data.manifest import Manifest, SampleEntry
from training.errors import DataError

__all__ = ["Frame", "read_frame_list", "write_frame_list", "frame_names",
           "resolve_frames", "tool_name"]


@dataclass(frozen=True, order=True)
class Frame:
    """One dataset frame: its split and file index."""

    split: str
    index: int

    def __str__(self) -> str:
        return f"{self.split}/{self.index}"

    @classmethod
    def parse(cls, text: str, where: str = "frame") -> Frame:
        split, sep, index = text.strip().partition("/")
        if not sep or split not in SPLITS or not index.isdigit():
            raise DataError(f"{where}: {text.strip()!r} is not a frame; write <split>/<index> "
                            f"with split one of {list(SPLITS)}, e.g. train/12")
        return cls(split, int(index))


def read_frame_list(path: str | Path) -> list[Frame]:
    """The frames of a list file, in file order; duplicates are an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"frame list {path} does not exist (write one with mbmt-train select)")
    frames: list[Frame] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text:
            frames.append(Frame.parse(text.split()[0], f"{path}:{n}"))
    if not frames:
        raise DataError(f"frame list {path} lists no frames")
    dupes = sorted({str(f) for f in frames if frames.count(f) > 1})
    if dupes:
        raise DataError(f"frame list {path} lists {', '.join(dupes[:5])} more than once")
    return frames


def write_frame_list(path: str | Path, frames: list[Frame], header: list[str] | None = None,
                     notes: list[str] | None = None) -> Path:
    """Write ``frames`` (one per line, with an optional ``# note`` each) atomically."""
    lines = [f"# {h}" for h in header or []]
    for i, frame in enumerate(frames):
        note = notes[i] if notes else ""
        lines.append(f"{frame}  # {note}" if note else str(frame))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def tool_name(entry: SampleEntry) -> str:
    """The name a frame has in an annotation tool (see the module docstring)."""
    return str(entry.stamp_ns) if entry.stamp_ns is not None else f"{entry.split}_{entry.index}"


def frame_names(manifest: Manifest) -> dict[str, Frame]:
    """Annotation-tool name -> frame for every sample of the manifest."""
    return {tool_name(e): Frame(e.split, e.index) for e in manifest.samples}


def resolve_frames(manifest: Manifest, frames: list[Frame], where: str) -> list[SampleEntry]:
    """The manifest entries of ``frames``; a frame the manifest lacks is an error."""
    entries = {(e.split, e.index): e for e in manifest.samples}
    missing = [str(f) for f in frames if (f.split, f.index) not in entries]
    if missing:
        raise DataError(f"{where}: frames {', '.join(missing[:5])} are not in the dataset's "
                        "manifest; was the list made for another dataset?")
    return [entries[(f.split, f.index)] for f in frames]
