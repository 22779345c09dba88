"""Perception-node soak test: a camera stream through DDS for minutes, watching memory.

A camera (this process) publishes ``rgb8`` images at ``--rate`` Hz (sensor-data QoS, stamped
with the publish time) to the ``perception_node`` console script running in its own
process; this process subscribes to all five image outputs, as rviz would. Every few
seconds it samples the node's resident memory (``/proc/<pid>/status`` VmRSS). At the end it
reports, per minute and overall: frames published, outputs received and their rate, the
latency publish -> output received (percentiles, from the middleware's receive time and the
header stamp), the node's dropped-frame count (it keeps only the newest frame) and its
memory - at the end of the warm-up, at the end, the growth and the slope after warm-up
(goal: none beyond warm-up).

DDS must stay on loopback, so the script re-runs itself inside ``scripts/ros_isolated``::

    .venv/bin/python benchmarks/node_soak.py --minutes 10 --rate 30 \\
        --export config/train/model_tiny.yaml --size 288 384 --markdown docs/benchmarks.md

``--export CONFIG`` exports a random-weight model of CONFIG's ``model:`` section (timing
and memory do not depend on the weights); ``--bundle DIR`` uses an exported bundle.
``--markdown`` replaces the "Soak" section of that file (between its soak markers).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("segmentation", "segmentation/color", "depth", "normals", "normals/color")
MARK_START, MARK_END = "<!-- soak:start -->", "<!-- soak:end -->"
NOTES = """- **Memory**: the node's RSS rises during warm-up (ONNX Runtime's arena, DDS buffers,
  the first messages of each size) and then stays flat: the growth after warm-up is within
  the sampling noise of a Python process (allocator pages coming and going), no leak.
- **Rate**: a camera faster than the backend is the expected case on a CPU: the node keeps
  only the newest frame, so it processes at its own speed, drops the rest (counted in
  `/diagnostics`) and never builds a backlog - latency stays bounded for the whole run.
- **Consumer**: the outputs are published reliable with history depth 1 (`qos.output_depth`),
  so a consumer that falls behind - here a Python process on the same two loaded cores -
  receives the newest output of each topic and misses older ones; "frames with all outputs
  received" counts frames for which all five topics arrived. Raise `qos.output_depth` when
  a consumer must see every output."""


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

    def __init__(self, node, prefix: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self._lock = threading.Lock()
        self.arrivals: dict[int, list[int]] = {}  # stamp -> receive times, one per topic
        self.frames: list[tuple[int, float]] = []  # (receive ns, latency ms), all 5 outputs in
        self.diagnostics: dict[str, str] = {}
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.subs = [node.create_subscription(Image, f"{prefix}/{t}", self._on_output, qos,
                                              raw=True) for t in OUTPUTS]
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_output(self, data: bytes, info) -> None:
        received = int(info["received_timestamp"])
        stamp = cdr_stamp_ns(data)
        with self._lock:
            times = self.arrivals.setdefault(stamp, [])
            times.append(received)
            if len(times) == len(OUTPUTS):
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


def soak(bundle: Path, minutes: float, rate: float, size: tuple[int, int], backend: str,
         device: str, precision: str, sample_s: float, warmup_s: float, log: Path) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mbmt_ros.ros.image_conversions import numpy_to_image

    cmd = [sys.executable, "-m", "mbmt_ros.ros.perception_node", "--ros-args",
           "-r", "__node:=perception_node", "-r", "image:=/soak/image",
           "-p", f"bundle:={bundle}", "-p", f"backend:={backend}", "-p", f"device:={device}",
           "-p", f"precision:={precision}"]
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("soak_camera", context=context)
    listener = Listener(node, "/perception_node")
    pub = node.create_publisher(Image, "/soak/image", qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    messages = [numpy_to_image(img, "rgb8") for img in _camera_frames(size)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    memory: list[tuple[float, float]] = []
    published: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not listener.connected():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the node did not come up; see {log}")
            time.sleep(0.1)
        time.sleep(1.0)
        start = time.monotonic()
        period, next_pub, next_sample, i = 1.0 / rate, start, start, 0
        end = start + minutes * 60
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                memory.append((now - start, rss_mb(proc.pid)))
                next_sample += sample_s
            if now >= next_pub:
                msg = messages[i % len(messages)]
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                published.append(time.time_ns())
                i += 1
                next_pub += period
                if next_pub < now - 1.0:  # fell behind by > 1 s: do not burst
                    next_pub = now
            time.sleep(max(0.0, min(next_pub, next_sample) - time.monotonic()))
        time.sleep(1.0)
        memory.append((time.monotonic() - start, rss_mb(proc.pid)))
        time.sleep(1.2)  # one more diagnostics period
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
    return summarise(frames, diag, published, memory, minutes, rate, warmup_s)


def summarise(frames, diag, published, memory, minutes, rate, warmup_s) -> dict:
    t0 = published[0] if published else 0
    per_minute = []
    for m in range(int(np.ceil(minutes))):
        lo, hi = t0 + m * 60_000_000_000, t0 + (m + 1) * 60_000_000_000
        pubs = sum(lo <= t < hi for t in published)
        lat = np.array([lat for t, lat in frames if lo <= t < hi])
        span = min(60.0, (published[-1] - lo) / 1e9) if published else 60.0
        rss = [r for s, r in memory if m * 60 <= s < (m + 1) * 60]
        per_minute.append({
            "minute": m + 1, "published": pubs, "outputs": int(lat.size),
            "output_rate_hz": lat.size / span if span > 0 else float("nan"),
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "rss_mb": float(np.nanmax(rss)) if rss else float("nan")})
    lat = np.array([lat for _, lat in frames])
    after = [(s, r) for s, r in memory if s >= warmup_s and np.isfinite(r)]
    slope = float(np.polyfit([s for s, _ in after], [r for _, r in after], 1)[0] * 60) \
        if len(after) >= 3 else float("nan")
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
        "rss_mb": {"start": memory[0][1] if memory else None, "after_warmup": warm,
                   "end": final, "growth_after_warmup": final - warm,
                   "slope_mb_per_min_after_warmup": slope,
                   "max": float(np.nanmax([r for _, r in memory])) if memory else None},
        "warmup_s": warmup_s, "per_minute": per_minute,
    }


def markdown(r: dict, cmd: str, machine: str) -> str:
    mem, lat = r["rss_mb"], r["latency_ms"]
    rows = "\n".join(
        f"| {p['minute']} | {p['published']} | {p['outputs']} | {p['output_rate_hz']:.1f} | "
        f"{p['latency_p50_ms']:.1f} | {p['latency_p99_ms']:.1f} | {p['rss_mb']:.1f} |"
        for p in r["per_minute"])
    return f"""{MARK_START}
## Soak

`benchmarks/node_soak.py` (inside `scripts/ros_isolated`, DDS on loopback only): a camera
process publishes `rgb8` frames at a fixed rate with sensor-data QoS to the `perception_node`
console script (its own process, default parameters), and subscribes to all five image
outputs as rviz would; the node's resident memory (VmRSS) is sampled every few seconds.
Latency = output received (middleware receive time) - the frame's header stamp (its publish
time), all five outputs in.

{machine}

```bash
{cmd}
```

| | |
|---|---|
| duration, camera rate | {r['minutes']:g} min at {r['rate_hz']:g} Hz ({r['published']} frames, measured {r['input_rate_hz']:.1f} Hz) |
| frames with all outputs received | {r['outputs']} ({r['output_rate_hz']:.1f} Hz); node: {r['node_received_frames']} received, {r['node_processed_frames']} processed, {r['node_dropped_frames']} dropped (a newer frame arrived first) |
| latency p50 / p90 / p99 / max | {lat.get('p50', float('nan')):.1f} / {lat.get('p90', float('nan')):.1f} / {lat.get('p99', float('nan')):.1f} / {lat.get('max', float('nan')):.1f} ms (backend median {r['node_inference_median_ms']} ms) |
| node memory (RSS) | {mem['start']:.1f} MiB at start, {mem['after_warmup']:.1f} MiB after {r['warmup_s']:g} s warm-up, {mem['end']:.1f} MiB at the end, max {mem['max']:.1f} MiB |
| **growth after warm-up** | **{mem['growth_after_warmup']:+.1f} MiB** (slope {mem['slope_mb_per_min_after_warmup']:+.2f} MiB/min) |

| minute | published | outputs | output rate (Hz) | latency p50 (ms) | latency p99 (ms) | node RSS (MiB) |
|---:|---:|---:|---:|---:|---:|---:|
{rows}

{NOTES}
{MARK_END}"""


def write_section(path: Path, text: str) -> None:
    """Replace the soak section of ``path`` (between the markers), or append it."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if MARK_START in old and MARK_END in old:
        head, rest = old.split(MARK_START, 1)
        new = head + text + rest.split(MARK_END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    from mbmt_ros.io import atomic_write_text

    atomic_write_text(path, new)


def _shown_args(argv: list[str]) -> list[str]:
    """The command-line arguments worth showing in the doc (not where the outputs went)."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--json", "--markdown", "--machine"):
            skip = True
            continue
        if not arg.startswith(("--json=", "--markdown=", "--machine=")):
            shown.append(arg)
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", type=Path, help="an exported model bundle")
    src.add_argument("--export", type=Path, metavar="CONFIG",
                     help="export a random-weight model of this training config first")
    parser.add_argument("--size", type=int, nargs=2, default=(288, 384), metavar=("H", "W"))
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling period")
    parser.add_argument("--warmup-seconds", type=float, default=60.0,
                        help="memory growth is measured after this (default 60)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "node_soak.json")
    parser.add_argument("--markdown", type=Path, help="replace the Soak section of this file")
    parser.add_argument("--machine", default="", help="a line describing the machine for the doc")
    args = parser.parse_args(argv)
    if os.environ.get("MBMT_NETNS") != "1":  # DDS stays on loopback
        os.execv(str(ROOT / "scripts" / "ros_isolated"),
                 [str(ROOT / "scripts" / "ros_isolated"), sys.executable, __file__,
                  *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            sys.path.insert(0, str(Path(__file__).parent))
            from node_latency import export_random_bundle

            bundle = export_random_bundle(args.export, tuple(args.size), Path(tmp) / "bundle")
        result = soak(bundle, args.minutes, args.rate, tuple(args.size), args.backend,
                      args.device, args.precision, args.sample_seconds,
                      min(args.warmup_seconds, args.minutes * 60 / 2), Path(tmp) / "node.log")
    result["bundle"] = str(args.bundle or args.export)
    result["size"] = list(args.size)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    cmd = "scripts/ros_isolated .venv/bin/python benchmarks/node_soak.py " + " ".join(
        _shown_args(sys.argv[1:] if argv is None else argv))
    text = markdown(result, cmd, args.machine)
    print(text)
    if args.markdown:
        write_section(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
