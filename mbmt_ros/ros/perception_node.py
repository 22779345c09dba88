"""The managed (lifecycle) perception node: camera image in, segmentation / depth / normals out.

Transitions (``ros2 lifecycle set /perception_node <transition>``):

- **configure** validates the parameters, opens the model bundle's backend (a TensorRT
  engine is built or taken from the cache here, the slow step) and runs one warm-up
  ``predict`` so that engine builds and algorithm searches happen before activate;
- **activate** creates the publishers, the subscriptions and the inference thread;
- **deactivate** stops inference and removes them (``release_on_deactivate`` also closes
  the backend, freeing GPU memory);
- **cleanup** closes the backend; **shutdown** tears everything down.

With ``autostart`` (default) :func:`main` configures and activates at once, so ``ros2 run``
and ``ros2 launch`` just work. The subscription callback only stores the newest frame; the
inference thread (:mod:`mbmt_ros.ros.inference_worker`) converts, predicts and publishes,
and hands the prediction to the publish thread (:mod:`mbmt_ros.ros.publish_stage`), which
builds and publishes, with the input header, only the outputs that have subscribers (a frame
nobody listens to is not even decoded) while the next frame is predicted; each step is
stamped for the timing figures of /diagnostics.

Parameters are declared from :data:`mbmt_ros.ros.params.PARAMETERS` with typed descriptors
and ranges; every set is checked by :meth:`PerceptionNode._on_set_parameters` (a bad value
is refused with the reason), cosmetic ones apply to the next frame and the rest at the next
configure. Topics, parameters and diagnostics are documented in ``docs/node.md``.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mbmt_ros.errors import MbmtError
from mbmt_ros.imaging.colorize import load_palette, palette_lut
from mbmt_ros.imaging.compressed import decode_compressed
from mbmt_ros.imaging.encodings import to_rgb8
from mbmt_ros.imaging.errors import ImageConversionError
from mbmt_ros.ros.capture import FrameCapture
from mbmt_ros.ros.capture_folder import prepare_directory
from mbmt_ros.ros.capture_policy import CaptureConfig
from mbmt_ros.ros.capture_topics import (
    COMPRESSED,
    IMAGE,
    CaptureMessage,
    ExtraTopics,
    topic_msgtype,
)
from mbmt_ros.ros.diagnostics import FrameStats, FrameTiming
from mbmt_ros.ros.errors import NodeParameterError
from mbmt_ros.ros.inference_worker import InferenceWorker, LatestSlot
from mbmt_ros.ros.node_help import print_help, wants_help
from mbmt_ros.ros.outputs import POINTS, TOPICS_BY_TASK, OutputOptions, build_outputs
from mbmt_ros.ros.params import (
    LIVE_PARAMETERS,
    PARAMETERS,
    SPECS,
    NodeParams,
    check_value,
    coerce_value,
    descriptor,
    field_name,
    qos_profile,
    validate_params,
)
from mbmt_ros.ros.pointcloud import intrinsics_from_camera_info
from mbmt_ros.ros.publish_stage import PublishStage
from mbmt_ros.runtime.predictor import runtime_report
from mbmt_ros.tasks import DEPTH, default_palette
from mbmt_ros.topics import CAMERA_INFO, DIAGNOSTICS, IMAGE_COMPRESSED, NODE_NAME
from mbmt_ros.topics import IMAGE as IMAGE_TOPIC

__all__ = ["PerceptionNode", "PredictorFactory", "main"]

#: ``(bundle_dir, backend, precision, device, **options) -> Predictor`` (options:
#: ``workspace_mb``, and ``num_threads`` when set); the default is
#: :func:`mbmt_ros.runtime.open_predictor` (tests may wrap it).
PredictorFactory = Callable[..., Any]
_WARN_THROTTLE_S = 5.0


@dataclass(frozen=True)
class _Frame:
    msg: Image | CompressedImage
    received_ns: int  # ROS clock (for the latency from the header stamp)
    received_mono_ns: int  # time.monotonic_ns (for the timing segments)


@dataclass(frozen=True)
class _Predicted:
    """A predicted frame on its way from the inference thread to the publish thread."""

    frame: _Frame
    rgb: np.ndarray
    prediction: dict[str, Any]
    wanted: frozenset[str]
    options: OutputOptions
    intrinsics: Any
    stamps: tuple[int, int, int, int]  # taken, converted, predict start, predict end (monotonic ns)


class _RosLogHandler(logging.Handler):
    """Forwards the runtime's Python log records (engine build / cache hit, backend choice)
    to the node's ROS logger, so they reach the console and /rosout."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {self.format(record)}"
            if record.levelno >= logging.ERROR:
                self._ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros_logger.warning(text)
            else:
                self._ros_logger.info(text)
        except Exception:  # logging must never break inference
            self.handleError(record)


def _default_factory(bundle: str, backend: str, precision: str, device: str, **options: Any) -> Any:
    from mbmt_ros.runtime import open_predictor  # imported on configure, not at start-up

    return open_predictor(bundle, backend=backend, precision=precision, device=device, **options)


def _warm_up(predictor: Any) -> bool:
    """One predict before activate (TensorRT engine build, cuDNN / EP algorithm search):
    the predictor's own ``warmup()`` if it has one, else a zero image of the bundle size.
    False when neither is possible."""
    warmup = getattr(predictor, "warmup", None)
    if callable(warmup):
        warmup()
        return True
    size = getattr(getattr(predictor, "bundle", None), "input_size", None)
    if not size:
        return False
    predictor.predict(np.zeros((int(size[0]), int(size[1]), 3), np.uint8))
    return True


class PerceptionNode(LifecycleNode):
    """See the module docstring. ``predictor_factory`` replaces ``open_predictor``."""

    def __init__(self, node_name: str = NODE_NAME, *,
                 predictor_factory: PredictorFactory | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._factory = predictor_factory or _default_factory
        self._log_handler = _RosLogHandler(self.get_logger())
        runtime_log = logging.getLogger("mbmt_ros.runtime")
        runtime_log.addHandler(self._log_handler)
        if runtime_log.getEffectiveLevel() > logging.INFO:
            runtime_log.setLevel(logging.INFO)
        #: start-up values (``-p``, params file) refused by their descriptor, by name: the
        #: parameter keeps its default and configure fails with the reason until it is set
        self._refused: dict[str, str] = {}
        self._declare_parameters()
        if hasattr(self, "add_pre_set_parameters_callback"):  # rclpy >= Jazzy
            self.add_pre_set_parameters_callback(self._coerce_parameters)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.params: NodeParams | None = None
        #: Why the last configure/activate failed ("" when it did not).
        self.transition_error = ""
        self.predictor: Any = None
        self.stats = FrameStats()
        self._options: OutputOptions | None = None
        self._tasks: tuple[str, ...] = ()
        self._outputs: dict[str, Publisher] = {}
        self._inputs: list[Any] = []
        self._diag_pub: Publisher | None = None
        self._diag_timer: Any = None
        self._slot: LatestSlot[_Frame] | None = None
        self._worker: InferenceWorker[_Frame] | None = None
        self._publish_stage: PublishStage[_Predicted] | None = None
        self._camera_info: CameraInfo | None = None
        self._capture: FrameCapture | None = None  # capture.* (mbmt_ros.ros.capture)
        self._capture_extra: ExtraTopics | None = None
        #: What runs (providers, model file, fallback, reference check), for /diagnostics.
        self._runtime_report: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters and open the backend; FAILURE (node stays unconfigured)
        with a logged reason on any bad value or unusable bundle."""
        try:
            self.transition_error = ""
            if self._refused:
                raise NodeParameterError(next(iter(self._refused.values())))
            values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
            self.params = validate_params(values)
            if self.params.capture_enabled:  # refuse an unusable capture.dir now, not at activate
                prepare_directory(self.params.capture_dir)
            self._open_backend()
        except Exception as exc:  # a backend may raise anything (e.g. a CUDA error)
            detail = str(exc) if isinstance(exc, (MbmtError, ValueError)) else f"{type(exc).__name__}: {exc}"
            self.transition_error = f"configure failed: {detail}"
            self.get_logger().error(self.transition_error)
            self._close_backend()
            self.params = None
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Create publishers, subscriptions, the inference thread and the diagnostics timer."""
        assert self.params is not None
        try:
            if self.predictor is None:  # closed by release_on_deactivate
                self._open_backend()
        except (MbmtError, ValueError) as exc:
            self.transition_error = f"activate failed: {exc}"
            self.get_logger().error(self.transition_error)
            return TransitionCallbackReturn.FAILURE
        try:
            self._start_io()
        except Exception as exc:  # leave nothing half-created behind
            self._stop_io()
            self.transition_error = f"activate failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.transition_error)
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop inference and remove subscriptions, publishers and the timer."""
        self._stop_io()
        if self.params is not None and self.params.release_on_deactivate:
            self._close_backend()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Close the backend (frees GPU memory); parameters are read again on configure."""
        self._close_backend()
        self.params = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self._close_backend()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drop every resource and go back to unconfigured."""
        self._stop_io()
        self._close_backend()
        self.params = None
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._stop_io()
        self._close_backend()
        logging.getLogger("mbmt_ros.runtime").removeHandler(self._log_handler)
        super().destroy_node()

    def autostart(self) -> bool:
        """Configure and activate when the ``autostart`` parameter is true; False when a
        transition failed (the reason is logged)."""
        if not self.get_parameter("autostart").value:
            self.get_logger().info("autostart is false: waiting for lifecycle transitions")
            return True
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        """Declare :data:`PARAMETERS` with their descriptors. A start-up value of the wrong
        type or out of range would make rclpy raise here; it is kept aside instead (see
        ``_refused``) so that the node comes up and configure names the problem."""
        overrides = getattr(self, "_parameter_overrides", {})  # rclpy: -p and params-file values
        for spec in PARAMETERS:
            override = overrides.get(spec.name)
            if override is not None and override.value is not None:
                value = coerce_value(spec.name, override.value)
                if value is not override.value:
                    overrides[spec.name] = Parameter(spec.name, value=value)
            try:
                self.declare_parameter(spec.name, spec.default, descriptor(spec))
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                try:
                    check_value(spec.name, override.value if override is not None else None)
                    reason = str(exc)
                except NodeParameterError as bad:
                    reason = str(bad)
                self._refused[spec.name] = f"{reason} (start-up value refused; the default is used)"
                self.declare_parameter(spec.name, spec.default, descriptor(spec), ignore_override=True)

    def _coerce_parameters(self, params: list[Parameter]) -> list[Parameter]:
        """Pre-set callback: an integer for a float parameter becomes that float."""
        out = []
        for param in params:
            value = coerce_value(param.name, param.value)
            out.append(param if value is param.value else Parameter(param.name, value=value))
        return out

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Refuse a bad value with the reason (``ros2 param set`` prints it); apply cosmetic
        parameters to the next frame; log that the others apply at the next configure."""
        checked: dict[str, Any] = {}
        for param in params:
            if param.name not in SPECS:  # rclpy's own (use_sim_time ...)
                continue
            try:
                checked[param.name] = check_value(param.name, param.value)
            except NodeParameterError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        for name, value in checked.items():
            self._refused.pop(name, None)
            if name == "autostart":
                self.get_logger().info("parameter autostart is only read at start-up")
            elif name in LIVE_PARAMETERS and self._options is not None and self.params is not None:
                self._options = dataclasses.replace(self._options, **{name: value})
                self.params = dataclasses.replace(self.params, **{field_name(name): value})
                self.get_logger().info(f"parameter {name}={value!r} applies from the next frame")
            else:
                self.get_logger().info(
                    f"parameter {name}={value!r} accepted; it applies at the next configure "
                    "(ros2 lifecycle set <node> deactivate, cleanup, configure, activate)")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ resources
    def _open_backend(self) -> None:
        p = self.params
        assert p is not None
        started = time.monotonic()
        options: dict[str, Any] = {"workspace_mb": p.workspace_mb,  # backends ignore what they lack
                                   "verify": p.verify, "allow_fallback": p.allow_fallback}
        if p.num_threads:
            options["num_threads"] = p.num_threads
        self.predictor = self._factory(str(p.bundle), p.backend, p.precision, p.device, **options)
        self._runtime_report = runtime_report(self.predictor)  # reference check + fallback (issue 20)
        bundle_tasks = tuple(self.predictor.tasks)
        missing = [t for t in p.tasks if t not in bundle_tasks]
        if missing:
            raise NodeParameterError(
                f"parameter tasks asks for {missing} but bundle {p.bundle} only has {list(bundle_tasks)}")
        self._tasks = p.tasks or bundle_tasks
        if p.pointcloud and DEPTH not in self._tasks:
            raise NodeParameterError(
                f"parameter pointcloud=true needs the depth task; enabled tasks are {list(self._tasks)}")
        num_classes = len(self.predictor.class_names)
        palette = (load_palette(p.palette_file, num_classes) if p.palette_file
                   else list(self.predictor.palette) or default_palette(num_classes))
        self._options = OutputOptions(
            lut=palette_lut(palette), overlay_alpha=p.overlay_alpha, min_confidence=p.min_confidence,
            pointcloud_stride=p.pointcloud_stride, pointcloud_color=p.pointcloud_color,
            max_depth=p.max_depth)
        opened = time.monotonic()
        warmed = _warm_up(self.predictor)
        warm_text = f"warm-up predict {time.monotonic() - opened:.2f} s" if warmed else "no warm-up"
        pred = self.predictor
        threads = f", {p.num_threads} CPU threads" if p.num_threads else ""
        self.get_logger().info(
            f"opened bundle {p.bundle}: backend {pred.backend}, precision {pred.precision}, "
            f"device {getattr(pred, 'device', 'unknown')}{threads}, tasks {list(self._tasks)} "
            f"(open {opened - started:.1f} s, {warm_text}); model {self._runtime_report['model_file']}, "
            f"providers {self._runtime_report['providers']}, verify {self._runtime_report['verify']}")

    def _close_backend(self) -> None:
        predictor, self.predictor = self.predictor, None
        if predictor is not None:
            predictor.close()

    def _start_io(self) -> None:
        p = self.params
        assert p is not None
        out_qos = qos_profile(p.output_qos, p.output_depth)
        in_qos = qos_profile(p.input_qos, p.input_depth)
        topics = [t for task in self._tasks for t in TOPICS_BY_TASK[task]]
        if p.pointcloud:
            topics.append(POINTS)
        self._outputs = {t: self.create_publisher(PointCloud2 if t == POINTS else Image, t, out_qos)
                            for t in topics}
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self.stats = FrameStats(window=p.diagnostics_window)
        self._slot = LatestSlot()
        self._publish_stage = PublishStage(self._publish, self._on_worker_error)
        self._publish_stage.start()
        self._worker = InferenceWorker(self._slot, self._process, self._on_worker_error)
        self._worker.start()
        # one transport: a camera publishing both would otherwise double the input
        self._inputs = [self.create_subscription(CompressedImage, IMAGE_COMPRESSED, self._on_image, in_qos)
                        if p.use_compressed else
                        self.create_subscription(Image, IMAGE_TOPIC, self._on_image, in_qos)]
        if p.pointcloud:
            self._inputs.append(self.create_subscription(
                CameraInfo, CAMERA_INFO, self._on_camera_info, in_qos))
        if p.capture_enabled:
            self._start_capture(p)
        self._diag_timer = self.create_timer(p.diagnostics_period, self._publish_diagnostics)
        source = self.resolve_topic_name(IMAGE_COMPRESSED if p.use_compressed else IMAGE_TOPIC)
        self.get_logger().info(f"active: publishing {topics} from {source}")

    def _stop_io(self) -> None:
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._worker is not None and not self._worker.stop():
            self.get_logger().warning("inference thread did not stop within 10 s")
        self._worker, self._slot = None, None
        stage, self._publish_stage = self._publish_stage, None  # after the worker: it feeds it
        if stage is not None and not stage.stop():
            self.get_logger().warning("publish thread did not stop within 10 s")
        capture, self._capture, self._capture_extra = self._capture, None, None
        if capture is not None and not capture.close():
            self.get_logger().warning("capture thread did not finish within 10 s")
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for pub in [*self._outputs.values(), self._diag_pub]:
            if pub is not None:
                self.destroy_publisher(pub)
        self._outputs, self._diag_pub = {}, None

    def _start_capture(self, p: NodeParams) -> None:
        """The capture writer thread and a raw (undecoded) subscription per extra topic."""
        from rclpy.serialization import serialize_message

        logger = self.get_logger()
        qos = qos_profile(p.input_qos, max(p.input_depth, 5))
        topics = [(self.resolve_topic_name(t), topic_msgtype(t), t) for t in p.capture_topics]
        extra = ExtraTopics((full, msgtype) for full, msgtype, _ in topics)
        types = {IMAGE: Image, COMPRESSED: CompressedImage, topic_msgtype(CAMERA_INFO): CameraInfo}
        for full, msgtype, name in topics:
            self._inputs.append(self.create_subscription(
                types[msgtype], name,
                lambda data, full=full: extra.put(full, data, self.get_clock().now().nanoseconds),
                qos, raw=True))
        self._capture_extra = extra
        self._capture = FrameCapture(CaptureConfig.from_params(p), serialize_message,
                                     logger.info, logger.warning)
        logger.info(f"capturing uncertain frames to {self._capture.root} "
                    f"(with {[full for full, _, _ in topics]})")

    def _offer_capture(self, msg: Image | CompressedImage, prediction: dict[str, Any],
                       stamp_ns: int) -> None:
        """Inference thread: hand the frame to the capture if it is wanted (never blocks)."""
        capture, extra = self._capture, self._capture_extra
        if capture is None:
            return
        source = self.resolve_topic_name(IMAGE_COMPRESSED if isinstance(msg, CompressedImage)
                                         else IMAGE_TOPIC)
        msgtype = COMPRESSED if isinstance(msg, CompressedImage) else IMAGE
        capture.offer(prediction.get("segmentation_confidence"), lambda: [
            CaptureMessage(source, msgtype, stamp_ns, msg),
            *(extra.nearest(stamp_ns) if extra is not None else [])], stamp_ns)  # camera time

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Image | CompressedImage) -> None:
        received_mono = time.monotonic_ns()
        slot = self._slot
        if slot is not None:
            frame = _Frame(msg, self.get_clock().now().nanoseconds, received_mono)
            self.stats.on_received(slot.put(frame))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_worker_error(self, exc: BaseException) -> None:
        self.stats.on_error(f"{type(exc).__name__}: {exc}")
        self.get_logger().error(f"inference failed: {type(exc).__name__}: {exc}",
                                throttle_duration_sec=_WARN_THROTTLE_S)

    def _process(self, frame: _Frame) -> None:
        """Inference thread: if some output has a subscriber (or capture is on), decode,
        predict and hand the prediction to the publish thread (:meth:`_publish`)."""
        taken = time.monotonic_ns()
        msg, publishers, stage = frame.msg, self._outputs, self._publish_stage
        predictor, options = self.predictor, self._options
        wanted = frozenset(t for t, pub in publishers.items() if pub.get_subscription_count() > 0)
        if ((not wanted and self._capture is None) or predictor is None or options is None
                or stage is None):
            self.stats.on_skipped()
            return
        try:
            rgb = decode_compressed(msg) if isinstance(msg, CompressedImage) else to_rgb8(msg)
        except ImageConversionError as exc:
            self.stats.on_rejected(str(exc))
            self.get_logger().warning(f"rejected frame from {msg.header.frame_id!r}: {exc}",
                                      throttle_duration_sec=_WARN_THROTTLE_S)
            return
        converted = time.monotonic_ns()
        intrinsics = self._intrinsics() if POINTS in wanted else None
        predict_start = time.monotonic_ns()
        prediction = predictor.predict(rgb)
        predict_end = time.monotonic_ns()
        stage.put(_Predicted(frame, np.asarray(rgb), prediction, wanted, options, intrinsics,
                             (taken, converted, predict_start, predict_end)))

    def _publish(self, item: _Predicted) -> None:
        """Publish thread: build and publish the outputs somebody listens to, then offer the
        frame to the capture; stamps the frame's :class:`FrameTiming` (``built`` includes any
        wait for the publish thread)."""
        frame, prediction, publishers = item.frame, item.prediction, self._outputs
        msg = frame.msg
        taken, converted, predict_start, predict_end = item.stamps
        outputs = build_outputs(prediction, item.rgb, msg.header, item.wanted, item.options,
                                item.intrinsics)
        built = time.monotonic_ns()
        for topic, out in outputs.items():
            pub = publishers.get(topic)
            if pub is not None:
                pub.publish(out)
        published = time.monotonic_ns()
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        timing = FrameTiming(frame.received_mono_ns, taken, converted, predict_start, predict_end,
                             built, published)
        self.stats.on_processed((now_ns - (stamp_ns or frame.received_ns)) / 1e9,
                                (predict_end - predict_start) / 1e9, timing,
                                (frame.received_ns - stamp_ns) / 1e9 if stamp_ns else float("nan"))
        self._offer_capture(msg, prediction, stamp_ns or frame.received_ns)  # after publishing

    def _intrinsics(self) -> Any:
        info = self._camera_info
        if info is None:
            self.get_logger().warning("~/points needs camera_info; none received yet",
                                      throttle_duration_sec=_WARN_THROTTLE_S)
            return None
        try:
            return intrinsics_from_camera_info(info)
        except ImageConversionError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=_WARN_THROTTLE_S)
            return None

    def _publish_diagnostics(self) -> None:
        pub, predictor = self._diag_pub, self.predictor
        if pub is None:
            return
        extra = {"backend": str(getattr(predictor, "backend", "none")),  # what runs, not what was asked
                 "precision": str(getattr(predictor, "precision", "none")),
                 "device": str(getattr(predictor, "device", "none")),
                 "tasks": ",".join(self._tasks)}
        extra.update({k: v for k, v in self._runtime_report.items() if k not in extra})
        capture = self._capture
        if capture is not None:
            extra.update(capture.values())
        conditions = ([(DiagnosticStatus.WARN, f"capture: {capture.state}")]
                      if capture is not None and capture.state != "capturing" else [])
        status = FrameStats.to_status(self.stats.report(), f"{self.get_name()}: perception",
                                      self.get_fully_qualified_name(), extra, conditions)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """``ros2 run mbmt_ros perception_node [--ros-args ...]``: exit 1 if autostart fails."""
    if wants_help(sys.argv if args is None else args):
        return print_help()
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = PerceptionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if not node.autostart():
            code = 1
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
