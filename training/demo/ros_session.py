"""The demo's ROS part, run as ONE process inside the isolated network namespace::

    scripts/ros_isolated python -m training.demo.ros_session --bundle B --bag REPLAY_BAG --out DIR

It starts the perception node (``python -m mbmt_ros.ros.perception_node``, a child process),
records its outputs with :class:`~training.demo.recorder.OutputRecorder` (in this process),
replays the bag through it with ``mbmt-replay`` (a child process), waits for the outputs of
every frame, stops the node and writes ``DIR/output_bag/`` (the node's segmentation, depth
and normals messages, rosbag2 mcap) and ``DIR/session.json`` (counts, latency, rate, the
node's last diagnostics). Frames the node dropped are replayed once more (counted in
``session.json``), so that every frame can be scored. Exit status 0 on success, 2 with a
one-line message on failure (the node's log is ``DIR/node.log``).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mbmt_ros.io import atomic_write_json
from mbmt_ros.topics import NODE_NAME
from training.demo.bags import (
    IMAGE_TOPIC,
    INFO_TOPIC,
    bag_summary,
    read_messages,
    write_bag,
    write_replay_bag,
)
from training.errors import TrainingError

__all__ = ["main", "run_session", "node_command", "replay_command"]



def node_command(bundle: Path, backend: str, device: str, precision: str) -> list[str]:
    """The perception node's command line: autostart, remapped to the replayed camera topic;
    reliable input and deeper output queues so a replay at a fixed rate loses nothing in
    transport (the node still drops frames it cannot keep up with, and says so)."""
    params = {"bundle": str(bundle), "backend": backend, "device": device,
              "precision": precision, "qos.input": "reliable", "qos.input_depth": "5",
              "qos.output_depth": "10", "diagnostics_period": "0.5"}
    cmd = [sys.executable, "-m", "mbmt_ros.ros.perception_node", "--ros-args",
           "-r", f"__node:={NODE_NAME}", "-r", f"image:={IMAGE_TOPIC}"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    return cmd


def replay_command(bag: Path, rate: float) -> list[str]:
    """``mbmt-replay`` of ``bag`` (camera image + CameraInfo) at ``rate`` x recorded speed;
    it waits until both topics have subscribers (the node and the recorder)."""
    return [sys.executable, "-m", "mbmt_ros.ros.replay", str(bag), "--rate", str(rate),
            "--wait-for-subscribers", "30", "--linger", "1.0", "--qos-depth", "50"]


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _wait(condition: Any, timeout: float, node_proc: subprocess.Popen, log: Path,
          what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if node_proc.poll() is not None:
            raise TrainingError(f"the perception node exited with status {node_proc.returncode} "
                                f"while {what}; its log {log}: {_tail(log)}")
        if time.monotonic() > deadline:
            raise TrainingError(f"timed out after {timeout:.0f} s {what}; node log {log}: "
                                f"{_tail(log)}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _replay(bag: Path, rate: float, log: Path) -> None:
    with open(log, "ab") as fh:
        code = subprocess.call(replay_command(bag, rate), stdout=fh, stderr=subprocess.STDOUT)
    if code != 0:
        raise TrainingError(f"mbmt-replay {bag} failed with status {code}; its log {log}: "
                            f"{_tail(log)}")


def run_session(bundle: Path, bag: Path, out: Path, backend: str = "onnxruntime",
                device: str = "cpu", precision: str = "fp32", rate: float = 1.0,
                timeout: float = 120.0, retries: int = 2,
                progress: bool = True) -> dict[str, Any]:
    """Node + recorder + replay (see the module docstring); returns the session record."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from training.demo.recorder import OutputRecorder, latency_stats

    out.mkdir(parents=True, exist_ok=True)
    stamps = {int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
              for _t, _m, _l, _d, msg in read_messages(bag, lambda t, _m: t == IMAGE_TOPIC)}
    node_log, replay_log = out / "node.log", out / "replay.log"
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mbmt_demo_recorder", context=context)
    recorder = OutputRecorder(node, f"/{NODE_NAME}", IMAGE_TOPIC, INFO_TOPIC)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    started = time.monotonic()
    with open(node_log, "wb") as fh:
        node_proc = subprocess.Popen(node_command(bundle, backend, device, precision),
                                     stdout=fh, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait(recorder.connected, timeout, node_proc, node_log, "waiting for the node's outputs")
        startup_s = time.monotonic() - started
        time.sleep(0.5)  # let the node's publishers see the recorder's subscriptions too
        passes, first_missing = 0, None
        pending = set(stamps)
        bar = _progress(len(stamps), progress)
        replay_bag = bag
        while pending and passes <= retries:
            passes += 1
            _replay(replay_bag, rate, replay_log)
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and not stamps <= recorder.complete_stamps():
                _update(bar, len(stamps & recorder.complete_stamps()))
                time.sleep(0.1)
            pending = stamps - recorder.complete_stamps()
            _update(bar, len(stamps) - len(pending))
            if first_missing is None:
                first_missing = len(pending)
            if pending:  # dropped by the node (it keeps only the newest frame): send them again
                replay_bag = out / "retry_bag"
                write_replay_bag(bag, replay_bag, pending)
        if bar is not None:
            bar.close()
        time.sleep(0.6)  # one more diagnostics period
    finally:
        _stop(node_proc)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    messages, frames, diagnostics = recorder.snapshot()
    if pending:
        raise TrainingError(f"the node published no complete output for {len(pending)} of "
                            f"{len(stamps)} frames after {passes} replays; node log {node_log}")
    output_bag = write_bag(out / "output_bag", sorted(messages, key=lambda m: m[2]))
    record = {
        "bundle": str(bundle), "replayed_bag": str(bag), "output_bag": str(output_bag),
        "backend": backend, "device": device, "precision": precision, "replay_rate": rate,
        "frames": len(stamps), "replay_passes": passes, "dropped_first_pass": first_missing,
        "node_startup_s": round(startup_s, 2), "topics": recorder.topics,
        "output_bag_topics": bag_summary(output_bag),
        "stats": latency_stats({s: frames[s] for s in stamps}, len(recorder.topics)),
        "node_diagnostics": diagnostics,
    }
    atomic_write_json(out / "session.json", record)
    return record


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="node outputs", unit="frame", file=sys.stderr)


def _update(bar: Any, done: int) -> None:
    if bar is not None and done > bar.n:
        bar.update(done - bar.n)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.demo.ros_session",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="model bundle folder")
    parser.add_argument("--bag", required=True, type=Path, help="recording to replay")
    parser.add_argument("--out", required=True, type=Path, help="session folder to write")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the node to come up")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if os.environ.get("MBMT_NETNS") != "1":
        print("ros_session: refusing to run outside the isolated network namespace; start it "
              "with scripts/ros_isolated", file=sys.stderr)
        return 2
    try:
        record = run_session(args.bundle, args.bag, args.out, args.backend, args.device,
                             args.precision, args.rate, args.timeout,
                             progress=not args.no_progress)
    except TrainingError as exc:
        print(f"ros_session: error: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {record['frames']} frames to {record['output_bag']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
