"""Logging for the command lines: library modules log through ``logging.getLogger(__name__)`` and
never print; each CLI calls ``configure_logging()`` once, so INFO and above reach stderr as the bare
message. Only polyhead's own packages are configured: other libraries' logging is left as it is."""

from __future__ import annotations

import logging
import sys

PACKAGES = ("edge", "datasets", "train", "convert", "report")
"""The top-level packages whose loggers the CLIs configure."""


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (click's test runner swaps it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr


def configure_logging(level: int = logging.INFO) -> None:
    """Send the packages' records at ``level`` and above to stderr as the bare message; once only."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            logger.addHandler(_StderrHandler())
