"""The package builds in a ROS 2 workspace, as docs/robot.md tells a robot's user to build it.

``colcon build --packages-select mbmt_ros`` in a fresh workspace (the checkout copied to
``src/mbmt_ros``), with the system Python colcon runs on and no network; then the installed
layout that ``ros2 run`` and ``ros2 launch`` rely on is checked, and the installed
``perception_node --help`` runs from the install (the project's dependencies from this venv).
colcon comes from Debian (``scripts/ros_workspace_deps``, run by ``scripts/test``, installs it
as root); without it the test skips and names the packages.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from test_packaging import _source_copy

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "mbmt_ros"
COLCON_PACKAGES = ("colcon", "python3-colcon-ros", "python3-ament-package",
                   "python3-colcon-package-selection")


def _colcon() -> tuple[str, str]:
    """colcon's path and the Python it runs on; skips when colcon or an extension is missing."""
    hint = ("colcon with its ROS extensions is not installed: scripts/test installs it as root "
            f"(scripts/ros_workspace_deps), or `sudo apt-get install --no-install-recommends "
            f"{' '.join(COLCON_PACKAGES)}`")
    colcon = shutil.which("colcon")
    if colcon is None:
        pytest.skip(hint)
    first = Path(colcon).read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    python = first[2:].strip() if first.startswith("#!") else "python3"
    probe = subprocess.run([*python.split(), "-c",
                            "import colcon_ros, colcon_package_selection, ament_package"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{hint} ({' '.join(probe.stderr.strip().splitlines()[-1:])})")
    return colcon, python


def _system_env() -> dict[str, str]:
    """The environment of a shell on the robot: no venv, no PYTHONPATH from this test run."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and p != venv_bin)
    return env


def _console_scripts() -> list[str]:
    """The console scripts setup.py declares (``name = module:function``)."""
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return [ast.literal_eval(e).split("=")[0].strip() for e in value.elts]
    raise AssertionError("setup.py declares no console_scripts")


def _ros_wheel_libraries() -> str:
    """LD_LIBRARY_PATH for this venv's ROS 2 pip wheels (their bootstrapper re-executes the
    interpreter with it; a system Python does not run it)."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    return os.pathsep.join([str(Path(sys.prefix) / "lib"),
                            *map(str, sorted(purelib.glob("ros_*.libs")))])


def test_colcon_build_installs_what_ros2_run_and_launch_use(tmp_path: Path) -> None:
    colcon, _ = _colcon()
    ws = tmp_path / "ws"
    _source_copy(ws / "src" / PACKAGE)
    env = {**_system_env(), "COLCON_HOME": str(tmp_path / "colcon_home")}
    build = subprocess.run([colcon, "build", "--packages-select", PACKAGE], cwd=ws, env=env,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
    assert f"Finished <<< {PACKAGE}" in build.stdout + build.stderr

    prefix = ws / "install" / PACKAGE
    share = prefix / "share" / PACKAGE
    # the ament index marker: `ros2 run/launch mbmt_ros ...` find the package through it
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    assert (share / "package.xml").read_bytes() == (ROOT / "package.xml").read_bytes()
    assert (share / "launch" / "perception.launch.py").is_file()
    # every file of config/ (node parameters, DDS profile, rviz template, training configs)
    configs = {str(p.relative_to(ws / "src" / PACKAGE / "config"))
               for p in (ws / "src" / PACKAGE / "config").rglob("*") if p.is_file()}
    assert "perception.yaml" in configs and "train/tiny.yaml" in configs
    installed = {str(p.relative_to(share / "config")) for p in (share / "config").rglob("*")
                 if p.is_file()}
    assert configs <= installed, f"config files not installed: {sorted(configs - installed)}"
    scripts = _console_scripts()
    assert "perception_node" in scripts
    for script in scripts:  # `ros2 run` looks in lib/<package>
        assert os.access(prefix / "lib" / PACKAGE / script, os.X_OK), f"lib/{PACKAGE}/{script}"
    sites = sorted(prefix.glob("lib/python3*/site-packages"))
    assert len(sites) == 1 and (sites[0] / PACKAGE / "ros" / "perception_node.py").is_file()

    # `. install/setup.sh` (what `source install/setup.bash` does for sh), then the installed
    # node's --help, with the project's dependencies from this venv after the install's own
    shell = subprocess.run(["sh", "-c", ". install/setup.sh && env"], cwd=ws, env=env,
                           capture_output=True, text=True, check=True).stdout
    sourced = dict(line.split("=", 1) for line in shell.splitlines() if "=" in line)
    assert Path(sourced["AMENT_PREFIX_PATH"].split(os.pathsep)[0]) == prefix
    assert Path(sourced["PYTHONPATH"].split(os.pathsep)[0]) == sites[0]
    run_env = {**env, "AMENT_PREFIX_PATH": sourced["AMENT_PREFIX_PATH"],
               "PYTHONPATH": os.pathsep.join([sourced["PYTHONPATH"],
                                              sysconfig.get_paths()["purelib"]]),
               "LD_LIBRARY_PATH": _ros_wheel_libraries(), "_ROS_WHEELS_BOOTSTRAP_COMPLETE": "1"}
    node = prefix / "lib" / PACKAGE / "perception_node"
    # the script's own interpreter (what `ros2 run` executes) when this venv's compiled
    # packages fit it, else this venv's Python on the same installed script
    interpreter = node.read_text().split("\n", 1)[0][2:].strip()
    probe = subprocess.run([interpreter, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    same = probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2]))
    python = interpreter if same else sys.executable
    command = [str(node)] if same else [python, str(node)]
    help_run = subprocess.run([*command, "--help"], cwd=tmp_path, env=run_env,
                              capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0, help_run.stdout + help_run.stderr
    assert "usage: ros2 run mbmt_ros perception_node" in help_run.stdout
    # the node's data files come from the install, not from the checkout
    assert f"parameters (defaults): {share / 'config' / 'perception.yaml'}" in help_run.stdout
    assert f"launch file:           {share / 'launch' / 'perception.launch.py'}" in help_run.stdout
    # and `ros2 launch mbmt_ros perception.launch.py` finds the share folder in the ament index
    where = subprocess.run([python, "-c",
                            "from ament_index_python.packages import get_package_share_directory"
                            " as g; print(g('mbmt_ros'))"],
                           cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0 and Path(where.stdout.strip()) == share, where.stderr
