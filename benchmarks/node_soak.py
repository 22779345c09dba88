"""Perception-node soak test: a camera stream through DDS for minutes, watching memory.

A camera (this process) publishes ``rgb8`` images at ``--rate`` Hz (sensor-data QoS, stamped
with the publish time) to the ``perception_node`` console script running in its own
process; this process subscribes to all five image outputs, as rviz would. Every few
seconds it samples the node's resident memory (``/proc/<pid>/status`` VmRSS) and the
machine's 1-minute load average. At the end it reports, per minute and overall: frames
published, outputs received and their rate, the latency publish -> output received
(percentiles, from the middleware's receive time and the header stamp), the node's
dropped-frame count (it keeps only the newest frame) and its memory - at the end of the
warm-up, at the end, the growth and the slope after warm-up (goal: none beyond warm-up).

DDS must stay on loopback, so the script re-runs itself inside ``scripts/ros_isolated``::

    scripts/ros_isolated .venv/bin/python benchmarks/node_soak.py --minutes 30 --rate 10 \\
        --export config/train/model_tiny.yaml --size 288 384 --pointcloud
    # where memory grows: tracemalloc snapshots of the node, diffed (slower node)
    scripts/ros_isolated .venv/bin/python benchmarks/node_soak.py --minutes 10 --rate 10 \\
        --export config/train/model_tiny.yaml --pointcloud --tracemalloc 60 --json /tmp/soak.json --no-docs
    .venv/bin/python benchmarks/node_soak.py --render    # the doc from the committed JSON only

``--export CONFIG`` exports a random-weight model of CONFIG's ``model:`` section (timing
and memory do not depend on the weights); ``--bundle DIR`` uses an exported bundle.
``--pointcloud`` also turns on ``~/points`` (this process then publishes camera_info) and
subscribes to it: every output. The memory verdict uses the least-squares slope of the RSS
samples after warm-up with its 95 % confidence interval (:func:`slope_ci`). ``--tracemalloc
S`` runs the node under ``tracemalloc`` with a snapshot every S seconds and stores the
source lines whose allocations grew most from the first snapshot after warm-up to the last
(``tracemalloc_top`` in the JSON): where to look when the slope is not flat.

The raw figures go to ``benchmarks/results/node_soak.json`` (written atomically) with their
provenance: the command, the git commit (and whether the tree had uncommitted changes), the
UTC start time, the machine (CPU, logical CPUs, OS, Python, ONNX Runtime / rclpy / RMW,
1-minute load average at the start and the end), the backend, device and precision the node
reports in /diagnostics, its QoS parameters as it reports them, and the model bundle. The
"Soak" section of ``docs/benchmarks.md`` (between its soak markers) is rendered from that
file alone by :func:`render` - after a measurement written to the committed JSON path, or
with ``--render``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: shared provenance
from provenance import cpu_model, git  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "node_soak.json"
DOC = ROOT / "docs" / "benchmarks.md"
OUTPUTS = ("segmentation", "segmentation/color", "depth", "normals", "normals/color")
MARK_START, MARK_END = "<!-- soak:start -->", "<!-- soak:end -->"
#: Node parameters read back from the running node (its parameter service) for the record.
NODE_PARAMETERS = ("backend", "device", "precision", "num_threads", "qos.input",
                   "qos.input_depth", "qos.output", "qos.output_depth", "diagnostics_period")
#: Memory after warm-up counts as flat when it grows by at most this much (MiB) and its
#: least-squares slope, with its 95 % confidence interval, stays within this much (MiB/min)
#: - a Python process's allocator moves its RSS by about a MiB either way.
FLAT_GROWTH_MIB, FLAT_SLOPE_MIB_PER_MIN = 2.0, 0.05
#: Student t 97.5 % quantiles by degrees of freedom (>= 30: the normal 1.96 is close enough).
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
         10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 25: 2.06}


def slope_ci(samples: list, warmup_s: float) -> dict[str, float]:
    """Least-squares slope (MiB/min) of the RSS ``samples`` ``[s, MiB, load]`` after
    ``warmup_s`` and the half-width of its 95 % confidence interval (ordinary least squares:
    consecutive samples are correlated, so the interval is if anything too narrow)."""
    pts = np.array([(s, r) for s, r, *_ in samples if s >= warmup_s and np.isfinite(r)], float)
    if len(pts) < 3:
        return {"slope": float("nan"), "ci95": float("nan"), "n": int(len(pts))}
    x, y = pts[:, 0] / 60.0, pts[:, 1]
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    df = len(pts) - 2
    sxx = float(((x - x.mean()) ** 2).sum())
    se = float(np.sqrt((resid ** 2).sum() / df / sxx)) if sxx > 0 else float("nan")
    t = next((v for k, v in sorted(_T975.items(), reverse=True) if df >= k), 12.71) if df < 30 else 1.96
    return {"slope": float(slope), "ci95": t * se, "n": int(len(pts))}


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (NaN once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def cdr_stamp_ns(data: bytes) -> int:
    """header.stamp of a serialised message (CDR: 4-byte encapsulation, then sec, nanosec)."""
    little = data[1] == 1
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", data, 4)
    return sec * 1_000_000_000 + nsec


class Listener:
    """Counts the node's outputs, keeps (receive time, latency) of each output frame."""

    def __init__(self, node, prefix: str, topics: tuple[str, ...] = OUTPUTS) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        self._lock = threading.Lock()
        self.arrivals: dict[int, list[int]] = {}  # stamp -> receive times, one per topic
        self.frames: list[tuple[int, float]] = []  # (receive ns, latency ms), all 5 outputs in
        self.diagnostics: dict[str, str] = {}
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.topics = topics
        self.subs = [node.create_subscription(PointCloud2 if t == "points" else Image,
                                              f"{prefix}/{t}", self._on_output, qos, raw=True)
                     for t in topics]
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_output(self, data: bytes, info) -> None:
        received = int(info["received_timestamp"])
        stamp = cdr_stamp_ns(data)
        with self._lock:
            times = self.arrivals.setdefault(stamp, [])
            times.append(received)
            if len(times) == len(self.topics):
                del self.arrivals[stamp]
                self.frames.append((max(times), (max(times) - stamp) / 1e6))
            if len(self.arrivals) > 1000:  # outputs of a frame that never completed
                for key in sorted(self.arrivals)[:500]:
                    del self.arrivals[key]

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if "perception" in status.name:
                values = {kv.key: kv.value for kv in status.values}
                with self._lock:  # totals from the last message, timings from a busy one
                    busy = self.diagnostics.get("inference_median_ms", "nan")
                    if values.get("inference_median_ms", "nan") == "nan":
                        values["inference_median_ms"] = busy
                    self.diagnostics = values

    def connected(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.subs)

    def snapshot(self) -> tuple[list[tuple[int, float]], dict[str, str]]:
        with self._lock:
            return list(self.frames), dict(self.diagnostics)


def _camera_frames(size: tuple[int, int], count: int = 8) -> list[np.ndarray]:
    """A few synthetic RGB scenes at ``size`` (the demo's generator), cycled by the camera."""
    try:
        from training.data.synth import render_frame  # type: ignore[attr-defined]

        return [render_frame(0, i, *size).sample.rgb for i in range(count)]
    except Exception:  # noqa: BLE001 - any RGB content will do for timing and memory
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def node_parameters(node, name: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """:data:`NODE_PARAMETERS` as the running node ``name`` reports them (its parameter
    service); ``{"error": ...}`` when it does not answer."""
    from rclpy.parameter import parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(node, name)
    try:
        if not client.wait_for_services(timeout_sec=timeout_s):
            return {"error": f"no parameter service of {name} within {timeout_s:g} s"}
        future = client.get_parameters(list(NODE_PARAMETERS))
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                return {"error": f"{name} did not answer get_parameters within {timeout_s:g} s"}
            time.sleep(0.05)
        values = future.result().values
        return {k: parameter_value_to_python(v) for k, v in zip(NODE_PARAMETERS, values, strict=True)}
    except Exception as exc:  # noqa: BLE001 - the record says why it is missing
        return {"error": f"{type(exc).__name__}: {exc}"}


def _startup_line(log: Path, bundle: Path) -> str | None:
    """The node's 'opened bundle ...: backend, precision, device' log line (bundle path elided)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "opened bundle" in line:
            line = line.split("opened bundle", 1)[1].replace(str(bundle), "<bundle>")
            return "opened bundle" + re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip()
    return None


def run_traced_node(folder: Path, period_s: float, ros_args: list[str]) -> int:
    """The perception node under ``tracemalloc``: a snapshot every ``period_s`` seconds,
    written atomically to ``folder/snap_NNNN.pickle`` (``--tracemalloc``)."""
    import tracemalloc

    tracemalloc.start(10)

    def dump() -> None:
        for i in range(1_000_000):
            time.sleep(period_s)
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            part = folder / f".snap_{i:04d}.partial"
            snap.dump(str(part))
            os.replace(part, folder / f"snap_{i:04d}.pickle")

    threading.Thread(target=dump, daemon=True).start()
    from mbmt_ros.ros.perception_node import main as node_main

    return node_main(ros_args)


def tracemalloc_growth(folder: Path, period_s: float, warmup_s: float, top: int = 15) -> dict:
    """The source lines whose allocations grew most from the first snapshot after warm-up
    to the last one."""
    import tracemalloc

    snaps = sorted(folder.glob("snap_*.pickle"))
    first = next((s for i, s in enumerate(snaps) if (i + 1) * period_s >= warmup_s), None)
    if first is None or first == snaps[-1]:
        return {"error": f"{len(snaps)} snapshot(s): too few after the warm-up"}
    a, b = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(snaps[-1]))
    stats = b.compare_to(a, "lineno")
    i_first, i_last = snaps.index(first), len(snaps) - 1
    return {"from_s": (i_first + 1) * period_s, "to_s": (i_last + 1) * period_s,
            "total_diff_kib": sum(s.size_diff for s in stats) / 1024,
            "top": [{"where": str(s.traceback[0]), "size_diff_kib": s.size_diff / 1024,
                     "count_diff": s.count_diff} for s in stats[:top]]}


def _node_command(bundle: Path, backend: str, device: str, precision: str, pointcloud: bool,
                  tracemalloc_s: float, snapshots: Path) -> list[str]:
    """The node's command line: the perception node, or it under tracemalloc (``snapshots``
    every ``tracemalloc_s`` seconds)."""
    ros_args = ["--ros-args", "-r", "__node:=perception_node", "-r", "image:=/soak/image",
                "-r", "camera_info:=/soak/camera_info",
                "-p", f"bundle:={bundle}", "-p", f"backend:={backend}", "-p", f"device:={device}",
                "-p", f"precision:={precision}", "-p", f"pointcloud:={str(pointcloud).lower()}"]
    if tracemalloc_s > 0:
        snapshots.mkdir()
        return [sys.executable, __file__, "--traced-node", str(snapshots), str(tracemalloc_s),
                *ros_args]
    return [sys.executable, "-m", "mbmt_ros.ros.perception_node", *ros_args]


def _camera_loop(publish: Any, messages: list[Any], rate: float, minutes: float,
                 sample_s: float, pid: int, samples: list[tuple[float, float, float]],
                 published: list[int]) -> None:
    """Publish ``messages`` in turn at ``rate`` Hz for ``minutes`` (never in a burst after
    falling behind), sampling the node's RSS and the load average every ``sample_s``
    seconds into ``samples`` (s since start, RSS MiB, load) and each publish time (ns) into
    ``published``; one more sample after the last frame has been handled."""
    start = time.monotonic()
    period, next_pub, next_sample, i = 1.0 / rate, start, start, 0
    end = start + minutes * 60
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - start, rss_mb(pid), os.getloadavg()[0]))
            next_sample += sample_s
        if now >= next_pub:
            publish(messages[i % len(messages)])
            published.append(time.time_ns())
            i += 1
            next_pub += period
            if next_pub < now - 1.0:  # fell behind by > 1 s: do not burst
                next_pub = now
        time.sleep(max(0.0, min(next_pub, next_sample) - time.monotonic()))
    time.sleep(1.0)
    samples.append((time.monotonic() - start, rss_mb(pid), os.getloadavg()[0]))
    time.sleep(1.2)  # one more diagnostics period


def soak(bundle: Path, minutes: float, rate: float, size: tuple[int, int], backend: str,
         device: str, precision: str, sample_s: float, warmup_s: float, log: Path,
         pointcloud: bool = False, tracemalloc_s: float = 0.0) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from mbmt_ros.dds_profile import node_transport_env
    from mbmt_ros.ros.image_messages import numpy_to_image

    snapshots = log.parent / "tracemalloc"
    cmd = _node_command(bundle, backend, device, precision, pointcloud, tracemalloc_s, snapshots)
    transport = node_transport_env(os.environ, "")  # the node as the launch file starts it
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("soak_camera", context=context)
    topics = (*OUTPUTS, "points") if pointcloud else OUTPUTS
    listener = Listener(node, "/perception_node", topics)
    pub = node.create_publisher(Image, "/soak/image", qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, "/soak/camera_info", qos_profile_sensor_data)
    info = CameraInfo(width=size[1], height=size[0])
    info.k = [0.8 * size[1], 0.0, size[1] / 2, 0.0, 0.8 * size[1], size[0] / 2, 0.0, 0.0, 1.0]
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    messages = [numpy_to_image(img, "rgb8") for img in _camera_frames(size)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, **transport.env})
    samples: list[tuple[float, float, float]] = []  # (s since start, RSS MiB, load avg 1 min)
    published: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not listener.connected():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the node did not come up; see {log}")
            time.sleep(0.1)
        params = node_parameters(node, "/perception_node")
        time.sleep(1.0)

        def publish(msg: Any) -> None:
            msg.header.stamp = node.get_clock().now().to_msg()
            if pointcloud:
                info.header.stamp = msg.header.stamp
                info_pub.publish(info)
            pub.publish(msg)

        _camera_loop(publish, messages, rate, minutes, sample_s, proc.pid, samples, published)
    finally:
        proc.send_signal(2)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    frames, diag = listener.snapshot()
    result = summarise(frames, diag, published, samples, minutes, rate, warmup_s)
    result["node"] = {"backend": diag.get("backend"), "device": diag.get("device"),
                      "precision": diag.get("precision"), "tasks": diag.get("tasks"),
                      "startup": _startup_line(log, bundle), "parameters": params,
                      "diagnostics": diag}
    result["samples"] = [[round(s, 3), round(r, 3), round(ld, 2)] for s, r, ld in samples]
    result["node"]["transport"] = transport.reason
    result["outputs_subscribed"] = list(topics)
    if tracemalloc_s > 0:
        result["tracemalloc"] = tracemalloc_growth(snapshots, tracemalloc_s, warmup_s)
    return result


def summarise(frames, diag, published, samples, minutes, rate, warmup_s) -> dict:
    """The figures of a run: ``frames`` (receive ns, latency ms), the node's last
    /diagnostics ``diag``, the publish times (ns) and the (s, RSS MiB, load) ``samples``."""
    t0 = published[0] if published else 0
    per_minute = []
    for m in range(int(np.ceil(minutes))):
        lo, hi = t0 + m * 60_000_000_000, t0 + (m + 1) * 60_000_000_000
        pubs = sum(lo <= t < hi for t in published)
        lat = np.array([lat for t, lat in frames if lo <= t < hi])
        span = min(60.0, (published[-1] - lo) / 1e9) if published else 60.0
        rss = [r for s, r, _ in samples if m * 60 <= s < (m + 1) * 60]
        load = [ld for s, _, ld in samples if m * 60 <= s < (m + 1) * 60]
        per_minute.append({
            "minute": m + 1, "published": pubs, "outputs": int(lat.size),
            "output_rate_hz": lat.size / span if span > 0 else float("nan"),
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "rss_mb": float(np.nanmax(rss)) if rss else float("nan"),
            "load_avg_1min": float(np.mean(load)) if load else float("nan")})
    lat = np.array([lat for _, lat in frames])
    after = [(s, r) for s, r, _ in samples if s >= warmup_s and np.isfinite(r)]
    fit = slope_ci(samples, warmup_s)
    slope = fit["slope"]
    warm = after[0][1] if after else float("nan")
    final = after[-1][1] if after else float("nan")
    duration = (published[-1] - published[0]) / 1e9 if len(published) > 1 else float("nan")
    return {
        "minutes": minutes, "rate_hz": rate, "published": len(published),
        "outputs": int(lat.size), "output_rate_hz": lat.size / duration if duration else None,
        "input_rate_hz": (len(published) - 1) / duration if duration else None,
        "latency_ms": {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)}
        | {"max": float(lat.max())} if lat.size else {},
        "node_dropped_frames": diag.get("dropped_frames"),
        "node_received_frames": diag.get("received_frames"),
        "node_processed_frames": diag.get("processed_frames"),
        "node_inference_median_ms": diag.get("inference_median_ms"),
        "rss_mb": {"start": samples[0][1] if samples else None, "after_warmup": warm,
                   "end": final, "growth_after_warmup": final - warm,
                   "slope_mb_per_min_after_warmup": slope,
                   "slope_ci95_mb_per_min": fit["ci95"], "slope_samples": fit["n"],
                   "min_after_warmup": min(r for _, r in after) if after else None,
                   "max_after_warmup": max(r for _, r in after) if after else None,
                   "max": float(np.nanmax([r for _, r, _ in samples])) if samples else None},
        "warmup_s": warmup_s, "per_minute": per_minute,
    }


# ------------------------------------------------------------------ provenance
def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed as a distribution
        try:
            return str(__import__(module).__version__)
        except Exception:  # noqa: BLE001
            return None


def machine() -> dict[str, Any]:
    """CPU, logical CPUs, OS, Python and library versions, 1-minute load average now."""
    return {"cpu": cpu_model() or platform.machine(), "cpu_count": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "onnxruntime": _version("onnxruntime"),
            "rclpy": _version("rclpy"), "numpy": np.__version__,
            "rmw_implementation": os.environ.get("RMW_IMPLEMENTATION"),
            "ros_distro": os.environ.get("ROS_DISTRO"),
            "load_avg_1min_start": round(os.getloadavg()[0], 2)}


def bundle_info(bundle: Path) -> dict[str, Any]:
    """What identifies the model: tasks, input size, the ONNX file's SHA-256, its config."""
    from mbmt_ros.runtime.bundle import Bundle

    b = Bundle.load(bundle)
    return {"tasks": list(b.tasks), "input_size": list(b.input_size),
            "model_sha256": b.model_sha256, "num_classes": b.num_classes,
            "model_config": b.model_config}


# ------------------------------------------------------------------ rendering (JSON -> doc)
def _num(value: Any, fmt: str = ".1f") -> str:
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return "?"


def _backbones(config: dict[str, Any] | None) -> str:
    names = list((config or {}).get("backbones") or [])
    if not names:
        return ""
    if len(set(names)) == 1:
        return f"{len(names)}x `{names[0]}`"
    return ", ".join(f"`{n}`" for n in names)


def _model(raw: dict[str, Any]) -> str:
    st, info = raw["settings"], raw.get("bundle") or {}
    arch = _backbones(info.get("model_config"))
    arch = f", {arch}" if arch else ""
    if st.get("export_config"):
        return (f"a random-weight export of `{Path(st['export_config']).name}`{arch} (memory "
                "and timing do not depend on the weights)")
    return f"the bundle `{st['bundle']}`{arch}"


def _machine_line(raw: dict[str, Any]) -> str:
    m, st, node = raw["machine"], raw["settings"], raw["node"]
    params = node.get("parameters") or {}
    dirty = " (uncommitted changes in the tree)" if raw.get("git_dirty") else ""
    versions = ", ".join(f"{name} {m[key]}" for key, name in (
        ("onnxruntime", "ONNX Runtime"), ("rclpy", "rclpy")) if m.get(key))
    rmw = f" ({m['rmw_implementation']})" if m.get("rmw_implementation") else ""
    qos = (f"input QoS `{params.get('qos.input', '?')}` depth {params.get('qos.input_depth', '?')}, "
           f"outputs `{params.get('qos.output', '?')}` depth {params.get('qos.output_depth', '?')}")
    line = (
        f"Measured {raw['date_utc']} at commit `{raw['git_commit'][:12]}`{dirty} on "
        f"{m['cpu']}, {m['cpu_count']} logical CPUs shared with other jobs (1-minute load "
        f"average {_num(m.get('load_avg_1min_start'), '.2f')} at the start, "
        f"{_num(m.get('load_avg_1min_end'), '.2f')} at the end; per minute in the table), "
        f"{m['os']}, Python {m['python']}, {versions}{rmw}. The node ran backend "
        f"`{node.get('backend')}`, device `{node.get('device')}`, precision "
        f"`{node.get('precision')}` (as its /diagnostics report them) with {_model(raw)} at "
        f"{st['size'][0]}x{st['size'][1]}; {qos} (as the node reports its parameters).")
    if raw.get("note"):
        line += f" Note: {raw['note']}"
    return line


def _notes(raw: dict[str, Any]) -> str:
    r, m = raw["results"], raw["machine"]
    params = raw["node"].get("parameters") or {}
    mem, minutes = r["rss_mb"], r["per_minute"]
    growth = mem["growth_after_warmup"]
    fit = slope_ci(raw["samples"], r["warmup_s"])  # from the raw samples: older runs too
    slope, ci = fit["slope"], fit["ci95"]
    flat = abs(growth) <= FLAT_GROWTH_MIB and abs(slope) + ci <= FLAT_SLOPE_MIB_PER_MIN
    rest = r["minutes"] - r["warmup_s"] / 60
    verdict = ("flat: the whole 95 % interval of the slope is within "
               f"±{FLAT_SLOPE_MIB_PER_MIN:g} MiB/min, no sign of a leak over these {rest:g} min"
               if flat else
               f"not shown to be flat (the bound: |growth| <= {FLAT_GROWTH_MIB:g} MiB and the "
               f"95 % interval of the slope within ±{FLAT_SLOPE_MIB_PER_MIN:g} MiB/min); "
               "`--tracemalloc` shows where it grows")
    memory = (
        f"- **Memory**: the node's RSS rises from {_num(mem['start'])} to "
        f"{_num(mem['after_warmup'])} MiB during the {r['warmup_s']:g} s warm-up (ONNX "
        "Runtime's arena, DDS buffers, the first messages of each size); over the remaining "
        f"{rest:g} min its samples stay between {_num(mem['min_after_warmup'])} and "
        f"{_num(mem['max_after_warmup'])} MiB, {_num(growth, '+.1f')} MiB from the end of the "
        f"warm-up to the end (slope {_num(slope, '+.3f')} ± {_num(ci, '.3f')} MiB/min, 95 % "
        f"interval over {fit['n']} samples; consecutive samples are correlated, so it is if "
        f"anything too narrow) - {verdict}.")
    received, processed = int(r["node_received_frames"]), int(r["node_processed_frames"])
    dropped = int(r["node_dropped_frames"])
    p50 = [p["latency_p50_ms"] for p in minutes]
    p99 = [p["latency_p99_ms"] for p in minutes]
    spread = (f"the per-minute latency p50 stays between {_num(min(p50))} and {_num(max(p50))} ms "
              f"and the p99 between {_num(min(p99))} and {_num(max(p99))} ms for the whole run")
    if dropped:
        rate = (
            f"- **Rate**: a camera faster than the backend is the expected case on a CPU: the "
            f"node keeps only the newest frame, so it processed {processed} of the {received} "
            f"frames it received ({100 * processed / received:.0f} %) at its own speed (backend "
            f"median {_num(r['node_inference_median_ms'])} ms), dropped {dropped} (counted in "
            f"`/diagnostics`) and built no backlog: {spread}.")
    else:
        rate = (f"- **Rate**: the node kept up with the camera: it processed {processed} of "
                f"the {received} frames it received and dropped none; {spread}.")
    share = 100 * r["outputs"] / processed if processed else float("nan")
    count = _count(r)
    consumer = (
        f"- **Consumer**: the outputs are published `{params.get('qos.output', '?')}` with "
        f"history depth {params.get('qos.output_depth', '?')} (`qos.output_depth`), so a "
        f"consumer that falls behind - here a Python process on the same {m['cpu_count']} "
        "loaded CPUs - receives the newest output of each topic and misses older ones: all "
        f"{count} outputs arrived for {r['outputs']} of the {processed} processed frames "
        f"({share:.0f} %; \"frames with all outputs received\"). Raise `qos.output_depth` when "
        "a consumer must see every output.")
    return "\n".join([memory, rate, consumer])


def _count(results: dict[str, Any]) -> str:
    """'five' / 'six' ...: the outputs subscribed (five images before ``--pointcloud``)."""
    n = len(results.get("outputs_subscribed") or OUTPUTS)
    return {5: "five", 6: "six"}.get(n, str(n))


def _tracemalloc(r: dict[str, Any]) -> str:
    tm = r.get("tracemalloc")
    if not tm:
        return ""
    if "error" in tm:
        return f"\n\ntracemalloc: {tm['error']}."
    rows = "\n".join(f"| `{e['where']}` | {e['size_diff_kib']:+.1f} | {e['count_diff']:+d} |"
                     for e in tm["top"])
    return (f"\n\ntracemalloc (the node under `tracemalloc`, snapshots at {tm['from_s']:g} s and "
            f"{tm['to_s']:g} s; Python allocations {tm['total_diff_kib']:+.1f} KiB in all):\n\n"
            f"| where | KiB | blocks |\n|---|---:|---:|\n{rows}")


def render(raw: dict[str, Any]) -> str:
    """The whole Soak section (markers included) of docs/benchmarks.md, from the JSON alone."""
    r = raw["results"]
    mem, lat = r["rss_mb"], r["latency_ms"]
    fit = slope_ci(raw["samples"], r["warmup_s"])
    rows = "\n".join(
        f"| {p['minute']} | {p['published']} | {p['outputs']} | {p['output_rate_hz']:.1f} | "
        f"{p['latency_p50_ms']:.1f} | {p['latency_p99_ms']:.1f} | {p['rss_mb']:.1f} | "
        f"{_num(p.get('load_avg_1min'), '.2f')} |"
        for p in r["per_minute"])
    return f"""{MARK_START}
## Soak

`benchmarks/node_soak.py` (inside `scripts/ros_isolated`, DDS on loopback only): a camera
process publishes `rgb8` frames at a fixed rate with sensor-data QoS to the `perception_node`
console script (its own process; parameters other than the bundle, backend, device and
precision at their defaults), and subscribes to all {_count(r)} outputs as rviz would; the
node's resident memory (VmRSS) and the machine's load average are sampled every few seconds.
Latency = output received (middleware receive time) - the frame's header stamp (its publish
time), all {_count(r)} outputs in. Rendered from `benchmarks/results/node_soak.json`
(`.venv/bin/python benchmarks/node_soak.py --render`).

{_machine_line(raw)}

```bash
{raw['command']}
```

| | |
|---|---|
| duration, camera rate | {r['minutes']:g} min at {r['rate_hz']:g} Hz ({r['published']} frames, measured {_num(r['input_rate_hz'])} Hz) |
| frames with all outputs received | {r['outputs']} ({_num(r['output_rate_hz'])} Hz); node: {r['node_received_frames']} received, {r['node_processed_frames']} processed, {r['node_dropped_frames']} dropped (a newer frame arrived first) |
| latency p50 / p90 / p99 / max | {_num(lat.get('p50'))} / {_num(lat.get('p90'))} / {_num(lat.get('p99'))} / {_num(lat.get('max'))} ms (backend median {r['node_inference_median_ms']} ms) |
| node memory (RSS) | {_num(mem['start'])} MiB at start, {_num(mem['after_warmup'])} MiB after {r['warmup_s']:g} s warm-up, {_num(mem['end'])} MiB at the end, max {_num(mem['max'])} MiB |
| **growth after warm-up** | **{_num(mem['growth_after_warmup'], '+.1f')} MiB** (slope {_num(fit['slope'], '+.3f')} ± {_num(fit['ci95'], '.3f')} MiB/min, 95 % interval) |

| minute | published | outputs | output rate (Hz) | latency p50 (ms) | latency p99 (ms) | node RSS, max (MiB) | load avg (1 min), mean |
|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

{_notes(raw)}{_tracemalloc(r)}
{MARK_END}"""


def write_section(path: Path, text: str) -> None:
    """Replace the soak section of ``path`` (between the markers), or append it. The file is
    read right before the atomic write, so other blocks written meanwhile are kept."""
    from mbmt_ros.io import atomic_write_text

    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if MARK_START in old and MARK_END in old:
        head, rest = old.split(MARK_START, 1)
        new = head + text + rest.split(MARK_END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    atomic_write_text(path, new)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bundle", type=Path, help="an exported model bundle")
    src.add_argument("--export", type=Path, metavar="CONFIG",
                     help="export a random-weight model of this training config first")
    parser.add_argument("--size", type=int, nargs=2, default=(288, 384), metavar=("H", "W"))
    parser.add_argument("--minutes", type=float, default=30.0, help="duration (default 30)")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz (default 10)")
    parser.add_argument("--pointcloud", action="store_true",
                        help="also ~/points (camera_info published): every output subscribed")
    parser.add_argument("--tracemalloc", type=float, default=0.0, metavar="S",
                        help="run the node under tracemalloc, a snapshot every S s, and report "
                             "the lines that grew most after warm-up (slows the node)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--sample-seconds", type=float, default=5.0,
                        help="RSS and load sampling period")
    parser.add_argument("--warmup-seconds", type=float, default=60.0,
                        help="memory growth is measured after this (default 60)")
    parser.add_argument("--json", type=Path, default=RESULTS,
                        help="raw results (default benchmarks/results/node_soak.json)")
    parser.add_argument("--markdown", type=Path, default=DOC,
                        help="the page whose Soak section is rewritten (default docs/benchmarks.md)")
    parser.add_argument("--no-docs", action="store_true", help="do not touch the doc")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the Soak section from --json (no measurement)")
    parser.add_argument("--note", default="",
                        help="an optional remark stored in the JSON and shown under the machine line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if args_in[:1] == ["--traced-node"]:  # the node under tracemalloc (a subprocess)
        return run_traced_node(Path(args_in[1]), float(args_in[2]), args_in[3:])
    parser = _parser()
    args = parser.parse_args(args_in)
    if args.render:
        write_section(args.markdown, render(json.loads(args.json.read_text(encoding="utf-8"))))
        return 0
    if args.bundle is None and args.export is None:
        parser.error("one of --bundle or --export is required (or --render)")
    if os.environ.get("MBMT_NETNS") != "1":  # DDS stays on loopback
        os.execv(str(ROOT / "scripts" / "ros_isolated"),
                 [str(ROOT / "scripts" / "ros_isolated"), sys.executable, __file__, *args_in])

    dirty = [ln[3:] for ln in git("status", "--porcelain").splitlines() if ln.strip()]
    raw: dict[str, Any] = {
        "command": "scripts/ros_isolated .venv/bin/python benchmarks/node_soak.py "
                   + shlex.join(args_in),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(dirty),
        "git_dirty_files": dirty,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(), "note": args.note or None,
        "settings": {"minutes": args.minutes, "rate_hz": args.rate, "size": list(args.size),
                     "backend": args.backend, "device": args.device,
                     "precision": args.precision, "sample_s": args.sample_seconds,
                     "warmup_s": min(args.warmup_seconds, args.minutes * 60 / 2),
                     "export_config": str(args.export) if args.export else None,
                     "bundle": str(args.bundle) if args.bundle else None,
                     "weights": "random" if args.export else "bundle",
                     "pointcloud": args.pointcloud, "tracemalloc_s": args.tracemalloc},
    }
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            sys.path.insert(0, str(Path(__file__).parent))
            from node_latency import export_random_bundle

            bundle = export_random_bundle(args.export, tuple(args.size), Path(tmp) / "bundle")
        raw["bundle"] = bundle_info(bundle)
        result = soak(bundle, args.minutes, args.rate, tuple(args.size), args.backend,
                      args.device, args.precision, args.sample_seconds,
                      raw["settings"]["warmup_s"], Path(tmp) / "node.log",
                      args.pointcloud, args.tracemalloc)
    raw["node"], raw["samples"] = result.pop("node"), result.pop("samples")
    raw["results"] = result
    raw["machine"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    raw["finished_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    from mbmt_ros.io import atomic_write_json

    atomic_write_json(args.json, raw)
    text = render(raw)
    print(text)
    if not args.no_docs and args.json.resolve() == RESULTS.resolve():  # docs: committed JSON only
        write_section(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
