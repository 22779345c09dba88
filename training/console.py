"""A quiet console, a complete log file: what Lightning says routinely stays off the terminal.

Lightning prints its set-up chatter (``GPU available: ...``, ``Trainer.fit stopped ...``) as
INFO records - twice when it has attached its own handler besides ours - plus a cloud-logger
advert (``💡 Tip: ... litlogger / litmodels``), and warns about "modules in eval mode" at the
start of every training of an MBMT-Net, whose backbones are frozen (kept in eval mode) on
purpose. None of that helps a user watching a run, but it belongs in the record.

So filtering happens at the logging level, per handler: :func:`quiet_console` routes Python
warnings into logging (``logging.captureWarnings``), lets Lightning's records propagate to the
root logger only (no second handler, no duplicated lines) and gives every *console* handler
of the root logger a :class:`ConsoleFilter`; file handlers (:func:`stage_log_file`, the run's
``pipeline.log``) get no filter and keep every line. With ``mbmt-train -v`` (root level DEBUG)
the filter lets everything through.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ConsoleFilter", "QUIET_MESSAGES", "quiet_console", "console_quiet", "stage_log_file",
           "LOG_FORMAT"]

#: The format of every handler the training CLI installs (console and files).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Loggers whose routine (INFO and below) records stay off the console.
_CHATTY_LOGGERS = ("lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities")

#: Messages (substrings) that never reach the console, whatever their level: Lightning's
#: cloud-logger tips and the expected eval-mode warning of frozen backbones.
QUIET_MESSAGES = (
    "💡 Tip:",
    "litlogger",
    "litmodels",
    "module(s) in eval mode at the start of training",
)


def _chatty(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in _CHATTY_LOGGERS)


class ConsoleFilter(logging.Filter):
    """Drops Lightning's INFO chatter and the :data:`QUIET_MESSAGES` - unless the root logger
    is at DEBUG (``-v``), when a user asked to see everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        if record.levelno <= logging.INFO and _chatty(record.name):
            return False
        message = record.getMessage()
        return not any(text in message for text in QUIET_MESSAGES)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def quiet_console(level: int | None = None) -> None:
    """Install the quiet console (idempotent; call again after importing Lightning); ``level``
    (e.g. ``logging.WARNING`` for ``mbmt-train -q``) also raises the console handlers' level,
    leaving the log files complete.

    Does nothing to Lightning's own handlers while the root logger has none: a library user
    without logging set up then still sees Lightning's messages.
    """
    root = logging.getLogger()
    if not root.handlers:
        return
    logging.captureWarnings(True)  # warnings -> the "py.warnings" logger -> our handlers
    for name in list(logging.root.manager.loggerDict):
        if not _chatty(name):
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if _is_console(handler):  # Lightning's own StreamHandler: the duplicated lines
                logger.removeHandler(handler)
        logger.propagate = True
    for handler in root.handlers:
        if not _is_console(handler):
            continue
        if level is not None:
            handler.setLevel(level)
        if not any(isinstance(f, ConsoleFilter) for f in handler.filters):
            handler.addFilter(ConsoleFilter())


def console_quiet() -> bool:
    """True when the console shows warnings only (``mbmt-train -q``): the root logger, or
    every console handler it has, is above INFO."""
    root = logging.getLogger()
    consoles = [h for h in root.handlers if _is_console(h)]
    return root.getEffectiveLevel() > logging.INFO or bool(
        consoles and all(h.level > logging.INFO for h in consoles))


@contextmanager
def stage_log_file(path: str | Path) -> Iterator[Path]:
    """Append every log record (unfiltered) to ``path`` while the block runs; a re-run or a
    resumed stage appends to the same file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
