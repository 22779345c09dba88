"""``run_demo``: the end-to-end demo, step by step, each step through the project's own
commands.

1. ``mbmt-train pipeline`` on the ``tiny`` config (with the budget's ``--set`` overrides) into
   ``OUT/run``: synthetic scenes + their rosbag2 recording (``mbmt-train synth``), ST
   pretraining -> MBMT-Net, baselines, the multi-modal teacher -> pseudo labels -> students,
   evaluation (``results.md``, PNG grids) and the model bundle (export). Finished stages and
   an existing dataset are reused.
2. The val frames of the recording are copied to ``OUT/replay_bag`` (reused when present).
3. ``scripts/ros_isolated python -m training.demo.ros_session``: the perception node, the
   replay (``mbmt-replay``) and the output recorder in ONE private network namespace
   -> ``OUT/ros/output_bag`` and ``OUT/ros/session.json``.
4. The recorded outputs -> ``OUT/ros/predictions/<index>.npz`` -> ``mbmt-train score``
   (``training.commands.score.score_folder``) -> ``OUT/node_metrics.json``.
5. The summary (``OUT/summary.md``, ``OUT/summary.json``), printed.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mbmt_ros.io import atomic_write_json, atomic_write_text
from mbmt_ros.resources import share_file
from training.config import read_config
from training.demo.budget import get_budget
from training.errors import ConfigError, MbmtError, TrainingError

__all__ = ["default_config", "ros_isolated", "run_demo", "resolve_device", "node_backend"]

log = logging.getLogger(__name__)


def default_config() -> Path:
    """The demo's pipeline config, ``config/train/tiny.yaml`` of the checkout or the install."""
    return share_file("config", "train", "tiny.yaml")


def ros_isolated() -> Path:
    """``scripts/ros_isolated`` (the network-namespace wrapper) of the checkout or the install."""
    return share_file("scripts", "ros_isolated")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: use auto, cpu or cuda")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ConfigError("--device cuda: torch sees no CUDA GPU here; use --device auto or cpu")
    return "cpu"


def node_backend(device: str) -> tuple[str, str]:
    """(backend, precision) of the perception node on ``device``: ONNX Runtime fp32 on CPU,
    the node's automatic choice (TensorRT if installed, else ONNX Runtime CUDA) in fp16 on a
    GPU."""
    return ("onnxruntime", "fp32") if device == "cpu" else ("auto", "fp16")


def _step(number: int, total: int, text: str) -> None:
    log.info("[%d/%d] %s", number, total, text)


def _pipeline_command(config: Path, run_dir: Path, overrides: tuple[str, ...],
                      device: str) -> list[str]:
    cmd = [sys.executable, "-m", "training.cli", "pipeline", "--config", str(config),
           "--run-dir", str(run_dir)]
    if device == "cuda":
        overrides = (*overrides, "train.accelerator=gpu")
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def _stage_states(run_dir: Path, stages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(stages not finished yet, stages already finished) of a run folder."""
    names = [str(s["name"]) for s in stages]
    done = [n for n in names if (run_dir / n / "done.json").is_file()]
    return [n for n in names if n not in done], done


def _export_stage(stages: list[dict[str, Any]], config: Path) -> dict[str, Any]:
    for stage in stages:
        if stage.get("kind") == "export":
            return stage
    raise ConfigError(f"{config} has no export stage; the demo needs a model bundle")


def _child_env(device: str, threads: int) -> dict[str, str]:
    """Environment of the pipeline and ROS processes: CPU-only when asked, and ``threads``
    intra-op threads (OpenMP / MKL / torch) when > 0; 0 means 1 on a machine with 2 cores or
    fewer (busy-waiting OpenMP threads make training many times slower there as soon as
    anything else runs) and the libraries' default elsewhere."""
    env = dict(os.environ)
    if threads == 0 and (os.cpu_count() or 1) <= 2:
        threads = 1
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # every stage (training, pseudo labels, eval) on CPU
    if threads > 0:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def run_demo(out: str | Path, budget: str = "full", device: str = "auto",
             config: str | Path | None = None, progress: bool = True,
             threads: int = 0) -> dict[str, Any]:
    """Run the demo into ``out`` and return the summary facts (see the module docstring).

    ``threads`` > 0 limits every child process to that many CPU threads. The demo's own log
    goes to ``OUT/demo.log``, the pipeline's to ``OUT/run/pipeline.log``.
    """
    out_path = Path(out).resolve()
    out_path.mkdir(parents=True, exist_ok=True)
    handler = _log_to_file(out_path / "demo.log")
    try:
        facts = _run(out_path, budget, device, config, progress, threads)
        log.info("demo finished in %.0f s; summary: %s", facts["elapsed_s"],
                 out_path / "summary.md")
        return facts
    except MbmtError as exc:
        log.error("demo failed: %s", exc)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run(out: Path, budget: str, device: str, config: str | Path | None, progress: bool,
         threads: int) -> dict[str, Any]:
    from training.demo.summary import build_summary, format_summary

    started = time.monotonic()
    config = Path(config).resolve() if config else default_config()
    if not config.is_file():
        raise ConfigError(f"pipeline config {config} does not exist")
    spec = get_budget(budget)
    device = resolve_device(device)
    stages = (read_config(config) or {}).get("stages") or []
    run_dir = out / "run"
    env = _child_env(device, threads)

    pending, finished = _stage_states(run_dir, stages)
    data_reused = (run_dir / "data" / "manifest.json").is_file()
    _step(1, _STEPS, f"training pipeline {config.name} ({budget} budget, {device}) -> "
          f"{run_dir}; {len(finished)} of {len(stages)} stages already finished")
    bundle, export = _train(config, run_dir, stages, spec, device, env)
    data_root = run_dir / "data"
    stamps, replay_bag = _replay_bag(data_root, out)
    session_dir = out / "ros"
    session = _ros_session(bundle, replay_bag, session_dir, device, spec, progress, env)
    node_metrics, metrics_path = _score(session, session_dir, data_root, stamps, out)

    _step(5, _STEPS, "summary")
    facts = build_summary(out=out, run_dir=run_dir, budget=budget, device=device,
                          stages_run=pending, stages_reused=finished, data_reused=data_reused,
                          bundle=bundle, export_from=str(export.get("from")), session=session,
                          node_metrics=node_metrics, node_metrics_path=metrics_path,
                          elapsed_s=time.monotonic() - started)
    text = format_summary(facts)
    atomic_write_json(out / "summary.json", facts)
    atomic_write_text(out / "summary.md", text)
    print("\n" + text, flush=True)
    print(f"summary written to {out / 'summary.md'}", flush=True)
    return facts


#: The demo's numbered steps (training, replay bag, ROS session, scoring, summary).
_STEPS = 5


def _train(config: Path, run_dir: Path, stages: list[dict[str, Any]], spec: Any, device: str,
           env: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    """Step 1: the training pipeline (synthetic data, all stages, export) in a child
    process; returns the exported bundle and the export stage's config."""
    code = subprocess.call(_pipeline_command(config, run_dir, spec.overrides, device), env=env)
    if code != 0:
        raise TrainingError(f"the training pipeline failed (exit status {code}); see the "
                            f"messages above and {run_dir / 'pipeline.log'}, then re-run the "
                            "demo: it resumes where it stopped")
    export = _export_stage(stages, config)
    bundle = run_dir / str(export["name"]) / "bundle"  # where the export stage writes it
    if not (bundle / "meta.json").is_file():
        done = json.loads((run_dir / export["name"] / "done.json").read_text(encoding="utf-8"))
        bundle = Path(done["bundle"])
    return bundle, export


def _replay_bag(data_root: Path, out: Path) -> tuple[list[int], Path]:
    """Step 2: a bag of the recording's val frames (written once)."""
    from training.demo.bags import write_replay_bag
    from training.demo.predictions import stamps_of_split

    stamps = stamps_of_split(data_root, "val")
    replay_bag = out / "replay_bag"
    _step(2, _STEPS, f"replay bag: the {len(stamps)} val frames of {data_root / 'bag'}")
    if not replay_bag.exists():
        write_replay_bag(data_root / "bag", replay_bag, stamps)
    return stamps, replay_bag


def _ros_session(bundle: Path, replay_bag: Path, session_dir: Path, device: str, spec: Any,
                 progress: bool, env: dict[str, str]) -> dict[str, Any]:
    """Step 3: the perception node, the replay and the recorder in one isolated network
    namespace; returns the session's record (output bag, topics, node figures)."""
    backend, precision = node_backend(device)
    _step(3, _STEPS, f"perception node ({backend}, {device}) in an isolated network namespace: "
          f"replaying {replay_bag.name}, recording its outputs")
    cmd = [str(ros_isolated()), sys.executable, "-m", "training.demo.ros_session",
           "--bundle", str(bundle), "--bag", str(replay_bag), "--out", str(session_dir),
           "--backend", backend, "--device", device, "--precision", precision,
           "--rate", str(spec.replay_rate)]
    if not progress:
        cmd.append("--no-progress")
    (session_dir / "session.json").unlink(missing_ok=True)
    code = subprocess.call(cmd, env=env)
    if code != 0 or not (session_dir / "session.json").is_file():
        raise TrainingError(f"the ROS session failed (exit status {code}); see the message "
                            f"above and {session_dir / 'node.log'}")
    return json.loads((session_dir / "session.json").read_text(encoding="utf-8"))


def _score(session: dict[str, Any], session_dir: Path, data_root: Path, stamps: list[int],
           out: Path) -> tuple[dict[str, Any], Path]:
    """Step 4: score the recorded outputs against the synthetic ground truth."""
    from training.commands.score import score_folder
    from training.demo.predictions import write_predictions

    pred_dir = session_dir / "predictions"
    _step(4, _STEPS, f"scoring the recorded outputs ({session['output_bag']}) against "
          f"{data_root}")
    write_predictions(Path(session["output_bag"]), session["topics"], stamps, pred_dir)
    node_metrics = score_folder(pred_dir, data_root, "val")
    metrics_path = out / "node_metrics.json"
    atomic_write_json(metrics_path, node_metrics)
    return node_metrics, metrics_path
