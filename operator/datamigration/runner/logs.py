"""The runner's log: plain lines on stdout, one per event, every line scrubbed of secrets.

Why stdout and plain text: the runner is a Job's container, read with `kubectl logs`, and the
operator turns the last lines into the failure message. Every record (including tracebacks)
passes through the `Scrubber` in the formatter, the single exit for text from the library code.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

LOGGER_NAME = "datamigration"
_MARK = "_datamigration_runner_handler"


class ScrubbingFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <message>`, scrubbed."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        self._scrub = scrub

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime(datefmt or "%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))

    def format(self, record: logging.LogRecord) -> str:
        return self._scrub(super().format(record))


def configure(scrub: Callable[[str], str], level: int = logging.INFO) -> logging.Logger:
    """Send the `datamigration` loggers to the current stdout (replacing an earlier setup)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ScrubbingFormatter(scrub))
    setattr(handler, _MARK, True)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
