"""mbmt_ros: multi-backbone multi-task dense perception for ROS 2 (ament_python package).

Installs with colcon (``colcon build``) on a robot and with plain ``pip`` on a workstation.
The heavy training dependencies are the ``train`` extra so that a robot can install only
the runtime (NumPy + ONNX Runtime or TensorRT).
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mbmt_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["mbmt_ros", "mbmt_ros.*", "training", "training.*"]),
    package_data={"mbmt_ros": ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        # found at run time by mbmt_ros.resources.share_file (pip, --user, colcon, checkout)
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz.template")
         + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/train", glob("config/train/*.yaml")),
        (f"share/{PACKAGE}/scripts", ["scripts/ros_isolated"]),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "pillow"],
    extras_require={
        # Runtime on a robot without TensorRT.
        "onnx": ["onnxruntime"],
        # NVIDIA GPU runtime without TensorRT's own Python package: ONNX Runtime's CUDA and
        # TensorRT execution providers, and the CUDA runtime bindings the tensorrt backend
        # uses (cuda-bindings is what `cuda-python` installs; pinned directly because
        # cuda-python 13.4.4 requires cuda-bindings~=13.4.4, which conflicts with torch's
        # cuda-bindings 13.5.0 pin; `cuda.bindings` exists from 12.6.1 on, older cuda-python
        # only has `cuda.cudart`). Replaces the `onnx` extra: do not install both.
        "gpu": ["onnxruntime-gpu", "cuda-bindings>=12.6.1"],
        # CPU / Intel GPU runtime (robots without an NVIDIA GPU): backend openvino.
        "openvino": ["openvino"],
        # The node's capture of uncertain frames (capture.enabled) on a robot without `train`.
        "capture": ["rosbags"],
        # Everything the training module needs (workstation / CI).
        "train": [
            "torch",
            "torchvision",
            "timm",
            "lightning",
            "tensorboard",
            "safetensors",
            "onnx",
            "onnxscript",
            "onnxruntime",
            "rosbags",
            "matplotlib",
            "tqdm",
            "pydantic",
        ],
        # ROS 2 from PyPI wheels, for machines without a system ROS 2 install.
        "ros-wheels": [
            "ros-rclpy",
            "ros-rmw-fastrtps-cpp",
            "ros-sensor-msgs",
            "ros-std-msgs",
            "ros-diagnostic-msgs",
            "ros-lifecycle-msgs",
            "ros-builtin-interfaces",
        ],
        "dev": ["pytest", "pytest-timeout", "hypothesis", "ruff"],
    },
    zip_safe=True,
    maintainer="mbmt_ros developers",
    maintainer_email="mbmt-ros@users.noreply.github.com",
    description="Multi-backbone multi-task segmentation, depth and normals for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mbmt-train = training.cli:main",
            "mbmt-engine = mbmt_ros.runtime.engine_cli:main",
            "mbmt-replay = mbmt_ros.ros.replay:main",
            "perception_node = mbmt_ros.ros.perception_node:main",
        ],
    },
)
