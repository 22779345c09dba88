"""Which DDS profile the perception node's process gets: the launch file's transport decision.

Fast DDS (the default ROS 2 middleware) sends to other processes on the machine through a
shared-memory segment owned by the publisher, 512 KiB by default; the node's full-size outputs
do not fit and then arrive seconds late (a reliable retransmission). The package ships
``config/fastdds_profile.xml`` with a segment sized for them; :func:`node_transport_env`
decides whether the node's process gets it, from the launch argument ``dds_profile`` and
the environment the launch runs in:

- ``dds_profile:=none`` - no profile from us (the middleware's defaults or the user's env);
- ``dds_profile:=/path/profile.xml`` - that file (it must exist);
- ``dds_profile:=`` (default) - the shipped profile, unless the user chose another middleware
  (``RMW_IMPLEMENTATION`` not Fast DDS) or their own Fast DDS set-up (a profiles file in
  ``FASTDDS_DEFAULT_PROFILES_FILE`` / ``FASTRTPS_DEFAULT_PROFILES_FILE``, or
  ``FASTDDS_BUILTIN_TRANSPORTS``), which is then left alone. With the shipped profile the node
  also publishes asynchronously (``RMW_FASTRTPS_PUBLICATION_MODE=ASYNCHRONOUS``, unless the
  user set that variable): ``publish`` then returns once the message is in the writer's
  history and Fast DDS's own thread delivers it. rclpy holds the GIL for the whole of a
  synchronous ``publish`` (the copy into shared memory and the wake-up of every reader), which
  the node's other threads (the camera callback, the inference thread) wait for;
  ``benchmarks/node_latency.py`` measures both modes.

ROS-free and launch-free, so that it is unit-tested where ``launch_ros`` is not installed.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mbmt_ros.errors import MbmtError

__all__ = ["PROFILE_ENV", "DISABLE", "PUBLICATION_MODE_ENV", "TransportChoice", "DdsProfileError", "is_fast_dds",
           "node_transport_env", "shipped_profile"]

#: The variables Fast DDS reads its profiles file from (3.x, and 2.x's older name).
PROFILE_ENV = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
#: ROS distributions shipping Fast DDS 2.x, which reads only the older name (Kilted's 3.x
#: warns that the older name is deprecated, so it is set only where it is needed).
_FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
#: Fast DDS's own switch of its built-in transports (a choice the user made).
BUILTIN_TRANSPORTS_ENV = "FASTDDS_BUILTIN_TRANSPORTS"
#: ``dds_profile:=none`` disables the profile.
DISABLE = "none"
#: rmw_fastrtps's publication mode (SYNCHRONOUS by default since Humble).
PUBLICATION_MODE_ENV = "RMW_FASTRTPS_PUBLICATION_MODE"


class DdsProfileError(MbmtError, ValueError):
    """``dds_profile:=`` names a file that does not exist."""


@dataclass(frozen=True)
class TransportChoice:
    """What to add to the node's environment (``env``, empty: nothing) and why (``reason``,
    one line for the launch log)."""

    env: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def profile(self) -> str | None:
        return self.env.get(PROFILE_ENV[0])


def shipped_profile() -> Path:
    """The installed ``config/fastdds_profile.xml``."""
    from mbmt_ros.resources import share_file

    return share_file("config", "fastdds_profile.xml")


def is_fast_dds(rmw_implementation: str | None) -> bool:
    """True for the ROS default (unset) and the Fast DDS RMWs (``rmw_fastrtps_*``)."""
    return not rmw_implementation or rmw_implementation.strip().startswith("rmw_fastrtps")


def _profile_env(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``FASTDDS_DEFAULT_PROFILES_FILE``, plus 2.x's name on a distribution with Fast DDS 2.x
    (or when ``ROS_DISTRO`` is unset: the version is unknown)."""
    distro = environ.get("ROS_DISTRO", "").strip().lower()
    names = PROFILE_ENV if distro in ("", *_FAST_DDS_2_DISTROS) else PROFILE_ENV[:1]
    return {name: str(path) for name in names}


def node_transport_env(environ: Mapping[str, str], dds_profile: str = "",
                       default_profile: Path | None = None) -> TransportChoice:
    """The environment additions for the node's process (see the module docstring).

    ``environ`` is the launch's environment, ``dds_profile`` the launch argument,
    ``default_profile`` the shipped profile (found with :func:`shipped_profile` when None).
    Raises :class:`DdsProfileError` for a ``dds_profile`` path that is not a file."""
    arg = dds_profile.strip()
    if arg.lower() == DISABLE:
        return TransportChoice(reason="dds_profile:=none: no DDS profile from mbmt_ros")
    if arg:
        path = Path(arg).expanduser()
        if not path.is_file():
            raise DdsProfileError(
                f"launch argument dds_profile:={arg!r}: no such file; give a Fast DDS XML "
                "profile, or 'none' to start the node without one")
        return TransportChoice(_profile_env(path.resolve(), environ),
                               f"DDS profile {path} (dds_profile:=)")
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if not is_fast_dds(rmw):
        return TransportChoice(reason=f"RMW_IMPLEMENTATION={rmw}: not Fast DDS, no DDS profile "
                                      "applied (see docs/node.md, Transports)")
    own = [name for name in (*PROFILE_ENV, BUILTIN_TRANSPORTS_ENV) if environ.get(name, "").strip()]
    if own:
        return TransportChoice(reason=f"{own[0]}={environ[own[0]]} is set: the user's Fast DDS "
                                      "set-up is kept, the shipped profile is not applied")
    path = default_profile if default_profile is not None else shipped_profile()
    env = _profile_env(path, environ)
    mode = environ.get(PUBLICATION_MODE_ENV, "").strip()
    if not mode:
        env[PUBLICATION_MODE_ENV] = "ASYNCHRONOUS"
    return TransportChoice(env, f"DDS profile {path} (shared memory sized for full-size outputs; "
                                f"{PUBLICATION_MODE_ENV}={mode or 'ASYNCHRONOUS'}; "
                                "dds_profile:=none disables)")
