"""The demo's pieces without DDS: budgets, the replay bag, the output bag -> prediction files
round trip, latency statistics and the summary."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    proc = subprocess.run([sys.executable, "-m", "training.cli", "synth", "--out", str(out),
                           "--count", "8", "--size", "24", "32", "--val-fraction", "0.25"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("name", ["full", "ci"])
def test_budget_overrides_make_a_valid_tiny_config(name: str) -> None:
    from training.config import parse_config
    from training.demo.budget import get_budget
    from training.stages.options import apply_overrides

    raw = yaml.safe_load((REPO / "config" / "train" / "tiny.yaml").read_text())
    config = parse_config(apply_overrides(raw, list(get_budget(name).overrides)))
    synth = config.data["synth"]
    n_train = synth["count"] - round(synth["count"] * synth["val_fraction"])
    split = config.stage("split").options
    assert split["depth"] <= n_train and split["segmentation"] <= split["depth"]
    assert any(s.kind == "export" for s in config.stages)


def test_unknown_budget_is_a_config_error() -> None:
    from training.demo.budget import get_budget
    from training.errors import ConfigError

    with pytest.raises(ConfigError, match="ci"):
        get_budget("huge")


def test_replay_bag_holds_exactly_the_val_frames_with_a_lead_in(synth: Path,
                                                                tmp_path: Path) -> None:
    from training.demo.bags import IMAGE_TOPIC, INFO_TOPIC, read_messages, write_replay_bag
    from training.demo.predictions import stamps_of_split

    stamps = stamps_of_split(synth, "val")
    assert len(stamps) == 2
    assert write_replay_bag(synth / "bag", tmp_path / "replay", stamps) == 2
    msgs = list(read_messages(tmp_path / "replay"))
    images = [m for m in msgs if m[0] == IMAGE_TOPIC]
    infos = [m for m in msgs if m[0] == INFO_TOPIC]
    got = {m[4].header.stamp.sec * 10**9 + m[4].header.stamp.nanosec for m in images}
    assert got == set(stamps) and len(images) == 2
    assert len(infos) == 3 and infos[0][2] <= images[0][2] - 10**9  # 1 s lead-in
    first = int(np.load(synth / "val" / "image" / f"{stamps[min(stamps)]}.npy").sum())
    assert int(np.asarray(images[0][4].data).sum()) == first  # byte-for-byte copy


def test_recorded_outputs_round_trip_to_prediction_files(synth: Path, tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Header

    from mbmt_ros.ros.image_messages import numpy_to_image
    from training.commands.score import score_folder
    from training.demo.bags import write_bag
    from training.demo.predictions import stamps_of_split, write_predictions

    stamps = stamps_of_split(synth, "val")
    topics = {"segmentation": "/n/segmentation", "depth": "/n/depth", "normals": "/n/normals"}
    messages, expected = [], {}
    for stamp, index in stamps.items():
        header = Header()
        header.stamp.sec, header.stamp.nanosec = divmod(stamp, 10**9)
        seg = np.load(synth / "val" / "label" / f"{index}.npy").astype(np.int64)
        seg = np.where(seg < 0, 255, seg).astype(np.uint8)
        depth = np.load(synth / "val" / "depth" / f"{index}.npy").astype(np.float32)
        normals = np.load(synth / "val" / "normal" / f"{index}.npy").astype(np.float32)
        for task, arr, enc in (("segmentation", seg, "mono8"), ("depth", depth, "32FC1"),
                               ("normals", normals, "32FC3")):
            msg = numpy_to_image(arr, enc, header, step=arr.shape[1] * arr.itemsize *
                                 (3 if enc == "32FC3" else 1) + 8)  # padded rows too
            messages.append((topics[task], "sensor_msgs/msg/Image", stamp,
                             serialize_message(msg)))
        expected[index] = (seg, depth, normals)
    bag = write_bag(tmp_path / "out_bag", messages)
    assert write_predictions(bag, topics, stamps, tmp_path / "pred") == len(stamps)
    for index, (seg, depth, normals) in expected.items():
        with np.load(tmp_path / "pred" / f"{index}.npz") as z:
            assert np.array_equal(z["segmentation"], np.where(seg == 255, -1, seg))
            assert np.array_equal(z["depth"], depth) and np.array_equal(z["normals"], normals)
    metrics = score_folder(tmp_path / "pred", synth, "val")  # ground truth scored as itself
    assert metrics["depth"]["abs_err"] == 0 and metrics["segmentation"]["pixel_acc"] == 100


def test_missing_outputs_are_named(synth: Path, tmp_path: Path) -> None:
    from training.demo.bags import write_bag
    from training.demo.predictions import stamps_of_split, write_predictions
    from training.errors import DataError

    bag = write_bag(tmp_path / "empty", [])
    with pytest.raises(DataError, match="lacks outputs"):
        write_predictions(bag, {"depth": "/n/depth"}, stamps_of_split(synth, "val"),
                          tmp_path / "pred")


def test_latency_stats() -> None:
    from training.demo.recorder import RecordedFrame, latency_stats

    frames = {i: RecordedFrame(i, input_ns=i * 100_000_000,
                               outputs_ns={"a": i * 100_000_000 + 5_000_000,
                                           "b": i * 100_000_000 + (10 + i) * 1_000_000})
              for i in range(11)}
    frames[99] = RecordedFrame(99, input_ns=0, outputs_ns={"a": 1})  # incomplete: ignored
    stats = latency_stats(frames, 2)
    assert stats["frames"] == 11
    assert stats["latency_p50_ms"] == pytest.approx(15.0)
    assert stats["latency_max_ms"] == pytest.approx(20.0)
    assert stats["output_rate_hz"] == pytest.approx(10 / (1.0 + 0.010), rel=1e-6)
    assert math.isnan(latency_stats({}, 2)["latency_p50_ms"])


def test_summary_text_names_every_file(tmp_path: Path) -> None:
    from training.demo.summary import build_summary, format_summary

    run = tmp_path / "run"
    (run / "mbmt" / "plots").mkdir(parents=True)
    (run / "mbmt" / "plots" / "val.png").write_bytes(b"png")
    (run / "results.md").write_text("| Run | mIoU |\n|---|---|\n| mbmt | 1.0 |\n")
    (run / "mbmt" / "metrics.json").write_text(json.dumps({"depth": {"abs_err": 0.5}}))
    session = {"output_bag": str(tmp_path / "bag"), "backend": "onnxruntime", "device": "cpu",
               "precision": "fp32", "frames": 3, "replay_rate": 1.0, "dropped_first_pass": 0,
               "output_bag_topics": {"/p/depth": {"type": "x", "count": 3}},
               "stats": {"latency_p50_ms": 12.5, "latency_p90_ms": 20.0,
                         "latency_max_ms": 30.0, "output_rate_hz": 9.9},
               "node_diagnostics": {"active": {"inference_median_ms": "4.2", "timing_frames": "3",
                                               "predict_p50_ms": "4.2", "predict_p99_ms": "4.9",
                                               "total_p50_ms": "5.1", "total_p99_ms": "6.0",
                                               "overhead_p50_pct": "21.4",
                                               "overhead_p99_pct": "30.2"}}}
    facts = build_summary(out=tmp_path, run_dir=run, budget="ci", device="cpu", stages_run=[],
                          stages_reused=["mbmt"], data_reused=True, bundle=run / "bundle",
                          export_from="mbmt", session=session,
                          node_metrics={"depth": {"abs_err": 0.5}},
                          node_metrics_path=tmp_path / "node_metrics.json", elapsed_s=3.0)
    text = format_summary(facts)
    for needle in ("| mbmt | 1.0 |", str(run / "mbmt" / "plots" / "val.png"),
                   str(tmp_path / "bag"), "12.5 / 20 / 30 ms", "9.9 Hz",
                   "same 3 frames (its own stamps): predict p50 / p99 | 4.2 / 4.9 ms",
                   "publish - predict) / predict, p50 / p99 | 21.4 / 30.2 % |",
                   "reused (already finished): mbmt", "| depth | abs_err | 0.5 | 0.5 |"):
        assert needle in text, needle
    json.dumps(facts)  # JSON-able
