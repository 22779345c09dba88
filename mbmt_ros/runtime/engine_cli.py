"""``mbmt-engine``: prebuild and inspect a bundle's TensorRT engines on the robot.

``mbmt-engine build BUNDLE [--precision fp16] [--batch N]`` builds (or validates) the cached
engine for this GPU and TensorRT version, so the perception node starts in seconds.
``mbmt-engine info BUNDLE`` prints the bundle's meta data and its cached engines.
``mbmt-engine verify BUNDLE [--backend B --precision P --device D]`` runs that path on the
bundle's reference set and prints its figures against the FP32 reference (exit 1: a figure
is outside its limit). Errors are printed as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from mbmt_ros.cli import run_command
from mbmt_ros.runtime.bundle import Bundle
from mbmt_ros.runtime.cuda_device import DEFAULT_WORKSPACE_MB
from mbmt_ros.runtime.engine_cache import cache_dir, list_engines

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbmt-engine",
                                     description="Build and inspect TensorRT engines of a "
                                                 "model bundle.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = sub.add_parser("build", help="build and cache the engine for this GPU")
    build.add_argument("bundle", help="model bundle folder")
    build.add_argument("--precision", choices=("fp16", "fp32", "int8"), default="fp16")
    build.add_argument("--batch", type=int, default=1, help="(max) batch size (default 1)")
    build.add_argument("--dynamic-batch", action="store_true",
                       help="optimisation profile for batches 1..N instead of exactly N")
    space = build.add_mutually_exclusive_group()
    space.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB, metavar="MB",
                       help=f"builder workspace limit in MiB (default {DEFAULT_WORKSPACE_MB}, "
                            f"fits an 8 GB Jetson; 0 = TensorRT's default: all free memory)")
    space.add_argument("--workspace-gib", type=float, help=argparse.SUPPRESS)  # older name
    build.add_argument("--strongly-typed", action="store_true",
                       help="force a strongly typed network (automatic on TensorRT 11)")
    build.add_argument("--engine-dir", help="engine cache folder (default BUNDLE/engines)")
    build.add_argument("--calibration", metavar="NPY",
                       help="int8 only: .npy file of (N, H, W, 3) uint8 camera frames")
    build.add_argument("--force", action="store_true", help="rebuild even if a valid "
                                                            "engine is cached")
    build.add_argument("--skip-check", action="store_true",
                       help="do not run the static TensorRT-readiness check of the graphs")
    verify = sub.add_parser("verify", help="check a backend/precision/device on the bundle's "
                                           "reference set")
    verify.add_argument("bundle", help="model bundle folder")
    verify.add_argument("--backend", default="auto",
                        choices=("auto", "tensorrt", "onnxruntime", "openvino", "torch"))
    verify.add_argument("--precision", default="auto",
                        choices=("auto", "fp32", "fp16", "bf16", "int8"))
    verify.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu", "gpu"))
    verify.add_argument("--allow-fallback", action="store_true",
                        help="accept a precision/device other than the one asked for (WARN)")
    verify.add_argument("--engine-dir", help="engine cache folder (default BUNDLE/engines)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    info = sub.add_parser("info", help="print the bundle's meta data and cached engines")
    info.add_argument("bundle", help="model bundle folder")
    info.add_argument("--engine-dir", help="engine cache folder (default BUNDLE/engines)")
    info.add_argument("--json", action="store_true", help="print meta.json as JSON")
    return parser


def _build(args: argparse.Namespace) -> int:
    import numpy as np

    from mbmt_ros.runtime.cuda_device import device_count, gpu_info, workspace_bytes
    from mbmt_ros.runtime.errors import BackendError
    from mbmt_ros.runtime.trt_build import (
        BuildSettings,
        import_tensorrt,
        load_or_build_engine,
        make_logger,
    )

    bundle = Bundle.load(args.bundle, verify_checksums=True)
    if not args.skip_check:
        _check_graphs(bundle)
    trt = import_tensorrt()
    if device_count() == 0:
        raise BackendError("no CUDA GPU is visible: engines must be built on the GPU that "
                           "will run them")
    calibration = None
    if args.calibration:
        from mbmt_ros.runtime.processing import check_batch, resize_images

        calibration = resize_images(check_batch(np.load(args.calibration, allow_pickle=False)),
                                    bundle.input_size)
    settings = BuildSettings(
        precision=args.precision, batch=args.batch, dynamic_batch=args.dynamic_batch,
        workspace_bytes=workspace_bytes(
            {"workspace_mb": args.workspace_gib * 1024 if args.workspace_gib is not None
             else args.workspace_mb}),
        strongly_typed=True if args.strongly_typed else None, calibration_images=calibration)
    _, path = load_or_build_engine(trt, bundle, settings, gpu_info(0), make_logger(trt),
                                   args.engine_dir, rebuild=args.force)
    print(f"engine ready: {path}")
    return 0


def _check_graphs(bundle: Bundle) -> None:
    """The static TensorRT-readiness check (needs the ``onnx`` package; skipped with a note
    without it): a bundle exported by an older mbmt_ros (uint8 transposed before the cast)
    is refused here with the fix, instead of TensorRT failing minutes into the build."""
    import importlib.util

    from mbmt_ros.runtime.errors import TensorRTReadinessError
    from mbmt_ros.runtime.trt_readiness import assert_bundle_tensorrt_ready

    if importlib.util.find_spec("onnx") is None:
        logging.getLogger(__name__).info("onnx is not installed: TensorRT-readiness check "
                                         "skipped (pip install onnx to run it)")
        return
    try:
        assert_bundle_tensorrt_ready(bundle.path)
    except TensorRTReadinessError as exc:
        raise TensorRTReadinessError(f"{exc}. Re-export the bundle with this mbmt_ros "
                                     f"(`mbmt-train export`), or pass --skip-check") from exc


def _verify(args: argparse.Namespace) -> int:
    """Open the path asked for (fallback policy applies) with the reference check; 0 when it
    passes, 1 when a figure is outside its limit, 2 (error) for a bundle without a set."""
    from mbmt_ros.runtime.errors import BundleError, VerificationError
    from mbmt_ros.runtime.registry import open_predictor

    bundle = Bundle.load(args.bundle, verify_checksums=True)
    if bundle.reference_path is None:
        raise BundleError(f"{bundle.path} has no reference set (reference.npz): it was "
                          f"exported by an older mbmt_ros; re-export it with `mbmt-train "
                          f"export` to verify it on this machine")
    options = {"engine_cache_dir": args.engine_dir} if args.engine_dir else {}
    try:
        predictor = open_predictor(bundle, backend=args.backend, precision=args.precision,
                                   device=args.device, allow_fallback=args.allow_fallback,
                                   verify=True, **options)
    except VerificationError as exc:
        print(f"mbmt-engine verify: FAILED: {exc}", file=sys.stderr)
        return 1
    with predictor:
        result = predictor.verification
        report = {"result": result.as_dict() if result is not None else None,
                  **predictor.report()}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"path        {report['backend']} {report['precision']} on {report['device']} "
              f"({report['model_file']}; providers {report['providers']})")
        if predictor.fallback:
            print(f"fallback    {predictor.fallback}")
        print(f"verify      {report['verify']}")
    return 0


def _info(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle)
    meta = bundle.meta
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    prov = meta.get("provenance", {})
    print(f"bundle      {bundle.path}")
    print(f"schema      {meta['schema_version']}   arch {meta.get('arch')}")
    print(f"tasks       {', '.join(bundle.tasks)}")
    print(f"input       {bundle.input_size[0]}x{bundle.input_size[1]} uint8 RGB NHWC, "
          f"depth in {meta.get('depth_units', 'metres')}")
    if bundle.class_names:
        print(f"classes     {bundle.num_classes}: {', '.join(bundle.class_names)}")
    onnx = meta.get("onnx", {})
    print(f"onnx        exporter {onnx.get('exporter')}, opset {onnx.get('opset')}, "
          f"fp16 variant {onnx.get('fp16_variant') or 'none'}")
    for name, info in meta["files"].items():
        print(f"file        {name}  {info.get('size', '?')} bytes  sha256 "
              f"{str(info.get('sha256'))[:16]}...")
    for variant, report in meta.get("parity", {}).items():
        if variant != "tolerances":
            shown = {k: v for k, v in report.items() if isinstance(v, float)}
            print(f"parity      {variant}: " + ", ".join(f"{k}={v:.3g}" for k, v in shown.items()))
    code = prov.get("code_version", {})
    print(f"provenance  created {prov.get('created')}, mbmt_ros {code.get('mbmt_ros')}, "
          f"commit {str(code.get('git_commit'))[:12]}, checkpoint {prov.get('checkpoint')}")
    folders = {cache_dir(bundle, args.engine_dir), bundle.engine_dir}
    records = [r for folder in sorted(folders) for r in list_engines(folder)]
    if not records:
        print("engines     none cached (build with `mbmt-engine build BUNDLE`)")
    for record in records:
        if record.header is None:
            print(f"engine      {record.path}: UNUSABLE ({record.problem})")
            continue
        key = record.header["key"]
        stale = "" if key.get("model_sha256") == bundle.model_sha256 else \
            " [STALE: built from another model.onnx]"
        state = f" [{record.problem.upper()}]" if record.problem else ""
        print(f"engine      {record.path.name}: {key.get('precision')} batch "
              f"{key.get('max_batch')}{' dynamic' if key.get('dynamic_batch') else ''}, "
              f"{key.get('gpu_name')} sm{key.get('compute_capability')} "
              f"({key.get('sm_count') or '?'} SMs, {key.get('total_memory_mib') or '?'} MiB), "
              f"from {key.get('onnx_file') or 'model.onnx'}, TensorRT "
              f"{key.get('tensorrt_version')}, {record.header.get('payload_size')} bytes"
              f"{stale}{state}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return run_command("mbmt-engine", args.command,
                       lambda: {"build": _build, "verify": _verify,
                                "info": _info}[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
