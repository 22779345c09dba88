"""Perception-node latency and throughput through DDS, per available backend.

For each backend this measures, on camera-sized RGB images:

1. ``direct``: ``Predictor.predict`` called in a loop (the backend alone);
2. ``node``: the node's own latency, header.stamp -> every output published (its
   /diagnostics median), one frame in flight at a time;
3. ``end-to-end``: publish -> all five image outputs received by a subscriber in another
   process (DDS transport and deserialisation included);
4. ``max rate``: outputs per second while a camera publishes faster than the node can go.

The node overhead is ``(node - predict) / predict`` with both taken inside the node process
over the same frames (the node reports its backend time as ``inference_median_ms`` in
/diagnostics), so load from other processes on a shared machine affects both alike; the
direct figure of step 1 is printed beside it. The goal is under 15 % at 288x384 on CPU.
The node runs as the ``perception_node`` console script (its own process); DDS must stay on
loopback, so this script refuses to run outside ``scripts/ros_isolated``:

    scripts/ros_isolated .venv/bin/python benchmarks/node_latency.py --bundle BUNDLE_DIR
    scripts/ros_isolated .venv/bin/python benchmarks/node_latency.py \
        --export config/train/nyuv2_mbmt.yaml --size 288 384 --markdown docs/node_latency.md

``--export CONFIG`` exports a random-weight model of CONFIG's ``model:`` section first
(timing does not depend on the weights). Results are printed as a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGE_TOPICS = ("segmentation", "segmentation/color", "depth", "normals", "normals/color")


def export_random_bundle(config: Path, size: tuple[int, int], out: Path) -> Path:
    """Export a random-weight model of ``config`` (a training YAML) at ``size``."""
    import yaml

    from mbmt_ros.models import build_model, save_model

    model_cfg = yaml.safe_load(config.read_text())["model"]
    ckpt = out.parent / f"{out.name}.safetensors"
    save_model(ckpt, build_model(model_cfg, load_weights=False))
    subprocess.run([str(BIN / "mbmt-train"), "export", "--ckpt", str(ckpt), "--out", str(out),
                    "--input-size", str(size[0]), str(size[1]), "--no-fp16", "--overwrite"],
                   check=True, capture_output=True)
    return out


def available_backends(device: str) -> list[str]:
    from mbmt_ros.runtime import backend_availability

    return [name for name, why in backend_availability(device).items() if why is None]


def time_direct(bundle: Path, backend: str, precision: str, device: str, image: np.ndarray,
                repeats: int) -> float:
    """Median milliseconds of ``predict`` (after two warm-up calls)."""
    from mbmt_ros.runtime import open_predictor

    with open_predictor(str(bundle), backend=backend, precision=precision, device=device) as p:
        for _ in range(2):
            p.predict(image)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            p.predict(image)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


class Client:
    """Publishes frames and records when each stamp has arrived on every output."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        rclpy.init()
        self.node = rclpy.create_node("node_latency_client")
        self.pub = self.node.create_publisher(Image, "/camera/image_raw", 10)
        self.lock = threading.Lock()
        self.arrivals: dict[int, dict[str, float]] = {}
        self.diag_medians: list[tuple[float, float]] = []  # (latency, inference) per period
        for topic in IMAGE_TOPICS:
            self.node.create_subscription(Image, f"/perception_node/{topic}",
                                          lambda m, t=topic: self._on_output(t, m), 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_output(self, topic: str, msg) -> None:
        key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.arrivals.setdefault(key, {})[topic] = time.time()

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            median = float(values.get("latency_median_ms", "nan"))
            inference = float(values.get("inference_median_ms", "nan"))
            if status.name.endswith(": perception") and median == median:
                self.diag_medians.append((median, inference))

    def complete(self, key: int) -> float | None:
        with self.lock:
            got = self.arrivals.get(key, {})
            return max(got.values()) if len(got) == len(IMAGE_TOPICS) else None

    def publish(self, msg) -> int:
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        self.pub.publish(msg)
        return now

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown()


def measure_node(bundle: Path, backend: str, precision: str, device: str, image: np.ndarray,
                 frames: int, flood_seconds: float) -> dict[str, float]:
    """Start the node, then measure sequential latency and the flooded output rate."""
    from mbmt_ros.ros.image_conversions import numpy_to_image

    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [str(BIN / "perception_node"), "--ros-args", "-p", f"bundle:={bundle}",
         "-p", f"backend:={backend}", "-p", f"precision:={precision}", "-p", f"device:={device}",
         "-p", "qos.input:=reliable", "-r", "image:=/camera/image_raw"],
        stdout=subprocess.DEVNULL, stderr=log)
    client = Client()
    msg = numpy_to_image(image, "rgb8")
    try:
        deadline = time.monotonic() + 120
        sent = [client.publish(msg)]
        while not any(client.complete(k) for k in sent):  # until the node is up and matched
            if time.monotonic() > deadline or proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the perception node did not come up:\n{log.read()}")
            time.sleep(0.5)
            sent.append(client.publish(msg))
        time.sleep(0.5)
        client.diag_medians.clear()
        e2e = []
        for _ in range(frames):
            key = client.publish(msg)
            while (done := client.complete(key)) is None:
                time.sleep(0.0005)
            e2e.append(1e3 * (done - key / 1e9))
        time.sleep(1.2)  # the diagnostics period covering the sequential frames
        node_medians = list(client.diag_medians)
        start_count = len(client.arrivals)
        start = time.monotonic()
        while time.monotonic() - start < flood_seconds:  # a camera faster than the node
            client.publish(msg)
            time.sleep(0.002)
        time.sleep(0.5)
        rate = (len(client.arrivals) - start_count) / (time.monotonic() - start)
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
    if not node_medians:
        raise RuntimeError("no /diagnostics from the node during the sequential frames")
    return {"e2e_ms": statistics.median(e2e),
            "node_ms": statistics.median(m for m, _ in node_medians),
            "inference_ms": statistics.median(i for _, i in node_medians),
            "rate_hz": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", type=Path, help="an exported model bundle")
    src.add_argument("--export", type=Path, metavar="CONFIG",
                     help="export a random-weight model of this training config first")
    parser.add_argument("--size", type=int, nargs=2, default=(288, 384), metavar=("H", "W"),
                        help="camera image size, also the export size (default 288 384)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backends", nargs="+", help="default: every available backend")
    parser.add_argument("--frames", type=int, default=30, help="sequential frames (default 30)")
    parser.add_argument("--flood-seconds", type=float, default=5.0)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if os.environ.get("MBMT_NETNS") != "1":
        parser.error("run inside scripts/ros_isolated so that DDS stays on loopback")

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or export_random_bundle(args.export, tuple(args.size), Path(tmp) / "bundle")
        image = np.random.default_rng(0).integers(0, 256, (*args.size, 3), dtype=np.uint8)
        rows = []
        for backend in args.backends or available_backends(args.device):
            direct = time_direct(bundle, backend, args.precision, args.device, image, args.frames)
            node = measure_node(bundle, backend, args.precision, args.device, image, args.frames,
                                args.flood_seconds)
            overhead = 100 * (node["node_ms"] - node["inference_ms"]) / node["inference_ms"]
            rows.append(f"| {backend} | {args.device} | {args.size[0]}x{args.size[1]} | {direct:.1f} "
                        f"| {node['inference_ms']:.1f} | {node['node_ms']:.1f} | {overhead:+.1f} % "
                        f"| {node['e2e_ms']:.1f} | {node['rate_hz']:.1f} | {1e3 / direct:.1f} |")
            print(rows[-1], flush=True)
    table = "\n".join([
        f"bundle: {args.bundle or args.export} ({args.precision})",
        "",
        "| backend | device | image | direct predict (ms) | predict inside the node (ms) "
        "| node: stamp -> all published (ms) | node overhead | end-to-end: all outputs received (ms) "
        "| max sustained rate (Hz) | direct rate (Hz) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows])
    print(table)
    if args.markdown:
        from mbmt_ros.io import atomic_write_text

        atomic_write_text(args.markdown, table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
