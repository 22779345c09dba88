"""The launch file's transport decision (:mod:`mbmt_ros.dds_profile`) and the shipped profile."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mbmt_ros.dds_profile import (
    PROFILE_ENV,
    PUBLICATION_MODE_ENV,
    DdsProfileError,
    is_fast_dds,
    node_transport_env,
    shipped_profile,
)

REPO = Path(__file__).resolve().parents[2]
NS = {"dds": "http://www.eprosima.com"}


def test_shipped_profile_is_installed_and_sizes_shared_memory_for_full_size_outputs() -> None:
    path = shipped_profile()
    assert path.name == "fastdds_profile.xml" and path.is_file()
    assert 'glob("config/*.xml")' in (REPO / "setup.py").read_text()  # installed with the package
    root = ET.parse(path).getroot()
    [shm] = [d for d in root.iterfind(".//dds:transport_descriptor", NS)
             if d.findtext("dds:type", namespaces=NS) == "SHM"]
    segment = int(shm.findtext("dds:segment_size", namespaces=NS))
    every_output_480x640 = 480 * 640 * (1 + 3 + 4 + 12 + 3 + 20)  # stride-1 cloud: 20 B/point
    assert segment >= 2 * every_output_480x640  # several frames in flight
    [participant] = root.iterfind(".//dds:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = {t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", NS)}
    assert shm.findtext("dds:transport_id", namespaces=NS) in used
    assert len(used) == 2  # UDPv4 stays for consumers on other machines


def test_default_applies_the_shipped_profile_with_fast_dds(tmp_path) -> None:
    shipped = tmp_path / "p.xml"
    for env in ({}, {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"},
                {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}):
        choice = node_transport_env(env, "", shipped)
        assert choice.env == {**{name: str(shipped) for name in PROFILE_ENV},  # version unknown
                              PUBLICATION_MODE_ENV: "ASYNCHRONOUS"}
        assert choice.profile == str(shipped) and "none" in choice.reason
    # Fast DDS 2.x (up to Jazzy) reads only the older name; 3.x warns that it is deprecated
    jazzy = node_transport_env({"ROS_DISTRO": "jazzy"}, "", shipped).env
    assert set(jazzy) == {*PROFILE_ENV, PUBLICATION_MODE_ENV}
    kilted = node_transport_env({"ROS_DISTRO": "kilted"}, "", shipped).env
    assert set(kilted) == {PROFILE_ENV[0], PUBLICATION_MODE_ENV}
    assert node_transport_env({}, "").profile == str(shipped_profile())


def test_a_publication_mode_the_user_set_is_kept(tmp_path) -> None:
    choice = node_transport_env({PUBLICATION_MODE_ENV: "SYNCHRONOUS"}, "", tmp_path / "p.xml")
    assert choice.profile == str(tmp_path / "p.xml") and PUBLICATION_MODE_ENV not in choice.env
    assert f"{PUBLICATION_MODE_ENV}=SYNCHRONOUS" in choice.reason
    assert PUBLICATION_MODE_ENV not in node_transport_env({}, "none", tmp_path / "p.xml").env


@pytest.mark.parametrize("rmw", ["rmw_cyclonedds_cpp", "rmw_zenoh_cpp", "rmw_connextdds"])
def test_another_middleware_gets_no_profile(rmw, tmp_path) -> None:
    choice = node_transport_env({"RMW_IMPLEMENTATION": rmw}, "", tmp_path / "p.xml")
    assert choice.env == {} and rmw in choice.reason
    assert not is_fast_dds(rmw) and is_fast_dds(None) and is_fast_dds("")


@pytest.mark.parametrize("var", [*PROFILE_ENV, "FASTDDS_BUILTIN_TRANSPORTS"])
def test_the_users_own_fast_dds_setup_is_kept(var, tmp_path) -> None:
    choice = node_transport_env({var: "/home/me/mine.xml"}, "", tmp_path / "p.xml")
    assert choice.env == {} and var in choice.reason
    assert node_transport_env({var: "  "}, "", tmp_path / "p.xml").env  # blank = unset


def test_the_argument_overrides_or_disables(tmp_path) -> None:
    mine = tmp_path / "mine.xml"
    mine.write_text("<dds/>")
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp", PROFILE_ENV[0]: "/other.xml"}
    assert node_transport_env(env, str(mine), tmp_path / "p.xml").profile == str(mine.resolve())
    for off in ("none", "None", " NONE "):
        assert node_transport_env({}, off, tmp_path / "p.xml").env == {}
    with pytest.raises(DdsProfileError, match="dds_profile:=.*no such file.*'none'"):
        node_transport_env({}, str(tmp_path / "missing.xml"), tmp_path / "p.xml")
