"""Every package.xml key resolves in the real rosdistro index, as ``rosdep install`` needs.

``rosdep install --from-paths src`` on a robot fails on the first key it cannot resolve. The
test resolves each dependency key of package.xml against a snapshot of the public rosdistro
index (``../shared/data/rosdistro`` beside the repository, its README.md says what it holds),
for each supported distribution (Humble, Jazzy, Kilted) and each Ubuntu / Debian release that
distribution is released for (its ``release_platforms``), the way rosdep does:

- a ROS package key resolves when a repository of the distribution's ``distribution.yaml``
  has a release (a ``version``) listing it under ``release: packages:``, or is named after it
  when it lists none;
- a system key resolves when ``rosdep/base.yaml`` or ``rosdep/python.yaml`` has a rule for
  the OS (or ``*``) and, where the rule is keyed by release, for that release: a package list
  or an installer (``apt``, ``pip``, ...); ``null`` means "not available there".

Without the snapshot the tests skip and say where it is expected.
"""
from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT.parent / "shared" / "data" / "rosdistro"
DISTROS = ("humble", "jazzy", "kilted")
SYSTEM_FILES = ("rosdep/base.yaml", "rosdep/python.yaml")
#: The operating systems a robot runs the package on (rhel is a platform of the distributions
#: too, but python3-onnxruntime-pip and python3-rosbags-pip have no rule for it there).
OSES = ("ubuntu", "debian")
#: rosdep installers: a dict of these under an OS is an installer rule, not one keyed by release.
INSTALLERS = {"apt", "pip", "source", "dnf", "yum", "homebrew", "macports", "pacman",
              "portage", "zypper", "apk", "nix", "pkg", "gem", "npm", "choco", "emerge"}
DEPENDENCY_TAGS = ("depend", "build_depend", "buildtool_depend", "build_export_depend",
                   "exec_depend", "test_depend", "doc_depend")


def _load(relative: str) -> Any:
    path = SNAPSHOT / relative
    if not path.is_file():
        pytest.skip(f"the rosdistro snapshot is absent ({path} not found): copy rosdistro's "
                    f"rosdep/*.yaml and <distro>/distribution.yaml to {SNAPSHOT} "
                    "(see its README.md) to check package.xml's keys against the real index")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


@functools.cache
def _system_rules() -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for relative in SYSTEM_FILES:
        rules.update(_load(relative))
    return rules


@functools.cache
def _distribution(distro: str) -> dict[str, Any]:
    return _load(f"{distro}/distribution.yaml")


def released_packages(distribution: dict[str, Any]) -> set[str]:
    """The ROS packages released into a distribution (rosdep's ROS package keys)."""
    names: set[str] = set()
    for repo_name, repo in (distribution.get("repositories") or {}).items():
        release = (repo or {}).get("release") or {}
        if release.get("version"):
            names.update(release.get("packages") or [repo_name])
    return names


def platforms(distribution: dict[str, Any]) -> list[tuple[str, str]]:
    """(os, release) pairs of :data:`OSES` the distribution is released for."""
    listed = distribution.get("release_platforms") or {}
    return [(os_name, str(release)) for os_name in OSES for release in listed.get(os_name, [])]


def system_rule_resolves(rule: Any, os_name: str, release: str) -> bool:
    """Whether a rosdep rule installs something (or deliberately nothing, ``[]``) on
    ``os_name`` ``release``."""
    if not isinstance(rule, dict):
        return False
    entry = rule.get(os_name, rule.get("*"))
    if isinstance(entry, dict) and not set(entry) & INSTALLERS:  # keyed by release
        entry = entry.get(release, entry.get("*"))
    if entry is None:
        return False
    if isinstance(entry, (list, str)):
        return True
    return isinstance(entry, dict) and bool(set(entry) & INSTALLERS)


def unresolved(keys: set[str], distro: str) -> list[str]:
    """``key (os release)`` for each key that does not resolve in ``distro``'s platforms."""
    distribution = _distribution(distro)
    ros_packages = released_packages(distribution)
    rules = _system_rules()
    targets = platforms(distribution)
    assert targets, f"{distro}: no {OSES} platform in release_platforms"
    return [f"{key} ({os_name} {release})" for key in sorted(keys) if key not in ros_packages
            for os_name, release in targets
            if not system_rule_resolves(rules.get(key), os_name, release)]


def package_xml_keys() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for tag in DEPENDENCY_TAGS for e in root.iter(tag)}


@pytest.mark.parametrize("distro", DISTROS)
def test_every_package_xml_key_resolves(distro: str) -> None:
    keys = package_xml_keys()
    assert {"rclpy", "python3-onnxruntime-pip", "python3-rosbags-pip"} <= keys
    missing = unresolved(keys, distro)
    assert not missing, (f"package.xml keys that rosdep cannot resolve in {distro}: {missing}; "
                         "use a key of rosdep/python.yaml or base.yaml, or a released package")


@pytest.mark.parametrize("distro", DISTROS)
def test_made_up_keys_do_not_resolve(distro: str) -> None:
    """The resolver can fail: keys that exist nowhere are reported, on every platform."""
    made_up = {"python3-mbmt-no-such-module-pip", "mbmt_no_such_ros_package"}
    missing = unresolved(made_up | {"rclpy", "python3-numpy"}, distro)
    assert {m.split(" ")[0] for m in missing} == made_up
    assert len(missing) == 2 * len(platforms(_distribution(distro)))


def test_release_rules_and_null_entries() -> None:
    """How rosdep reads a rule: per-release entries, ``null`` = unavailable, installers."""
    rule = {"ubuntu": {"jammy": None, "noble": ["python3-x"]},
            "debian": {"pip": {"packages": ["x"]}}, "fedora": ["python3-x"]}
    assert not system_rule_resolves(rule, "ubuntu", "jammy")
    assert system_rule_resolves(rule, "ubuntu", "noble")
    assert system_rule_resolves(rule, "debian", "bookworm")  # installer rule: any release
    assert not system_rule_resolves(rule, "rhel", "9")
    assert system_rule_resolves({"*": {"pip": {"packages": ["x"]}}}, "ubuntu", "noble")
    assert not system_rule_resolves(None, "ubuntu", "noble")
