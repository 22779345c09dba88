"""The fallback policy: compare what a backend really runs with what was asked, once, for all
backends.

A backend reports what its session / compiled model / engine actually executes (precision,
device, the file it loaded, the providers that loaded). :func:`check_delivery` compares that
with the request: ``auto`` accepts anything; an explicit precision or device that was not
delivered raises :class:`FallbackError` naming both, unless the caller passed
``allow_fallback=True`` - then the fallback is logged at WARN (never INFO) and returned as a
one-line description that the predictor keeps for ``/diagnostics``.
"""
from __future__ import annotations

import logging

from mbmt_ros.runtime.errors import FallbackError

__all__ = ["check_delivery", "describe_fallback"]

_log = logging.getLogger(__name__)


def describe_fallback(backend: str, requested: tuple[str, str], ran: tuple[str, str],
                      reasons: list[str] | tuple[str, ...] = ()) -> str | None:
    """``"requested fp16 on cuda, ran fp32 on cpu (why...)"`` when ``ran`` = (precision,
    device) differs from an explicit part of ``requested``; ``None`` when it was delivered."""
    (want_p, want_d), (got_p, got_d) = requested, ran
    wrong = [(w, g) for w, g in ((want_p, got_p), (want_d, got_d)) if w != "auto" and w != g]
    if not wrong:
        return None
    why = f" ({'; '.join(reasons)})" if reasons else ""
    return f"{backend}: requested {want_p} on {want_d}, ran {got_p} on {got_d}{why}"


def check_delivery(backend: str, requested: tuple[str, str], ran: tuple[str, str], *,
                   allow_fallback: bool = False,
                   reasons: list[str] | tuple[str, ...] = ()) -> str | None:
    """``None`` when ``ran`` is what was ``requested``; else the fallback's description
    (logged at WARN) with ``allow_fallback``, or :class:`FallbackError` without it."""
    text = describe_fallback(backend, requested, ran, reasons)
    if text is None:
        return None
    if not allow_fallback:
        raise FallbackError(
            f"{text}. Ask for what this machine runs (precision/device auto, or the values "
            f"above), or accept the fallback with allow_fallback (node parameter "
            f"allow_fallback: true, open_predictor(..., allow_fallback=True), "
            f"mbmt-engine verify --allow-fallback)")
    _log.warning("fallback accepted (allow_fallback): %s", text)
    return text
