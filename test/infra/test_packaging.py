"""The package installs as a ROS 2 ament_python package and with pip, as the README says."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "mbmt_ros"
    assert root.find("export/build_type").text == "ament_python"


#: rosdep keys package.xml may use, each known to resolve: ROS 2 packages (released in every
#: supported distro) and Python keys of rosdistro's rosdep/python.yaml (resolved against a
#: snapshot of the real index by test_rosdep_keys.py).
ALLOWED_KEYS = {
    # ROS 2 packages
    "rclpy", "rcl_interfaces", "builtin_interfaces", "lifecycle_msgs", "sensor_msgs",
    "std_msgs", "diagnostic_msgs", "ament_index_python", "launch", "launch_ros",
    # rosdistro rosdep/python.yaml
    "python3-numpy", "python3-yaml", "python3-pil", "python3-onnxruntime-pip",
    "python3-rosbags-pip", "python3-pytest", "python3-hypothesis",
}
#: Third-party modules the installed runtime (mbmt_ros minus the torch models) imports, and
#: the rosdep key that provides each; None = deliberately not a rosdep dependency (why).
RUNTIME_MODULES = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "builtin_interfaces": "builtin_interfaces",
    "lifecycle_msgs": "lifecycle_msgs", "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs",
    "diagnostic_msgs": "diagnostic_msgs", "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy", "yaml": "python3-yaml", "PIL": "python3-pil",
    "onnxruntime": "python3-onnxruntime-pip",
    "tensorrt": None, "pycuda": None, "cuda": None,  # JetPack / NVIDIA, not rosdep
    "openvino": None, "torch": None, "safetensors": None,  # optional backends (pip extras)
    "onnx": None,  # export-time TensorRT-readiness check (train extra), not on the robot
    "rosbags": "python3-rosbags-pip",  # mbmt-replay, the node's capture of uncertain frames
}


def _dependencies(tag: str) -> set[str]:
    return {e.text.strip() for e in ET.parse(ROOT / "package.xml").getroot().iter(tag)}


def test_package_xml_declares_valid_rosdep_keys_and_no_rviz():
    keys = set().union(*(_dependencies(t) for t in ("depend", "exec_depend", "build_depend",
                                                    "buildtool_depend", "test_depend")))
    assert keys <= ALLOWED_KEYS, f"not known rosdep keys: {sorted(keys - ALLOWED_KEYS)}"
    assert "rviz2" not in keys  # a headless robot does not need it (docs/node.md)
    runtime = _dependencies("exec_depend") | _dependencies("depend")
    needed = {key for key in RUNTIME_MODULES.values() if key}
    assert needed <= runtime, f"runtime dependencies missing: {sorted(needed - runtime)}"


def _third_party_imports(where: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in [where] if where.is_file() else sorted(where.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("mbmt_ros", "training"):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_runtime_import_has_a_rosdep_key_or_a_reason():
    imports: dict[str, str] = {}
    for part in ("ros", "runtime", "errors.py", "io.py", "tasks.py", "camera.py", "resources.py"):
        imports.update(_third_party_imports(ROOT / "mbmt_ros" / part))
    unknown = {m: where for m, where in imports.items() if m not in RUNTIME_MODULES}
    assert not unknown, f"runtime imports without a package.xml decision: {unknown}"


def test_ament_resource_marker_and_setup_cfg_script_dir():
    assert (ROOT / "resource" / "mbmt_ros").is_file()
    cfg = (ROOT / "setup.cfg").read_text()
    # `ros2 run mbmt_ros perception_node` looks in lib/<package>
    assert "$base/lib/mbmt_ros" in cfg


def test_setup_py_installs_launch_and_config_into_share():
    tree = ast.parse((ROOT / "setup.py").read_text())
    source = ast.unparse(tree)
    for needle in ("share/{PACKAGE}/launch", "share/{PACKAGE}/config",
                   "share/ament_index/resource_index/packages"):
        assert needle in source


@pytest.mark.parametrize("script", ["mbmt-train", "mbmt-engine", "mbmt-replay", "perception_node"])
def test_console_scripts_are_installed(script):
    assert (VENV_BIN / script).exists(), f"{script} missing from {VENV_BIN}"


def test_mbmt_train_help_lists_every_stage():
    out = subprocess.run([str(VENV_BIN / "mbmt-train"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("summary", "synth", "extract-bag", "pretrain-st", "train-mbmt", "pseudo-label",
                    "train-student", "evaluate", "score", "pipeline", "export"):
        assert command in out


def test_constraints_pin_every_line():
    lines = [ln.strip() for ln in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines and all("==" in ln for ln in lines)


def _source_copy(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) copied to ``dest``: the install
    builds there, so it neither writes into nor reads from the working tree."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.slow
def test_non_editable_install_finds_configs_and_scripts_outside_the_checkout(tmp_path):
    """``pip install .`` (no -e) into a fresh environment, used from another directory: the
    demo's config and scripts come from the installed share/mbmt_ros, not the source tree."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    purelib = sysconfig.get_paths()["purelib"]
    # the dependencies (torch, ...) from this venv, as a plain path: its .pth files (the
    # editable install's finder among them) are not processed
    (Path(site) / "_mbmt_test_deps.pth").write_text(purelib + "\n")
    src = _source_copy(tmp_path / "src")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--no-index", "--quiet", str(src)], check=True, capture_output=True, timeout=300)
    shutil.rmtree(src)  # nothing may depend on the source any more
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def run(*args: str) -> str:
        proc = subprocess.run(args, cwd=outside, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert "--budget" in run(str(env / "bin" / "mbmt-train"), "demo", "--help")
    where = run(str(python), "-c", "import training, mbmt_ros.ros.rviz_config as r; "
                "from training.demo.orchestrate import default_config, ros_isolated; "
                "print(training.__file__); print(default_config()); print(ros_isolated()); "
                "print(r.share_file(*r.TEMPLATE))").split()
    assert all(Path(p).is_relative_to(env) for p in where), where
    assert os.access(where[2], os.X_OK)  # scripts/ros_isolated stays executable
    # the demo's first step, as the demo runs it: the pipeline on config/train/tiny.yaml
    run(str(env / "bin" / "mbmt-train"), "pipeline", "--config", "config/train/tiny.yaml",
        "--run-dir", "run", "--set", "data.synth.count=8", "--set", "stages.split.depth=6",
        "--set", "stages.split.segmentation=2", "--only", "split")
    assert (outside / "run" / "split" / "done.json").is_file()
    assert (outside / "run" / "data" / "manifest.json").is_file()


#: The training stack hidden from the "robot" environment below (top-level names in
#: site-packages, dist-info included).
HIDDEN = ("torch", "functorch", "torchgen", "torchvision", "torchmetrics", "triton", "timm",
          "lightning", "lightning_fabric", "pytorch_lightning", "onnxscript")


def _venv_without_torch(root: Path) -> Path:
    """A venv that sees this venv's packages except the training stack: a folder of symlinks
    to every site-packages entry but :data:`HIDDEN`, added as a site dir (its .pth files,
    the editable install's among them, apply). Returns its python."""
    env, deps = root / "env", root / "deps"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    deps.mkdir()
    for entry in purelib.iterdir():
        stem = entry.name.split("-")[0].split(".")[0]
        if stem not in HIDDEN:
            (deps / entry.name).symlink_to(entry)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "_mbmt_test_deps.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    return python


@pytest.mark.slow
def test_pytest_without_torch_collects_cleanly_and_skips_with_a_reason(tmp_path):
    python = _venv_without_torch(tmp_path)
    probe = subprocess.run([str(python), "-c", "import importlib.util as u, mbmt_ros.imaging.encodings;"
                            "print(u.find_spec('torch'))"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.strip() == "None", probe.stderr  # a robot: no torch, the runtime imports
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MBMT_NETNS", None)  # no ROS tests here
    # the ROS 2 pip wheels' shared libraries stay in this venv's lib/ (their bootstrapper
    # would look in the new venv's)
    libs = [str(Path(sys.prefix) / "lib"), *map(str, Path(sysconfig.get_paths()["purelib"]).glob("ros_*.libs"))]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")])
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
    proc = subprocess.run([str(python), "-m", "pytest", "--collect-only", "-q", "-rs", "test"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    items, summary = out.split("short test summary")
    assert "SKIPPED" in summary and "needs torch (the training stack" in summary
    assert "the model tests need torch" in summary  # test/models/conftest.py
    assert "test/models/test_model_factory.py::" not in items  # skipped, not collected
    assert "test/imaging/test_colorize.py::" in items  # the runtime tests are collected
    # and the runtime tests run: the shared decoder and colours need no torch
    run = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:randomly",
                          "test/ros/test_image_conversions.py", "test/imaging/test_colorize.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert " passed" in run.stdout


def test_documented_config_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    from training.config import installed_config

    monkeypatch.chdir(tmp_path)
    tiny = (ROOT / "config" / "train" / "tiny.yaml").resolve()
    for name in ("config/train/tiny.yaml", "tiny.yaml", "tiny"):
        assert installed_config(Path(name)).resolve() == tiny
    (tmp_path / "tiny.yaml").write_text("name: mine\n")  # a local file wins
    assert installed_config(Path("tiny.yaml")) == Path("tiny.yaml")
    assert installed_config(Path("nope.yaml")) == Path("nope.yaml")  # the error names it
