"""TensorRT engine cache: keys, the self-checking engine file format, atomic writes.

Engines are not portable, so each is stored under a key of everything that makes it valid:
the model's SHA-256, GPU name, compute capability, SM count, memory size, TensorRT version,
precision, batch profile, the parsed ONNX file's SHA-256 and (INT8) the calibration frames'
SHA-256. Builds run under a per-engine file lock (:func:`load_or_build`). An engine file is ``MAGIC | header length | JSON header | serialized engine``; the
header repeats the key and the payload's size and SHA-256, so a truncated, corrupt, stale
or foreign engine is detected on load (:class:`StaleEngine` says why) and rebuilt instead of
being trusted. Pure Python: no TensorRT needed, which is what lets CI test it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mbmt_ros.io import atomic_write_bytes
from mbmt_ros.runtime.bundle import Bundle

__all__ = ["MAGIC", "ENGINE_SUFFIX", "EngineKey", "EngineRecord", "StaleEngine", "pack_engine",
           "unpack_engine", "write_engine", "read_engine", "list_engines", "cache_dir",
           "timing_cache_path", "calibration_table_path", "engine_lock", "load_or_build",
           "find_prebuilt"]

_log = logging.getLogger(__name__)

MAGIC = b"MBMTTRT1"
ENGINE_SUFFIX = ".engine"
_LEN = struct.Struct("<I")


class StaleEngine(Exception):  # noqa: N818 - a condition, handled by rebuilding
    """A cached engine cannot be used; ``str(exc)`` is the reason (logged before a rebuild)."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on."""

    model_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    max_batch: int
    dynamic_batch: bool
    #: Every Orin module reports the name "Orin": the SM count and memory tell an AGX Orin
    #: (2048 cores, 16 SMs, 32/64 GB) from an Orin Nano (8 SMs, 8 GB) - tuned differently.
    sm_count: int = 0
    total_memory_mib: int = 0
    #: The ONNX file TensorRT parsed (model.onnx or model_fp16.onnx) and its SHA-256.
    onnx_file: str = ""
    onnx_sha256: str = ""
    #: INT8: SHA-256 of the calibration frames (new frames -> new key, new calibration table).
    calibration_sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        """Readable and unique: ``<gpu>_sm87_trt10.3.0_fp16_b1_<digest>.engine``."""
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower() or "gpu"
        batch = f"b1-{self.max_batch}" if self.dynamic_batch else f"b{self.max_batch}"
        return (f"{gpu}_sm{self.compute_capability.replace('.', '')}_trt{self.tensorrt_version}"
                f"_{self.precision}_{batch}_{self.digest()[:12]}{ENGINE_SUFFIX}")


@dataclass(frozen=True)
class EngineRecord:
    """One file of an engine cache as ``mbmt-engine info`` shows it."""

    path: Path
    header: dict[str, Any] | None
    problem: str | None  # None when the file is intact


def pack_engine(key: EngineKey, payload: bytes, extra: dict[str, Any] | None = None) -> bytes:
    """The engine file bytes for ``payload`` (a serialized TensorRT engine)."""
    header = {"key": key.as_dict(), "payload_size": len(payload),
              "payload_sha256": hashlib.sha256(payload).hexdigest(), **(extra or {})}
    blob = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _LEN.pack(len(blob)) + blob + payload


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < len(MAGIC) + _LEN.size or not data.startswith(MAGIC):
        raise StaleEngine("not an mbmt_ros engine file (bad magic; written by another tool or "
                          "truncated)")
    (size,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        header = json.loads(data[start:start + size].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StaleEngine(f"engine header is corrupt ({exc})") from exc
    if not isinstance(header, dict) or "key" not in header:
        raise StaleEngine("engine header is corrupt (no key)")
    return header, data[start + size:]


def unpack_engine(data: bytes, key: EngineKey) -> bytes:
    """The serialized engine in ``data`` if it is intact and was built for ``key``."""
    header, payload = _split(data)
    if len(payload) != header.get("payload_size"):
        raise StaleEngine(f"engine is truncated ({len(payload)} of "
                          f"{header.get('payload_size')} bytes)")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise StaleEngine("engine checksum mismatch (the file is corrupt)")
    stored = header["key"]
    # a key field added later (calibration_sha256) reads as its default in older engines
    defaults = EngineKey("", "", "", "", "", 0, False).as_dict()
    changed = [f"{k}: cached {stored.get(k, defaults[k])!r}, now {v!r}"
               for k, v in key.as_dict().items() if stored.get(k, defaults[k]) != v]
    if changed:
        raise StaleEngine("engine was built for something else (" + "; ".join(changed) + ")")
    return payload


def write_engine(path: str | os.PathLike[str], key: EngineKey, payload: bytes,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write an engine atomically (temp file + rename): a crash never leaves half an engine."""
    path = Path(path)
    atomic_write_bytes(path, pack_engine(key, payload, extra))
    return path


def read_engine(path: str | os.PathLike[str], key: EngineKey) -> bytes:
    """The cached engine at ``path`` for ``key``; :class:`StaleEngine` if unusable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StaleEngine("no cached engine yet") from None
    except OSError as exc:
        raise StaleEngine(f"cannot read the cached engine ({exc})") from exc
    return unpack_engine(data, key)


def list_engines(directory: str | os.PathLike[str]) -> list[EngineRecord]:
    """Every ``*.engine`` file of a cache folder with its header, or why it is unreadable."""
    directory = Path(directory)
    records = []
    for path in sorted(directory.glob(f"*{ENGINE_SUFFIX}")) if directory.is_dir() else []:
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(MAGIC) + _LEN.size)
                if len(head) < len(MAGIC) + _LEN.size or not head.startswith(MAGIC):
                    raise StaleEngine("not an mbmt_ros engine file (bad magic)")
                (size,) = _LEN.unpack_from(head, len(MAGIC))
                header, _ = _split(head + fh.read(size))
            actual = path.stat().st_size - len(MAGIC) - _LEN.size - size
            problem = None if actual == header.get("payload_size") else (
                f"truncated ({actual} of {header.get('payload_size')} bytes)")
            records.append(EngineRecord(path, header, problem))
        except (StaleEngine, OSError) as exc:
            records.append(EngineRecord(path, None, str(exc)))
    return records


def cache_dir(bundle: Bundle, override: str | os.PathLike[str] | None = None) -> Path:
    """Where ``bundle``'s engines live: ``override``, else ``<bundle>/engines`` when writable,
    else ``$XDG_CACHE_HOME/mbmt_ros/engines/<model sha256 prefix>`` (read-only installs)."""
    if override:
        return Path(override)
    preferred = bundle.engine_dir
    if _writable(preferred):
        return preferred
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mbmt_ros" / "engines" / bundle.model_sha256[:16]


def _gpu_slug(key: EngineKey) -> str:
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", key.gpu_name).strip("-").lower() or "gpu"
    return (f"{gpu}_sm{key.compute_capability.replace('.', '')}_{key.sm_count}sms_"
            f"{key.total_memory_mib}mib")


def timing_cache_path(directory: Path, key: EngineKey) -> Path:
    """TensorRT's timing cache, keyed like the engine's GPU: name, compute capability, SM
    count and memory (an AGX Orin and an Orin Nano are both "Orin", sm87) and TensorRT."""
    return directory / f"timing_{_gpu_slug(key)}_trt{key.tensorrt_version}.cache"


def calibration_table_path(directory: Path, key: EngineKey) -> Path:
    """The INT8 calibration table of ``key``: named by the key's digest, which includes the
    calibration frames' SHA-256, so new frames never reuse an old table."""
    return directory / f"{key.filename()}.calib"


@contextlib.contextmanager
def engine_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """An exclusive advisory lock (``fcntl.flock`` on ``<path>.lock``) around one engine's
    build: a second process (another node on the robot) waits here, then finds the engine
    built by the first. ``timeout``: seconds before :class:`TimeoutError` (None: wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+b") as fh:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline else 0))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{lock_path} is held by another process (an engine "
                                       f"build) for more than {timeout} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def load_or_build(path: Path, key: EngineKey, build: Callable[[], bytes],
                  rebuild: bool = False) -> tuple[bytes, bool]:
    """The engine at ``path`` for ``key``, or ``build()``'s (which must write it to ``path``).

    The build happens under :func:`engine_lock`: a process that finds no valid engine takes
    the lock, reads the file again (another process may have just built it: then it loads
    that one) and only then builds. Returns the payload and whether this call built it.
    A stale or corrupt file is logged (why) and rebuilt.
    """
    if not rebuild:
        try:
            return read_engine(path, key), False
        except StaleEngine:
            pass
    with engine_lock(path):
        if not rebuild:
            try:
                payload = read_engine(path, key)
                _log.info("TensorRT: another process built %s while this one waited", path)
                return payload, False
            except StaleEngine as why:
                if path.exists():
                    _log.warning("TensorRT: rebuilding %s because %s", path, why)
                else:
                    _log.info("TensorRT: no cached engine for this GPU / TensorRT / precision")
        return build(), True


def find_prebuilt(directory: Path, key: EngineKey) -> Path | None:
    """An intact engine in ``directory`` whose key equals ``key`` except for the calibration
    data (an INT8 engine prebuilt with `mbmt-engine build --calibration`, opened by a node
    that has no calibration frames); the newest when several match."""
    wanted = {k: v for k, v in key.as_dict().items() if k != "calibration_sha256"}
    found = [r for r in list_engines(directory) if r.header is not None and r.problem is None
             and {k: v for k, v in r.header["key"].items() if k != "calibration_sha256"}
             == wanted]
    return max(found, key=lambda r: r.path.stat().st_mtime).path if found else None


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False
