"""The perception node's timing: its own overhead, end-to-end delivery to another process
(with and without the shipped Fast DDS profile) and the throughput of its predict/publish
overlap.

Three measurements, each with the ``perception_node`` console script in its own process and
a client process that publishes camera-sized ``rgb8`` frames (stamped with the wall clock)
and subscribes to the node's outputs:

- **delivery** (``tiny``: ``config/train/model_tiny.yaml``; ``paper``: the paper's MBMT-Net,
  ``config/train/nyuv2_mbmt.yaml``; random weights - timing does not depend on them): one
  frame at a time, ``--frames`` frames, at each ``--sizes`` (the bundle is exported at that
  size), with the raw outputs (``~/segmentation``, ``~/depth``, ``~/normals``) and with every
  output (the colour images and ``~/points``), with the node started as the launch file
  starts it (``shipped``: :func:`mbmt_ros.dds_profile.node_transport_env`, the profile and
  asynchronous publishing), the same with synchronous publishing (``shipped-sync``) and with
  Fast DDS's defaults (``none``). The node stamps each frame (receipt, taken, converted,
  predict start / end, built, last publish) and reports p50/p99 over exactly the measured
  frames (``diagnostics_window`` = frames); **overhead** = receipt -> last publish - predict
  per frame, in ms and percent. **End-to-end** = the client's publish -> the last subscribed
  output received (another process, DDS both ways): p50, p99, max, against predict; the
  node's ``input_delay`` (stamp -> receipt) splits off the camera's share. The client (camera
  and consumer) runs on Fast DDS's defaults; ``--camera-rows`` sizes are measured again with
  the client on the shipped profile too, in a child process.
- **overlap**: a camera faster than the backend (``--camera-factor`` x 1000/P Hz) for
  ``--overlap-seconds``, every output subscribed: frames per second the client receives,
  against 1000/P, and the CPU cores the node and the client used; with a test double of fixed
  latency (``--sleep-ms``: the first frame's real outputs, returned after sleeping P) and with
  ONNX Runtime (tiny model at each ``--overlap-threads``, P = its predict p50).

A run refuses to start when the 1-minute load average is above ``--max-load`` (1.0): the
figures are for an idle machine; the load is recorded before and after. DDS must stay on
loopback, so this refuses to run outside ``scripts/ros_isolated``::

    scripts/ros_isolated .venv/bin/python benchmarks/node_latency.py            # everything, ~10 min
    scripts/ros_isolated .venv/bin/python benchmarks/node_latency.py --smoke --ignore-load --json /tmp/n.json --no-docs
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
RAW_TOPICS = ("segmentation", "depth", "normals")
ALL_TOPICS = (*IMAGE_TOPICS, "points")
OUTPUT_SETS = {"raw": RAW_TOPICS, "all": ALL_TOPICS}
MODELS = {"tiny": ROOT / "config" / "train" / "model_tiny.yaml",
          "paper": ROOT / "config" / "train" / "nyuv2_mbmt.yaml"}
LABELS = {"tiny": "tiny (`model_tiny.yaml`, 3x `test_efficientnet`)",
          "paper": "MBMT-Net as in the paper (`nyuv2_mbmt.yaml`, 3x EfficientNet-B2)"}
RESULTS = ROOT / "benchmarks" / "results" / "node_latency.json"
DOCS = {ROOT / "docs" / "benchmarks.md": "benchmarks", ROOT / "docs" / "node.md": "node"}
BEGIN, END = "<!-- node-latency:begin -->", "<!-- node-latency:end -->"
#: Fast DDS's default shared-memory segment (KiB), which a camera without a profile publishes into
DEFAULT_SHM_KIB = 512


def export_random_bundle(config: Path, size: tuple[int, int], out: Path) -> Path:
    """Export a random-weight model of ``config`` (a training YAML) at ``size``."""
    from mbmt_ros.models import build_model, save_model
    from training.config import read_config

    model_cfg = read_config(config)["model"]
    ckpt = out.parent / f"{out.name}.safetensors"
    save_model(ckpt, build_model(model_cfg, load_weights=False))
    subprocess.run([str(BIN / "mbmt-train"), "export", "--ckpt", str(ckpt), "--out", str(out),
                    "--input-size", str(size[0]), str(size[1]), "--no-fp16", "--overwrite"],
                   check=True, capture_output=True)
    return out


class Client:
    """Publishes frames (and camera_info) and records when each stamp has arrived on every
    subscribed output (wall clock, the stamps' clock)."""

    def __init__(self, topics: tuple[str, ...]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        rclpy.init()
        self.topics = topics
        self.node = rclpy.create_node("node_latency_client")
        self.pub = self.node.create_publisher(Image, "/camera/image_raw", 10)
        self.info_pub = self.node.create_publisher(CameraInfo, "/camera/camera_info", 10)
        self.lock = threading.Lock()
        self.arrivals: dict[int, dict[str, float]] = {}
        self.diagnostics: dict[str, str] = {}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # as rviz subscribes
        self.subs = [self.node.create_subscription(
            PointCloud2 if topic == "points" else Image, f"/perception_node/{topic}",
            lambda m, t=topic: self._on_output(t, m), qos) for topic in topics]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_output(self, topic: str, msg: Any) -> None:
        now = time.time()
        key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.arrivals.setdefault(key, {})[topic] = now

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
            return max(got.values()) if len(got) == len(self.topics) else None

    def completed(self) -> list[tuple[int, float]]:
        """(stamp ns, arrival of its last output) of every frame with all outputs in."""
        with self.lock:
            return sorted((k, max(v.values())) for k, v in self.arrivals.items()
                          if len(v) == len(self.topics))

    def publish(self, msg: Any, info: Any = None) -> int:
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        if info is not None:
            info.header.stamp = msg.header.stamp
            self.info_pub.publish(info)
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
            raise RuntimeError(f"{what} (node log:)\\n{log.read()[-3000:]}")
        time.sleep(0.002)
    return value


def _camera_info(size: tuple[int, int]) -> Any:
    from sensor_msgs.msg import CameraInfo

    h, w = size
    info = CameraInfo(width=w, height=h)
    info.k = [0.8 * w, 0.0, w / 2, 0.0, 0.8 * w, h / 2, 0.0, 0.0, 1.0]
    return info


class NodeRun:
    """The node in its own process (the console script, or the fixed-latency double with
    ``sleep_ms``) and a :class:`Client`, ready once every output has arrived once."""

    def __init__(self, bundle: Path, opts: argparse.Namespace, topics: tuple[str, ...],
                 env: dict[str, str], image: np.ndarray, window: int,
                 sleep_ms: float | None = None) -> None:
        from mbmt_ros.ros.image_messages import numpy_to_image

        self.log = tempfile.TemporaryFile(mode="w+")
        params = {"bundle": bundle, "backend": opts.backend, "precision": opts.precision,
                  "device": opts.device, "num_threads": opts.num_threads,
                  "qos.input": "reliable", "diagnostics_period": 0.3,
                  "diagnostics_window": window, "pointcloud": "points" in topics}
        ros_args = ["--ros-args", "-r", "image:=/camera/image_raw",
                    "-r", "camera_info:=/camera/camera_info",
                    *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")]]
        cmd = ([sys.executable, __file__, "--sleeping-node", str(sleep_ms), *ros_args]
               if sleep_ms is not None else [str(BIN / "perception_node"), *ros_args])
        from mbmt_ros.dds_profile import PROFILE_ENV

        base = {k: v for k, v in os.environ.items() if k not in PROFILE_ENV}  # only `env`'s
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**base, **env})
        self.client = Client(topics)
        self.msg = numpy_to_image(image, "rgb8")
        self.info = _camera_info(image.shape[:2]) if "points" in topics else None
        sent = [self.client.publish(self.msg, self.info)]

        def up() -> bool:  # the node is configured, warmed up and matched with every output
            if any(self.client.complete(k) for k in sent):
                return True
            if time.time_ns() - sent[-1] > 500_000_000:
                sent.append(self.client.publish(self.msg, self.info))
            return False

        try:
            self.wait(up, 300, "the perception node did not come up")
            for _ in range(2):  # warm-up frames, one at a time
                self.one_frame()
        except BaseException:
            self.close()
            raise

    def wait(self, condition: Any, timeout: float, what: str) -> Any:
        return _wait(condition, timeout, what, self.proc, self.log)

    def one_frame(self) -> float:
        """Publish a frame, wait for all its outputs; end-to-end milliseconds."""
        key = self.client.publish(self.msg, self.info)
        done = self.wait(lambda: self.client.complete(key), 120, "no outputs")
        return 1e3 * (done - key / 1e9)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure_delivery(bundle: Path, opts: argparse.Namespace, image: np.ndarray,
                     topics: tuple[str, ...], env: dict[str, str]) -> dict[str, Any]:
    """``opts.frames`` frames one at a time: the node's timing of exactly those frames (its
    /diagnostics) and the client's end-to-end times."""
    run = NodeRun(bundle, opts, topics, env, image, opts.frames)
    try:
        time.sleep(0.5)
        before = int(run.wait(run.client.diag, 10, "no /diagnostics")["processed_frames"])
        e2e = [run.one_frame() for _ in range(opts.frames)]
        diag = run.wait(lambda: (d := run.client.diag())
                        and int(d["processed_frames"]) >= before + opts.frames and d,
                        10, "no /diagnostics after the frames")
    finally:
        run.close()
    if int(diag["processed_frames"]) != before + opts.frames or int(diag["timing_frames"]) != opts.frames:
        raise RuntimeError(f"the node processed other frames than the measured ones: {diag}")
    return {"diagnostics": diag, "e2e_ms": e2e}


def measure_overlap(bundle: Path, opts: argparse.Namespace, image: np.ndarray,
                    env: dict[str, str], sleep_ms: float | None) -> dict[str, Any]:
    """A camera at ``opts.camera_factor`` x the backend's rate for ``opts.overlap_seconds``,
    every output subscribed: the rate of complete frames at the client against 1000/P."""
    run = NodeRun(bundle, opts, ALL_TOPICS, env, image, 1000, sleep_ms)
    try:
        predict_ms = sleep_ms
        if predict_ms is None:  # the real backend: its predict time from a few frames
            for _ in range(5):
                run.one_frame()
            time.sleep(0.5)
            predict_ms = float(run.wait(run.client.diag, 10, "no /diagnostics")["predict_p50_ms"])
        rate = opts.camera_factor * 1000.0 / predict_ms
        cpu_before = (_process_cpu_s(run.proc.pid), time.process_time())
        start = time.monotonic()
        first_ns = time.time_ns()
        i = 0
        while time.monotonic() < start + opts.overlap_seconds:
            run.client.publish(run.msg, run.info)
            i += 1
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
        wall = time.monotonic() - start
        cpu = (_process_cpu_s(run.proc.pid) - cpu_before[0], time.process_time() - cpu_before[1])
        time.sleep(1.0)
        done = [arrival for stamp, arrival in run.client.completed() if stamp >= first_ns]
        diag = run.client.diag()
    finally:
        run.close()
    throughput = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 2 else float("nan")
    return {"backend": "sleep" if sleep_ms is not None else diag.get("backend", opts.backend),
            "num_threads": opts.num_threads,
            "predict_ms": predict_ms, "camera_hz": rate, "published": i,
            "frames_complete": len(done), "throughput_hz": throughput,
            "ideal_hz": 1000.0 / predict_ms, "ratio": throughput * predict_ms / 1000.0,
            "cpu_cores": {"node": cpu[0] / wall, "client": cpu[1] / wall},
            "diagnostics": diag}


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_sleeping_node(sleep_ms: float, ros_args: list[str]) -> int:
    """The perception node with a backend of fixed latency: the real predictor, sleeping to
    ``sleep_ms`` per predict (a test double for the overlap curve)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from mbmt_ros.ros.perception_node import PerceptionNode
    from mbmt_ros.runtime import open_predictor

    class FixedLatency:
        """Predicts the first frame with the real predictor (outputs of the right shapes and
        dtypes), then answers every frame with fresh copies of those outputs after sleeping
        ``sleep_ms``: a predict of known latency that leaves the CPU to the rest of the node
        (running the model as well would make P = max(sleep, the model's own time))."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self._outputs: dict[str, np.ndarray] | None = None
            for name in ("backend", "precision", "tasks", "device", "bundle", "class_names", "palette"):
                setattr(self, name, getattr(inner, name))

        def predict(self, image: np.ndarray) -> Any:
            start = time.monotonic()
            if self._outputs is None:
                self._outputs = self._inner.predict(image)
            out = {k: np.array(v, copy=True) for k, v in self._outputs.items()}
            time.sleep(max(0.0, sleep_ms / 1e3 - (time.monotonic() - start)))
            return out

        def close(self) -> None:
            self._inner.close()

    def factory(bundle: str, backend: str, precision: str, device: str, **options: Any) -> Any:
        return FixedLatency(open_predictor(bundle, backend=backend, precision=precision,
                                           device=device, **options))

    rclpy.init(args=["sleeping_node", *ros_args])
    node = PerceptionNode(predictor_factory=factory)
    try:
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if not node.autostart():
            return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def machine() -> dict[str, Any]:
    import onnxruntime

    return {"cpu": cpu_model() or platform.machine(), "cpu_count": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "rmw_implementation": os.environ.get("RMW_IMPLEMENTATION"),
            "load_avg_1min_start": round(os.getloadavg()[0], 2)}


# ------------------------------------------------------------------ rendering (JSON -> docs)
def _f(diag: dict[str, str], key: str) -> float:
    return float(diag.get(key, "nan"))


def _pair(diag: dict[str, str], name: str, unit: str = "ms") -> str:
    return f"{_f(diag, f'{name}_p50_{unit}'):.1f} / {_f(diag, f'{name}_p99_{unit}'):.1f}"


def _e2e(r: dict[str, Any]) -> dict[str, float]:
    e2e = np.asarray(r["e2e_ms"], dtype=float)
    return {"p50": float(np.percentile(e2e, 50)), "p99": float(np.percentile(e2e, 99)),
            "max": float(e2e.max())}


def _case(r: dict[str, Any], st: dict[str, Any]) -> tuple[str, str, str]:
    """(size, outputs, profile) of a result; runs before issue 18 lack the keys: their
    defaults (the run's size, the five image outputs, no profile). ``profile`` names the
    node's and, where recorded, the camera's (the client's) Fast DDS profile."""
    size = r.get("size") or st["size"]
    outputs = {"raw": "raw (3)", "all": "all (5 + cloud)"}.get(r.get("outputs", ""), "5 images")
    profile = {"shipped-sync": "shipped, synchronous publish"}.get(r.get("profile", "none"),
                                                                  r.get("profile", "none"))
    if "camera_profile" in r:
        profile = f"node {profile}, camera {r['camera_profile']}"
    return f"{size[0]}x{size[1]}", outputs, profile


def _late_p99(r: dict[str, Any]) -> float:
    """End-to-end p99 - predict p99 (ms): the on-time goal's figure."""
    return _e2e(r)["p99"] - _f(r["diagnostics"], "predict_p99_ms")


def _twin(data: dict[str, Any], r: dict[str, Any], **want: Any) -> dict[str, Any] | None:
    """The first result of the same model, size and output set as ``r`` whose keys have the
    values in ``want`` (``camera_profile`` missing reads ``default``), or None."""
    st = data["settings"]
    for other in data["results"]:
        if (other["model"] == r["model"] and _case(other, st)[:2] == _case(r, st)[:2]
                and all(other.get(k, "default" if k == "camera_profile" else None) == v
                        for k, v in want.items())):
            return other
    return None


def _split(r: dict[str, Any]) -> tuple[float, float]:
    """(camera -> node, node -> consumer) p50 ms: the node's ``input_delay`` p50 and what is
    left of the end-to-end p50 after it and the node's receipt -> last publish (p50s of
    different per-frame figures: an approximate split). NaN for runs without the figure."""
    d, e = r["diagnostics"], _e2e(r)
    into = _f(d, "input_delay_p50_ms")
    return into, e["p50"] - into - _f(d, "total_p50_ms")


#: Issue 18's goals: end-to-end p99 <= predict p99 + 10 ms and max <= predict p99 + 50 ms
#: (shipped profile); node overhead p50 <= 2 ms (raw outputs) / 6 ms (every output) at 288x384;
#: overlap ratio >= 0.9.
GOALS = {"e2e_p99_ms": 10.0, "e2e_max_ms": 50.0, "overhead_raw_ms": 2.0, "overhead_all_ms": 6.0,
         "overlap_ratio": 0.9}


def goal_lines(data: dict[str, Any]) -> list[str]:
    """One line per goal and measured row: the figure, the bound and met / not met."""
    st, lines = data["settings"], []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    for r in data["results"]:
        if r.get("profile") != "shipped":
            continue
        d, e = r["diagnostics"], _e2e(r)
        size, outputs, _ = _case(r, st)
        name = f"{r['model']} {size} {outputs}"
        if "camera_profile" in r:
            name += f", camera {r['camera_profile']}"
        late99, late_max = _late_p99(r), e["max"] - _f(d, "predict_p99_ms")
        lines.append(f"- on time, {name}: end-to-end p99 - predict p99 = {late99:+.1f} ms "
                     f"(goal <= {GOALS['e2e_p99_ms']:.0f}), max - predict p99 = {late_max:+.1f} ms "
                     f"(goal <= {GOALS['e2e_max_ms']:.0f}): "
                     f"{verdict(late99 <= GOALS['e2e_p99_ms'] and late_max <= GOALS['e2e_max_ms'])}")
        if size == "288x384" and "overhead_p50_ms" in d:
            bound = GOALS["overhead_raw_ms" if r.get("outputs") == "raw" else "overhead_all_ms"]
            over = _f(d, "overhead_p50_ms")
            lines.append(f"- node overhead, {name}: p50 {over:.1f} ms (goal <= {bound:.0f}): "
                         f"{verdict(over <= bound)}")
    for o in data.get("overlap") or []:
        lines.append(f"- overlap, {_overlap_name(o)} P {o['predict_ms']:.1f} ms: "
                     f"{o['ratio']:.2f} x 1000/P (goal >= {GOALS['overlap_ratio']}): "
                     f"{verdict(o['ratio'] >= GOALS['overlap_ratio'])}")
    return lines


def _overlap_name(o: dict[str, Any]) -> str:
    if o["backend"] == "sleep" or "num_threads" not in o:
        return o["backend"]
    threads = o["num_threads"]
    return f"{o['backend']} ({threads or 'default'} thread{'' if threads == 1 else 's'})"


def why_lines(data: dict[str, Any]) -> list[str]:
    """Where the missing milliseconds go, from the same rows: the camera's own shared-memory
    segment (rows measured with the camera on Fast DDS defaults and on the shipped profile),
    the publish segment's share of the node overhead, and the CPU the overlap runs used."""
    st, lines = data["settings"], []
    for r in data["results"]:
        if (r.get("profile"), r.get("camera_profile")) != ("shipped", "shipped"):
            continue
        b = _twin(data, r, profile="shipped", camera_profile="default")
        if b is None or any("input_delay_p50_ms" not in x["diagnostics"] for x in (r, b)):
            continue
        size, outputs, _ = _case(r, st)
        h, w = r.get("size") or st["size"]
        kib = h * w * 3 / 1024
        fits = "fits" if kib <= DEFAULT_SHM_KIB else "does not fit"
        lines.append(
            f"- {r['model']} {size} {outputs}: camera -> node p50 {_split(b)[0]:.1f} ms with the "
            f"camera on Fast DDS defaults (a {h}x{w} rgb8 frame, {kib:.0f} KiB, {fits} in their "
            f"{DEFAULT_SHM_KIB} KiB shared-memory segment), {_split(r)[0]:.1f} ms with the "
            f"camera on the shipped profile; end-to-end p99 - predict p99 {_late_p99(b):+.1f} "
            f"-> {_late_p99(r):+.1f} ms; node -> consumer p50 {_split(r)[1]:.1f} ms.")
    for r in data["results"]:
        d = r["diagnostics"]
        size, outputs, _ = _case(r, st)
        if (r.get("profile") == "shipped" and size == f"{st['size'][0]}x{st['size'][1]}"
                and r.get("camera_profile", "default") == "default" and "overhead_p50_ms" in d):
            lines.append(f"- {r['model']} {size} {outputs}: of the node overhead p50 "
                         f"{_f(d, 'overhead_p50_ms'):.1f} ms, publish (the rclpy `publish` calls) "
                         f"is {_f(d, 'publish_p50_ms'):.1f} ms, build "
                         f"{_f(d, 'build_p50_ms'):.1f}, queue {_f(d, 'queue_p50_ms'):.1f}, convert "
                         f"{_f(d, 'convert_p50_ms'):.1f} ms.")
    for r in data["results"]:
        a = (_twin(data, r, profile="shipped", camera_profile=r.get("camera_profile", "default"))
             if r.get("profile") == "shipped-sync" else None)
        if a is None:
            continue
        size, outputs, _ = _case(r, st)
        da, dr = a["diagnostics"], r["diagnostics"]
        lines.append(f"- {r['model']} {size} {outputs}: asynchronous publishing (shipped) -> "
                     f"synchronous: node overhead p50 {_f(da, 'overhead_p50_ms'):.1f} -> "
                     f"{_f(dr, 'overhead_p50_ms'):.1f} ms, publish p50 "
                     f"{_f(da, 'publish_p50_ms'):.1f} -> {_f(dr, 'publish_p50_ms'):.1f} ms, "
                     f"end-to-end p99 - predict p99 {_late_p99(a):+.1f} -> {_late_p99(r):+.1f} ms.")
    cores = data["machine"]["cpu_count"]
    for o in data.get("overlap") or []:
        if "cpu_cores" in o:
            used = o["cpu_cores"]["node"] + o["cpu_cores"]["client"]
            lines.append(f"- overlap, {_overlap_name(o)}: the node used "
                         f"{o['cpu_cores']['node']:.2f} and the client (camera + consumer) "
                         f"{o['cpu_cores']['client']:.2f} of the machine's {cores} cores "
                         f"({used:.2f} together) at ratio {o['ratio']:.2f}.")
    return lines


def render(data: dict[str, Any]) -> dict[str, str]:
    """The Markdown blocks of docs/benchmarks.md (full tables) and docs/node.md (summary)."""
    m, st = data["machine"], data["settings"]
    start_load, end_load = m["load_avg_1min_start"], m.get("load_avg_1min_end", "?")
    idle = isinstance(start_load, (int, float)) and start_load <= 1.0
    where = ("an idle machine" if idle else
             "**a shared machine under load** (other jobs ran on the same cores: absolute "
             "times are pessimistic and noisy; the overhead compares figures of the same frames)")
    caption = (
        f"Measured {data['date_utc']} by `benchmarks/node_latency.py` at commit "
        f"`{data['git_commit'][:12]}`{' (uncommitted changes)' if data.get('git_dirty') else ''}: "
        f"`{data['command']}`. {m['cpu']}, {m['cpu_count']} logical CPUs, node device `{st['device']}`; Python "
        f"{m['python']}, ONNX Runtime {m['onnxruntime']}; {where}: 1-minute load average "
        f"{start_load} at the start, {end_load} at the end. {st['frames']} frames per row, one "
        "in flight at a time, `rgb8` at the bundle's size, random weights.")
    head = ("| model | size | outputs | DDS profile | backend, device, precision | predict p50 / p99 (ms) | "
            "**node overhead p50 / p99 (ms)** | overhead p50 / p99 (%) | queue | convert | build | publish | "
            "**end-to-end p50 / p99 / max (ms)** | e2e p99 - predict p99 (ms) | camera -> node p50 "
            "(ms) | node -> consumer p50 (ms, approx.) |\n"
            "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows, lines = [], []
    for r in data["results"]:
        d, e = r["diagnostics"], _e2e(r)
        size, outputs, profile = _case(r, st)
        run = f"{d['backend']}, {d['device']}, {d['precision']}"
        over = (f"{_f(d, 'overhead_p50_ms'):.1f} / {_f(d, 'overhead_p99_ms'):.1f}"
                if "overhead_p50_ms" in d else "-")
        late = _late_p99(r)
        rows.append(f"| {LABELS.get(r['model'], r['model'])} | {size} | {outputs} | {profile} | {run} | "
                    f"{_pair(d, 'predict')} | **{over}** | {_pair(d, 'overhead', 'pct')} | "
                    f"{_f(d, 'queue_p50_ms'):.1f} | {_f(d, 'convert_p50_ms'):.1f} | "
                    f"{_f(d, 'build_p50_ms'):.1f} | {_f(d, 'publish_p50_ms'):.1f} | "
                    f"**{e['p50']:.1f} / {e['p99']:.1f} / {e['max']:.1f}** | {late:+.1f} | "
                    + " | ".join("-" if x != x else f"{x:.1f}" for x in _split(r)) + " |")
        over_text = (f"{_f(d, 'overhead_p50_ms'):.1f} ms" if "overhead_p50_ms" in d
                     else f"{_f(d, 'overhead_p50_pct'):.1f} %")
        lines.append(f"- {LABELS.get(r['model'], r['model'])}, {size}, {outputs}, DDS profile "
                     f"{profile}, {run}: the node adds **{over_text}** (p50; "
                     f"{_f(d, 'overhead_p50_pct'):.1f} %) to a predict of "
                     f"{_f(d, 'predict_p50_ms'):.1f} ms (p50); end-to-end from another process "
                     f"p50 {e['p50']:.1f}, p99 {e['p99']:.1f}, max {e['max']:.1f} ms.")
    note = ("Segments (p50, ms) are the node's own stamps: queue = receipt -> taken by the "
            "inference thread, convert = to RGB, build = predict end -> outputs built (in the "
            "publish thread, including any wait for it), publish = until the last `publish` "
            "returned; node overhead = receipt -> last publish - predict, per frame. "
            "End-to-end = the client's publish -> the last subscribed output received (another "
            "process; DDS both ways), split into camera -> node (the node's `input_delay`: the "
            "header stamp -> receipt, same clock) and node -> consumer (the rest after the node's "
            "receipt -> last publish). DDS profile: node `shipped` = the node started as the "
            "launch file starts it (`config/fastdds_profile.xml` and asynchronous publishing), "
            "`shipped, synchronous publish` = the same profile with rmw_fastrtps's default "
            "synchronous publishing, `none` = Fast DDS defaults; "
            "camera = the client process's own profile (it publishes the frames and subscribes "
            "to the outputs): `default` = Fast DDS defaults, as a camera driver started without "
            "a profile, `shipped` = the same file.")
    blocks = [caption, "", head, *rows, "", note]
    overlap = data.get("overlap") or []
    if "overlap" not in data:  # a run from before the shipped profile and the publish thread
        blocks += ["", "This run predates the shipped DDS profile and the publish thread "
                   "(issue 18): its end-to-end p99 of seconds is the Fast DDS stall the "
                   "profile removes; re-run the script for current figures."]
    if overlap:
        blocks += ["", "Overlap (frame N-1 published while frame N is predicted): a camera at "
                   f"{st.get('camera_factor', '?')}x the backend's rate for "
                   f"{st.get('overlap_seconds', '?')} s, every output subscribed, "
                   f"{st.get('overlap_size', st['size'])[0]}x{st.get('overlap_size', st['size'])[1]}; "
                   "`sleep` = a test double of fixed latency: the tiny model's outputs of the first "
                   "frame, returned after sleeping P (no model run); ONNX Runtime rows: the tiny "
                   "model with the node's `num_threads` (default = the library's, all cores). "
                   "CPU = cores used during the run (CPU seconds / wall seconds) by the node and "
                   "by the client.", "",
                   "| backend | predict P (ms) | camera (Hz) | frames received (Hz) | 1000/P (Hz) | "
                   "ratio | CPU node + client (cores) |",
                   "|---|---:|---:|---:|---:|---:|---:|"]
        blocks += [f"| {_overlap_name(o)} | {o['predict_ms']:.1f} | {o['camera_hz']:.1f} | "
                   f"{o['throughput_hz']:.2f} | {o['ideal_hz']:.2f} | **{o['ratio']:.2f}** | "
                   + (f"{o['cpu_cores']['node']:.2f} + {o['cpu_cores']['client']:.2f} |"
                      if "cpu_cores" in o else "- |") for o in overlap]
        lines.append("- Overlap: with a camera faster than the backend the node delivers "
                     + ", ".join(f"{o['ratio']:.2f}" for o in overlap)
                     + " x 1000/P frames per second (P = "
                     + ", ".join(f"{o['predict_ms']:.0f}" for o in overlap) + " ms).")
    goals = goal_lines(data) if overlap else []
    if goals:
        blocks += ["", "Issue 18's goals, judged on these rows (node on the shipped profile):", "",
                   *goals]
    why = why_lines(data)
    if why:
        blocks += ["", "Where the time goes (the same rows):", "", *why]
    table = "\n".join(blocks)
    summary = "\n".join([f"Measured by `benchmarks/node_latency.py` ({data['date_utc']}, commit "
                         f"`{data['git_commit'][:12]}`, {m['cpu_count']} CPUs, 1-minute load "
                         f"{start_load} -> {end_load}; tables and method in "
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


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "paper"],
                        help="tiny: every size and output set; paper: the first size, "
                             "the shipped profile (its predict is slow)")
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(288, 384), (480, 640)],
                        metavar="HxW", help="camera = export sizes (default 288x384 480x640)")
    parser.add_argument("--outputs", nargs="+", choices=sorted(OUTPUT_SETS), default=["raw", "all"])
    parser.add_argument("--profiles", nargs="+", choices=("shipped", "shipped-sync", "none"),
                        default=["shipped", "shipped-sync", "none"],
                        help="the node's DDS set-up: 'shipped' as the launch file starts it; "
                             "'shipped-sync' the same with synchronous publishing (the tiny "
                             "model at the first size only); 'none' (Fast DDS defaults, the "
                             "stall the profile removes: seconds a frame) for the tiny model's "
                             "raw outputs at the first size only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--num-threads", type=int, default=0, help="node num_threads (0: default)")
    parser.add_argument("--frames", type=int, default=200, help="measured frames per row (default 200)")
    parser.add_argument("--sleep-ms", type=float, nargs="*", default=[25.0, 50.0, 100.0, 200.0],
                        help="fixed predict times of the overlap curve (default 25 50 100 200)")
    parser.add_argument("--overlap-seconds", type=float, default=10.0)
    parser.add_argument("--overlap-threads", type=int, nargs="*", default=[0, 1],
                        help="node num_threads of the ONNX Runtime overlap runs (default 0 1: "
                             "the library's default, all cores; and one, a core left to the "
                             "publish thread and the consumer)")
    parser.add_argument("--camera-profile", choices=("default", "shipped"), default="default",
                        help="the client's own Fast DDS profile (it is the camera and the "
                             "consumer): default = Fast DDS defaults (512 KiB shared-memory "
                             "segment: a 480x640 rgb8 frame does not fit)")
    parser.add_argument("--camera-rows", nargs="*", type=_size, default=[(480, 640)],
                        metavar="HxW", help="sizes re-measured (tiny, shipped node profile) with "
                        "the camera also on the shipped profile, in a child process (default "
                        "480x640; none: skip)")
    parser.add_argument("--camera-factor", type=float, default=2.0,
                        help="camera rate of the overlap runs, x 1000/P (default 2)")
    parser.add_argument("--smoke", action="store_true",
                        help="a quick check that everything runs: tiny, 96x128, 10 frames, one P, 3 s")
    parser.add_argument("--max-load", type=float, default=1.0,
                        help="refuse to start above this 1-minute load average (default 1.0)")
    parser.add_argument("--ignore-load", action="store_true", help="start whatever the load")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--no-docs", action="store_true", help="do not touch the docs")
    parser.add_argument("--render", action="store_true",
                        help="only render the docs from --json (no measurement)")
    return parser


def _measure_delivery(args: argparse.Namespace, bundle_of: Any, envs: dict[str, dict[str, str]],
                      data: dict[str, Any]) -> None:
    """Every delivery row (model x size x output set x profile) into ``data["results"]``."""
    cases = [(m, s, o, pr) for m in args.models
             for s in (args.sizes if m == "tiny" else args.sizes[:1])
             for o in args.outputs
             for pr in args.profiles
             if pr == "shipped" or (m == "tiny" and s == args.sizes[0]
                                    and (pr == "shipped-sync" or o == args.outputs[0]))]
    for model, size, outputs, profile in cases:
        started = time.monotonic()
        image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
        result = measure_delivery(bundle_of(model, size), args, image, OUTPUT_SETS[outputs],
                                  envs[profile])
        data["results"].append({"model": model, "config": str(MODELS[model]),
                                "size": list(size), "outputs": outputs, "profile": profile,
                                "camera_profile": args.camera_profile,
                                **result, "wall_s": round(time.monotonic() - started, 1)})
        d, e = result["diagnostics"], _e2e(result)
        print(f"{model} {size} {outputs} {profile}: predict p50 {d['predict_p50_ms']} ms, "
              f"overhead p50 {d.get('overhead_p50_ms')} ms, e2e p50/p99/max "
              f"{e['p50']:.1f}/{e['p99']:.1f}/{e['max']:.1f} ms", flush=True)


def _measure_overlap_curve(args: argparse.Namespace, bundle_of: Any,
                           envs: dict[str, dict[str, str]], data: dict[str, Any]) -> None:
    """The overlap curve (the sleeping double at each P, then ONNX Runtime) into
    ``data["overlap"]``."""
    size = args.sizes[0]
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    runs = [(sleep_ms, args) for sleep_ms in args.sleep_ms]
    runs += [(None, argparse.Namespace(**{**vars(args), "num_threads": n}))
             for n in args.overlap_threads]
    for sleep_ms, opts in runs:
        result = measure_overlap(bundle_of("tiny", size), opts, image, envs["shipped"], sleep_ms)
        data["overlap"].append(result)
        print(f"overlap {result['backend']} ({opts.num_threads} threads) P "
              f"{result['predict_ms']:.1f} ms: {result['throughput_hz']:.2f} Hz of "
              f"{result['ideal_hz']:.2f}; CPU cores node {result['cpu_cores']['node']:.2f}, "
              f"client {result['cpu_cores']['client']:.2f}", flush=True)


def _measure_camera_rows(args: argparse.Namespace, envs: dict[str, dict[str, str]],
                         data: dict[str, Any]) -> None:
    """The tiny model's delivery rows at ``--camera-rows`` again, with the client (the camera
    and the consumer) on the shipped profile as well: a child process, since Fast DDS reads
    its profile once per process."""
    if not args.camera_rows:
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "camera.json"
        cmd = [sys.executable, __file__, "--camera-profile", "shipped", "--models", "tiny",
               "--sizes", *[f"{h}x{w}" for h, w in args.camera_rows], "--outputs", *args.outputs,
               "--profiles", "shipped", "--frames", str(args.frames), "--sleep-ms",
               "--overlap-threads", "--camera-rows", "--device", args.device,
               "--backend", args.backend, "--precision", args.precision,
               "--num-threads", str(args.num_threads), "--ignore-load", "--no-docs",
               "--json", str(out)]
        subprocess.run(cmd, env={**os.environ, **envs["shipped"]}, check=True)
        data["results"] += json.loads(out.read_text(encoding="utf-8"))["results"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--sleeping-node"]:  # the node with the fixed-latency double (a subprocess)
        return run_sleeping_node(float(argv[1]), argv[2:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.render:
        write_docs(json.loads(args.json.read_text(encoding="utf-8")))
        return 0
    if os.environ.get("MBMT_NETNS") != "1":
        parser.error("run inside scripts/ros_isolated so that DDS stays on loopback")
    if args.smoke:
        args.models, args.sizes, args.frames = ["tiny"], [(96, 128)], 10
        args.sleep_ms, args.overlap_seconds, args.overlap_threads = [50.0], 3.0, [0]
        args.camera_rows = []
    if args.frames < 10:
        parser.error("--frames must be at least 10 (the node's smallest diagnostics_window)")
    load = os.getloadavg()[0]
    if load > args.max_load and not args.ignore_load:
        parser.error(f"the 1-minute load average is {load:.2f} (> {args.max_load}): these figures "
                     "are for an idle machine; wait, or pass --ignore-load for a smoke run")

    from mbmt_ros.dds_profile import PROFILE_ENV, PUBLICATION_MODE_ENV, node_transport_env
    from mbmt_ros.io import atomic_write_json

    envs = {"shipped": node_transport_env({}, "").env, "none": {}}
    envs["shipped-sync"] = {**envs["shipped"], PUBLICATION_MODE_ENV: "SYNCHRONOUS"}
    own = {k: os.environ[k] for k in PROFILE_ENV if os.environ.get(k)}
    if own != ({k: v for k, v in envs["shipped"].items() if k in PROFILE_ENV}
               if args.camera_profile == "shipped" else {}):
        parser.error(f"--camera-profile {args.camera_profile}, but this process has {own or 'no profile'}"
                     " (the client's Fast DDS profile comes from this process's environment); "
                     "unset it, or let the parent run start the camera rows")
    data: dict[str, Any] = {
        "command": " ".join(["scripts/ros_isolated .venv/bin/python benchmarks/node_latency.py", *argv]),
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "settings": {"size": list(args.sizes[0]), "sizes": [list(s) for s in args.sizes],
                     "frames": args.frames, "backend": args.backend, "device": args.device,
                     "precision": args.precision, "num_threads": args.num_threads,
                     "camera_factor": args.camera_factor, "overlap_seconds": args.overlap_seconds,
                     "camera_profile": args.camera_profile,
                     "overlap_size": list(args.sizes[0])},
        "results": [], "overlap": []}
    with tempfile.TemporaryDirectory() as tmp:
        bundles: dict[tuple[str, tuple[int, int]], Path] = {}

        def bundle_of(model: str, size: tuple[int, int]) -> Path:
            if (model, size) not in bundles:
                bundles[model, size] = export_random_bundle(
                    MODELS[model], size, Path(tmp) / f"{model}_{size[0]}x{size[1]}")
            return bundles[model, size]

        _measure_delivery(args, bundle_of, envs, data)
        _measure_overlap_curve(args, bundle_of, envs, data)
    _measure_camera_rows(args, envs, data)
    data["machine"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, data)
    print(render(data)["benchmarks"])
    if not args.no_docs and args.json.resolve() == RESULTS.resolve():
        write_docs(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
