"""rosbag2 helpers of the demo, all with the ``rosbags`` library (no ROS installation needed).

- :func:`write_replay_bag`: the recording's frames of one split (the camera image and its
  CameraInfo), copied byte for byte from the synthetic recording, so that ``mbmt-replay``
  publishes exactly the frames that are scored;
- :func:`write_bag`: a recording of already serialised (CDR) messages - how the output
  recorder stores what the perception node published;
- :func:`bag_summary`: topics, types and message counts of a recording.

Every bag is written into a temporary folder beside the destination and renamed into place
when complete, so a crash never leaves a truncated recording at the destination path.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from training.errors import DataError

__all__ = ["IMAGE_TOPIC", "INFO_TOPIC", "RawMessage", "write_bag", "write_replay_bag",
           "bag_summary", "read_messages"]

#: topics of the synthetic recording (``mbmt-train synth``) replayed by the demo
IMAGE_TOPIC = "/camera/color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"

#: ``(topic, msgtype, log_time_ns, cdr_bytes)``
RawMessage = tuple[str, str, int, bytes]


def _typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


@contextmanager
def _bag_destination(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary bag path beside ``path``; renamed to ``path`` on success
    (replacing an older recording only then)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        tmp = holder / "bag"
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def write_bag(path: str | Path, messages: Iterable[RawMessage], storage: str = "mcap") -> Path:
    """Write serialised messages to a new rosbag2 at ``path`` (atomically); returns ``path``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    store = _typestore()
    with _bag_destination(path) as tmp:
        writer = Writer(tmp, version=9, storage_plugin=plugin)
        writer.open()
        try:
            connections: dict[tuple[str, str], Any] = {}
            for topic, msgtype, log_time, data in messages:
                conn = connections.get((topic, msgtype))
                if conn is None:
                    conn = writer.add_connection(topic, msgtype, typestore=store)
                    connections[(topic, msgtype)] = conn
                writer.write(conn, int(log_time), data)
        finally:
            writer.close()
    return path


def read_messages(bag: str | Path, keep: Callable[[str, str], bool] | None = None
                  ) -> Iterator[tuple[str, str, int, bytes, Any]]:
    """Yield ``(topic, msgtype, log_time, cdr, message)`` of ``bag`` in time order, for the
    connections ``keep(topic, msgtype)`` accepts (all by default); a DataError names the bag
    if it cannot be read."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    if not bag.exists():
        raise DataError(f"bag {bag} does not exist")
    try:
        with AnyReader([bag], default_typestore=_typestore()) as reader:
            conns = [c for c in reader.connections if keep is None or keep(c.topic, c.msgtype)]
            for conn, log_time, raw in reader.messages(connections=conns):
                yield conn.topic, conn.msgtype, int(log_time), bytes(raw), \
                    reader.deserialize(raw, conn.msgtype)
    except DataError:
        raise
    except Exception as exc:  # rosbags raises its own error types (and struct errors)
        raise DataError(f"cannot read bag {bag}: {exc}; re-create it") from exc


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def write_replay_bag(source: str | Path, out: str | Path, stamps: Iterable[int],
                     topics: tuple[str, ...] = (IMAGE_TOPIC, INFO_TOPIC),
                     lead_in_s: float = 1.0) -> int:
    """Copy the messages of ``topics`` whose header stamp is in ``stamps`` from ``source`` to a
    new bag ``out``; returns the number of image frames copied (a DataError if some are
    missing, naming them).

    With ``lead_in_s`` > 0 the first copied CameraInfo (``topics[1]``) is also written that
    many seconds before the first frame: ``mbmt-replay --wait-for-subscribers`` then waits
    until a subscriber of the CameraInfo topic (the demo's recorder) is matched too, and the
    pause lets every subscriber match before the first image is published.
    """
    wanted = set(int(s) for s in stamps)
    found: set[int] = set()
    kept: list[RawMessage] = []
    for topic, msgtype, log_time, data, msg in read_messages(source, lambda t, _m: t in topics):
        stamp = _stamp_ns(msg)
        if stamp in wanted:
            kept.append((topic, msgtype, log_time, data))
            if topic == topics[0]:
                found.add(stamp)
    missing = sorted(wanted - found)
    if missing:
        raise DataError(f"bag {source} has no {topics[0]} frame with stamp(s) {missing[:5]} "
                        f"({len(missing)} missing); re-generate the dataset")
    infos = [m for m in kept if len(topics) > 1 and m[0] == topics[1]]
    if lead_in_s > 0 and infos and kept:
        first = min(m[2] for m in kept)
        kept.insert(0, (infos[0][0], infos[0][1], first - int(lead_in_s * 1e9), infos[0][3]))
    write_bag(out, kept)
    return len(found)


def bag_summary(bag: str | Path) -> dict[str, dict[str, Any]]:
    """``{topic: {"type": msgtype, "count": n}}`` of a recording (read from its metadata)."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    try:
        with AnyReader([bag], default_typestore=_typestore()) as reader:
            return {c.topic: {"type": c.msgtype, "count": int(c.msgcount)}
                    for c in reader.connections}
    except Exception as exc:
        raise DataError(f"cannot read bag {bag}: {exc}; re-create it") from exc
