"""TensorRT engine cache: keys, the self-checking engine file format, atomic writes.

Engines are not portable, so each is stored under a key of everything that makes it valid:
the model's SHA-256, GPU name, compute capability, SM count, memory size, TensorRT version,
precision, batch profile and the parsed ONNX file's SHA-256. An engine file is ``MAGIC | header length | JSON header | serialized engine``; the
header repeats the key and the payload's size and SHA-256, so a truncated, corrupt, stale
or foreign engine is detected on load (:class:`StaleEngine` says why) and rebuilt instead of
being trusted. Pure Python: no TensorRT needed, which is what lets CI test it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mbmt_ros.io import atomic_write_bytes
from mbmt_ros.runtime.bundle import Bundle

__all__ = ["MAGIC", "ENGINE_SUFFIX", "EngineKey", "EngineRecord", "StaleEngine", "pack_engine",
           "unpack_engine", "write_engine", "read_engine", "list_engines", "cache_dir",
           "timing_cache_path"]

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
    changed = [f"{k}: cached {stored.get(k)!r}, now {v!r}" for k, v in key.as_dict().items()
               if stored.get(k) != v]
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


def timing_cache_path(directory: Path, key: EngineKey) -> Path:
    """TensorRT's timing cache, shared by every engine of one GPU + TensorRT version."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", key.gpu_name).strip("-").lower() or "gpu"
    return directory / (f"timing_{gpu}_sm{key.compute_capability.replace('.', '')}"
                        f"_trt{key.tensorrt_version}.cache")


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False
