"""The segment writer of the capture: one rosbag2 (mcap) folder, written where no reader
looks and moved into place only when complete.

A :class:`Segment` is written with the ``rosbags`` library in a hidden
``.<name>.<random>.partial`` folder of the capture folder; :meth:`Segment.close` finishes
the bag, fsyncs it and renames it into place under a free name (nothing is ever
overwritten). A killed node therefore leaves only complete, readable bags plus a hidden
partial folder that the next start removes. :func:`estimate_bytes` gives the (upper)
size estimate the disk budget is checked against before a frame is written. ROS-free (part
of ``mbmt_ros.ros.capture``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbmt_ros.ros.capture_topics import CaptureMessage

__all__ = ["Segment", "estimate_bytes", "folder_bytes"]

#: Conservative size estimates (bytes) of mcap/rosbag2 overhead, used for the budget until a
#: segment is closed and its real size is known (measured: ~6 KB per segment with three
#: topics, ~50 B per message).
_SEGMENT_OVERHEAD = 4096
_TOPIC_OVERHEAD = 2048
_MESSAGE_OVERHEAD = 96


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def estimate_bytes(messages: Sequence[tuple[CaptureMessage, bytes]],
                   segment: Segment | None = None) -> int:
    """Bytes ``segment`` (a new one when None) would take on disk with ``messages`` added
    (an upper estimate)."""
    topics = {m.topic for m, _ in messages}
    payload = 0
    if segment is not None:
        topics |= set(segment.topics)
        payload = segment.payload
    return (_SEGMENT_OVERHEAD + _TOPIC_OVERHEAD * len(topics) + payload
            + sum(len(d) + _MESSAGE_OVERHEAD for _, d in messages))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Segment:
    """One rosbag2 folder being written in a hidden partial folder of ``root``."""

    def __init__(self, root: Path, name: str, store: Any) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.root, self.name, self._store = root, name, store
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
        self._writer = Writer(self.tmp / name, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.frames = 0
        self.payload = 0
        self.opened = time.monotonic()

    @property
    def topics(self) -> list[str]:
        return list(self._connections)

    def write(self, messages: Sequence[tuple[CaptureMessage, bytes]]) -> None:
        """Add one frame: its messages, already serialised."""
        for msg, data in messages:
            conn = self._connections.get(msg.topic)
            if conn is None:
                conn = self._connections[msg.topic] = self._writer.add_connection(
                    msg.topic, msg.msgtype, typestore=self._store)
            self._writer.write(conn, msg.stamp_ns, data)
            self.payload += len(data) + _MESSAGE_OVERHEAD
        self.frames += 1

    def close(self) -> tuple[Path, int]:
        """Finish the bag, fsync it and rename it into the capture folder (a free name:
        nothing is ever overwritten); its final path and size."""
        self._writer.close()
        bag = self.tmp / self.name
        for f in bag.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(bag)
        final = self.root / self.name
        seq = 1
        while True:
            try:
                os.rename(bag, final)  # refuses a non-empty target; checked empty first
                break
            except OSError:
                if not final.exists():
                    raise
                final = self.root / f"{self.name}_{seq}"
                seq += 1
        shutil.rmtree(self.tmp, ignore_errors=True)
        _fsync_dir(self.root)
        return final, folder_bytes(final)

    def abort(self) -> None:
        """Drop the segment (a write failed): its partial folder is removed."""
        with contextlib.suppress(Exception):
            self._writer.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
