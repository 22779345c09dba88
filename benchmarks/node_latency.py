"""The perception node's own overhead, per frame, from stamps taken inside the node.

For each model (``tiny``: ``config/train/model_tiny.yaml``; ``paper``: the paper's MBMT-Net,
``config/train/nyuv2_mbmt.yaml``; random weights - timing does not depend on them) this
exports a bundle at the camera size, starts the ``perception_node`` console script (its own
process) and publishes camera-sized ``rgb8`` frames one at a time from a client process that
subscribes to all five image outputs. The node stamps every frame (receipt, taken by the
inference thread, converted, predict start / end, outputs built, last publish returned) and
reports the p50/p99 of each segment over its last ``diagnostics_window`` frames in
/diagnostics; the window is set to the number of measured frames, so the figures cover
exactly those frames. **Overhead** = (receipt -> last publish - predict) / predict, per
frame, p50 and p99: both terms come from the same frames in the same process, so load from
other processes on a shared machine affects both alike. The client's end-to-end time
(publish -> all five outputs received, another process, DDS both ways) is kept beside it.

DDS must stay on loopback, so this refuses to run outside ``scripts/ros_isolated``::

    scripts/ros_isolated .venv/bin/python benchmarks/node_latency.py            # tiny + paper, CPU
    scripts/ros_isolated .venv/bin/python benchmarks/node_latency.py --device cuda --backend auto
    .venv/bin/python benchmarks/node_latency.py --render     # docs from the committed JSON only

The raw figures (with the command and the git commit) go to
``benchmarks/results/node_latency.json``; the tables in ``docs/benchmarks.md`` and
``docs/node.md`` are rendered from that file between ``node-latency`` markers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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

BIN = Path(sys.executable).parent
IMAGE_TOPICS = ("segmentation", "segmentation/color", "depth", "normals", "normals/color")
MODELS = {"tiny": ROOT / "config" / "train" / "model_tiny.yaml",
          "paper": ROOT / "config" / "train" / "nyuv2_mbmt.yaml"}
LABELS = {"tiny": "tiny (`model_tiny.yaml`, 3x `test_efficientnet`)",
          "paper": "MBMT-Net as in the paper (`nyuv2_mbmt.yaml`, 3x EfficientNet-B2)"}
RESULTS = ROOT / "benchmarks" / "results" / "node_latency.json"
DOCS = {ROOT / "docs" / "benchmarks.md": "benchmarks", ROOT / "docs" / "node.md": "node"}
BEGIN, END = "<!-- node-latency:begin -->", "<!-- node-latency:end -->"


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
        self.diagnostics: dict[str, str] = {}
        for topic in IMAGE_TOPICS:
            self.node.create_subscription(Image, f"/perception_node/{topic}",
                                          lambda m, t=topic: self._on_output(t, m), 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_output(self, topic: str, msg: Any) -> None:
        key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.arrivals.setdefault(key, {})[topic] = time.time()

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == "perception_node: perception":
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}

    def diag(self) -> dict[str, str]:
        with self.lock:
            return dict(self.diagnostics)

    def complete(self, key: int) -> float | None:
        with self.lock:
            got = self.arrivals.get(key, {})
            return max(got.values()) if len(got) == len(IMAGE_TOPICS) else None

    def publish(self, msg: Any) -> int:
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        self.pub.publish(msg)
        return now

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown()


def _wait(condition: Any, timeout: float, what: str, proc: subprocess.Popen, log: Any) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline or proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{what} (node log:)\n{log.read()[-3000:]}")
        time.sleep(0.002)
    return value


def measure_node(bundle: Path, backend: str, precision: str, device: str, image: np.ndarray,
                 frames: int, num_threads: int) -> dict[str, Any]:
    """Start the node, send ``frames`` frames one at a time; the node's timing of exactly
    those frames (its /diagnostics) and the client's end-to-end times."""
    from mbmt_ros.ros.image_conversions import numpy_to_image

    log = tempfile.TemporaryFile(mode="w+")
    params = {"bundle": bundle, "backend": backend, "precision": precision, "device": device,
              "num_threads": num_threads, "qos.input": "reliable", "diagnostics_period": 0.3,
              "diagnostics_window": frames}
    proc = subprocess.Popen(
        [str(BIN / "perception_node"), "--ros-args", "-r", "image:=/camera/image_raw",
         *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")]],
        stdout=subprocess.DEVNULL, stderr=log)
    client = Client()
    msg = numpy_to_image(image, "rgb8")
    try:
        sent = [client.publish(msg)]

        def up() -> bool:  # the node is configured, warmed up and matched with every output
            if any(client.complete(k) for k in sent):
                return True
            if time.time_ns() - sent[-1] > 500_000_000:
                sent.append(client.publish(msg))
            return False

        _wait(up, 300, "the perception node did not come up", proc, log)
        for _ in range(2):  # warm-up frames, one at a time
            key = client.publish(msg)
            _wait(lambda key=key: client.complete(key), 120, "no outputs", proc, log)
        time.sleep(0.5)
        before = int(_wait(client.diag, 10, "no /diagnostics", proc, log)["processed_frames"])
        e2e = []
        for _ in range(frames):
            key = client.publish(msg)
            done = _wait(lambda key=key: client.complete(key), 120, "no outputs", proc, log)
            e2e.append(1e3 * (done - key / 1e9))
        diag = _wait(lambda: (d := client.diag()) and int(d["processed_frames"]) >= before + frames
                     and d, 10, "no /diagnostics after the frames", proc, log)
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
    if int(diag["processed_frames"]) != before + frames or int(diag["timing_frames"]) != frames:
        raise RuntimeError(f"the node processed other frames than the measured ones: {diag}")
    return {"diagnostics": diag, "e2e_ms": e2e}


def machine() -> dict[str, Any]:
    import onnxruntime

    return {"cpu": cpu_model() or platform.machine(), "cpu_count": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "load_avg_1min_start": round(os.getloadavg()[0], 2)}


# ------------------------------------------------------------------ rendering (JSON -> docs)
def _f(diag: dict[str, str], key: str) -> float:
    return float(diag.get(key, "nan"))


def _pair(diag: dict[str, str], name: str, unit: str = "ms") -> str:
    return f"{_f(diag, f'{name}_p50_{unit}'):.1f} / {_f(diag, f'{name}_p99_{unit}'):.1f}"


def render(data: dict[str, Any]) -> dict[str, str]:
    """The Markdown blocks of docs/benchmarks.md (full table) and docs/node.md (summary)."""
    m, st = data["machine"], data["settings"]
    caption = (
        f"Measured {data['date_utc']} by `benchmarks/node_latency.py` at commit "
        f"`{data['git_commit'][:12]}`{' (uncommitted changes)' if data.get('git_dirty') else ''}: "
        f"`{data['command']}`. {m['cpu']}, {m['cpu_count']} logical CPUs, node device `{st['device']}`; Python "
        f"{m['python']}, ONNX Runtime {m['onnxruntime']}. **A shared machine under load** "
        f"(1-minute load average {m['load_avg_1min_start']} at the start, "
        f"{m.get('load_avg_1min_end', '?')} at the end; other jobs ran on the same cores), a "
        f"small budget ({st['frames']} frames per model, one in flight at a time, "
        f"{st['size'][0]}x{st['size'][1]} `rgb8`, random weights): absolute times are "
        "pessimistic and noisy; the overhead compares figures of the same frames.")
    head = ("| model | backend, device, precision | predict p50 / p99 (ms) | receipt -> last "
            "publish p50 / p99 (ms) | queue | convert | build outputs | publish | **overhead "
            "p50 / p99** | end-to-end p50 (ms) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows, lines = [], []
    for r in data["results"]:
        d = r["diagnostics"]
        run = f"{d['backend']}, {d['device']}, {d['precision']}"
        over = f"{_f(d, 'overhead_p50_pct'):+.1f} % / {_f(d, 'overhead_p99_pct'):+.1f} %"
        rows.append(f"| {LABELS.get(r['model'], r['model'])} | {run} | {_pair(d, 'predict')} | "
                    f"{_pair(d, 'total')} | {_f(d, 'queue_p50_ms'):.1f} | {_f(d, 'convert_p50_ms'):.1f} | "
                    f"{_f(d, 'build_p50_ms'):.1f} | {_f(d, 'publish_p50_ms'):.1f} | **{over}** | "
                    f"{statistics.median(r['e2e_ms']):.1f} |")
        lines.append(f"- {LABELS.get(r['model'], r['model'])}, {run}: the node adds "
                     f"**{_f(d, 'overhead_p50_pct'):.1f} %** (p50; p99 "
                     f"{_f(d, 'overhead_p99_pct'):.1f} %) to a predict of "
                     f"{_f(d, 'predict_p50_ms'):.1f} ms (p50).")
    note = ("Segments (p50, ms) are the node's own stamps: queue = receipt -> taken by the "
            "inference thread, convert = to RGB, build outputs = the five messages incl. colour "
            "images, publish = until the last `publish` returned. End-to-end = the client's "
            "publish -> all five outputs received (another process; DDS both ways).")
    table = "\n".join([caption, "", head, *rows, "", note])
    summary = "\n".join([f"Measured by `benchmarks/node_latency.py` ({data['date_utc']}, commit "
                         f"`{data['git_commit'][:12]}`, a shared loaded {m['cpu_count']}-CPU "
                         f"machine, {st['size'][0]}x{st['size'][1]}; table and method in "
                         "[benchmarks.md](benchmarks.md#node)):", "", *lines])
    return {"benchmarks": table, "node": summary}


def write_docs(data: dict[str, Any]) -> None:
    from mbmt_ros.io import atomic_write_text

    blocks = render(data)
    for path, key in DOCS.items():
        text = path.read_text(encoding="utf-8")
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{path}: no {BEGIN} ... {END} markers to write between")
        head, rest = text.split(BEGIN, 1)
        atomic_write_text(path, f"{head}{BEGIN}\n{blocks[key]}\n{END}{rest.split(END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "paper"])
    parser.add_argument("--bundle", type=Path, help="measure this bundle instead (model 'bundle')")
    parser.add_argument("--size", type=int, nargs=2, default=(288, 384), metavar=("H", "W"),
                        help="camera image size, also the export size (default 288 384)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--num-threads", type=int, default=0, help="node num_threads (0: default)")
    parser.add_argument("--frames", type=int, default=20, help="measured frames per model (default 20)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--no-docs", action="store_true", help="do not touch the docs")
    parser.add_argument("--render", action="store_true",
                        help="only render the docs from --json (no measurement)")
    args = parser.parse_args(argv)
    if args.render:
        write_docs(json.loads(args.json.read_text(encoding="utf-8")))
        return 0
    if os.environ.get("MBMT_NETNS") != "1":
        parser.error("run inside scripts/ros_isolated so that DDS stays on loopback")
    if args.frames < 10:
        parser.error("--frames must be at least 10 (the node's smallest diagnostics_window)")

    data: dict[str, Any] = {
        "command": " ".join(["scripts/ros_isolated .venv/bin/python benchmarks/node_latency.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "settings": {"size": list(args.size), "frames": args.frames, "backend": args.backend,
                     "device": args.device, "precision": args.precision,
                     "num_threads": args.num_threads},
        "results": []}
    image = np.random.default_rng(0).integers(0, 256, (*args.size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {"bundle": args.bundle} if args.bundle else {
            m: None for m in args.models}
        for model, bundle in jobs.items():
            started = time.monotonic()
            bundle = bundle or export_random_bundle(MODELS[model], tuple(args.size), Path(tmp) / model)
            result = measure_node(bundle, args.backend, args.precision, args.device, image,
                                  args.frames, args.num_threads)
            data["results"].append({"model": model, "config": str(MODELS.get(model, bundle)),
                                    **result, "wall_s": round(time.monotonic() - started, 1)})
            d = result["diagnostics"]
            print(f"{model}: predict p50 {d['predict_p50_ms']} ms, total p50 {d['total_p50_ms']} ms, "
                  f"overhead p50 {d['overhead_p50_pct']} % p99 {d['overhead_p99_pct']} %", flush=True)
    data["machine"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    from mbmt_ros.io import atomic_write_json

    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, data)
    print(render(data)["benchmarks"])
    if not args.no_docs and not args.bundle:
        write_docs(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
