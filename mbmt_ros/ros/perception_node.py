"""The managed (lifecycle) perception node: camera image in, segmentation / depth / normals out.

Transitions (``ros2 lifecycle set /perception_node <transition>``):

- **configure** validates the parameters and opens the model bundle's backend (a TensorRT
  engine is built or taken from the cache here, the slow step);
- **activate** creates the publishers, the subscriptions and the inference thread;
- **deactivate** stops inference and removes them (``release_on_deactivate`` also closes
  the backend, freeing GPU memory);
- **cleanup** closes the backend; **shutdown** tears everything down.

With ``autostart`` (default) :func:`main` configures and activates at once, so ``ros2 run``
and ``ros2 launch`` just work. The subscription callback only stores the newest frame; the
inference thread (:mod:`mbmt_ros.ros.inference_worker`) converts, predicts and publishes,
with the input header, only the outputs that have subscribers. Topics, parameters and
diagnostics are documented in ``docs/node.md``.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.publisher import Publisher
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mbmt_ros.errors import MbmtError
from mbmt_ros.ros.colorize import load_palette, palette_lut
from mbmt_ros.ros.compressed import decode_compressed
from mbmt_ros.ros.diagnostics import FrameStats
from mbmt_ros.ros.errors import ImageConversionError, NodeParameterError
from mbmt_ros.ros.image_conversions import to_rgb8
from mbmt_ros.ros.inference_worker import InferenceWorker, LatestSlot
from mbmt_ros.ros.outputs import POINTS, TOPICS_BY_TASK, OutputOptions, build_outputs
from mbmt_ros.ros.params import PARAMETERS, NodeParams, qos_profile, validate_params
from mbmt_ros.ros.pointcloud import intrinsics_from_camera_info
from mbmt_ros.tasks import DEPTH, default_palette

__all__ = ["PerceptionNode", "PredictorFactory", "main"]

#: ``(bundle_dir, backend, precision, device) -> Predictor``; the default is
#: :func:`mbmt_ros.runtime.open_predictor` (tests may wrap it).
PredictorFactory = Callable[[str, str, str, str], Any]
_WARN_THROTTLE_S = 5.0


@dataclass(frozen=True)
class _Frame:
    msg: Image | CompressedImage
    received_ns: int


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


def _default_factory(bundle: str, backend: str, precision: str, device: str) -> Any:
    from mbmt_ros.runtime import open_predictor  # imported on configure, not at start-up

    return open_predictor(bundle, backend=backend, precision=precision, device=device)


class PerceptionNode(LifecycleNode):
    """See the module docstring. ``predictor_factory`` replaces ``open_predictor``."""

    def __init__(self, node_name: str = "perception_node", *,
                 predictor_factory: PredictorFactory | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._factory = predictor_factory or _default_factory
        self._log_handler = _RosLogHandler(self.get_logger())
        runtime_log = logging.getLogger("mbmt_ros.runtime")
        runtime_log.addHandler(self._log_handler)
        if runtime_log.getEffectiveLevel() > logging.INFO:
            runtime_log.setLevel(logging.INFO)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, ParameterDescriptor(
                description=spec.description, dynamic_typing=True,
                additional_constraints="" if spec.min is None else f"range [{spec.min}, {spec.max}]"))
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
        self._camera_info: CameraInfo | None = None

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters and open the backend; FAILURE (node stays unconfigured)
        with a logged reason on any bad value or unusable bundle."""
        try:
            self.transition_error = ""
            values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
            self.params = validate_params(values)
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

    # ------------------------------------------------------------------ resources
    def _open_backend(self) -> None:
        p = self.params
        assert p is not None
        started = time.monotonic()
        self.predictor = self._factory(str(p.bundle), p.backend, p.precision, p.device)
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
        self.get_logger().info(
            f"opened bundle {p.bundle}: backend {self.predictor.backend}, precision "
            f"{self.predictor.precision}, device {p.device}, tasks {list(self._tasks)} "
            f"({time.monotonic() - started:.1f} s)")

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
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.stats = FrameStats()
        self._slot = LatestSlot()
        self._worker = InferenceWorker(self._slot, self._process, self._on_worker_error)
        self._worker.start()
        self._inputs = [self.create_subscription(Image, "image", self._on_image, in_qos)]
        if p.use_compressed:
            self._inputs.append(self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, in_qos))
        if p.pointcloud:
            self._inputs.append(self.create_subscription(
                CameraInfo, "camera_info", self._on_camera_info, in_qos))
        self._diag_timer = self.create_timer(p.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(f"active: publishing {topics} from {self.resolve_topic_name('image')}")

    def _stop_io(self) -> None:
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._worker is not None and not self._worker.stop():
            self.get_logger().warning("inference thread did not stop within 10 s")
        self._worker, self._slot = None, None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for pub in [*self._outputs.values(), self._diag_pub]:
            if pub is not None:
                self.destroy_publisher(pub)
        self._outputs, self._diag_pub = {}, None

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Image | CompressedImage) -> None:
        slot = self._slot
        if slot is not None:
            self.stats.on_received(slot.put(_Frame(msg, self.get_clock().now().nanoseconds)))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_worker_error(self, exc: BaseException) -> None:
        self.stats.on_error(f"{type(exc).__name__}: {exc}")
        self.get_logger().error(f"inference failed: {type(exc).__name__}: {exc}",
                                throttle_duration_sec=_WARN_THROTTLE_S)

    def _process(self, frame: _Frame) -> None:
        """Worker thread: decode, predict, publish the outputs somebody listens to."""
        msg = frame.msg
        try:
            rgb = decode_compressed(msg) if isinstance(msg, CompressedImage) else to_rgb8(msg)
        except ImageConversionError as exc:
            self.stats.on_rejected(str(exc))
            self.get_logger().warning(f"rejected frame from {msg.header.frame_id!r}: {exc}",
                                      throttle_duration_sec=_WARN_THROTTLE_S)
            return
        publishers = self._outputs
        wanted = {t for t, pub in publishers.items() if pub.get_subscription_count() > 0}
        if not wanted or self.predictor is None or self._options is None:
            return
        started = time.perf_counter()
        prediction = self.predictor.predict(rgb)
        inference_s = time.perf_counter() - started
        intrinsics = None
        if POINTS in wanted:
            intrinsics = self._intrinsics()
        outputs = build_outputs(prediction, np.asarray(rgb), msg.header, wanted, self._options, intrinsics)
        for topic, out in outputs.items():
            publishers[topic].publish(out)
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.stats.on_processed((now_ns - (stamp_ns or frame.received_ns)) / 1e9, inference_s)

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
        extra = {"backend": str(getattr(predictor, "backend", "none")),
                 "precision": str(getattr(predictor, "precision", "none")),
                 "device": self.params.device if self.params else "",
                 "tasks": ",".join(self._tasks)}
        status = FrameStats.to_status(self.stats.report(), f"{self.get_name()}: perception",
                                      self.get_fully_qualified_name(), extra)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """``ros2 run mbmt_ros perception_node [--ros-args ...]``: exit 1 if autostart fails."""
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
