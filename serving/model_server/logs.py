"""The model server's log lines, in tensorflow_model_server's format, for every process of
it (the model process and its front-end workers)."""

from __future__ import annotations

import logging
import sys
import time


class TFLogFormatter(logging.Formatter):
    """`2026-01-01 12:00:00.123456: I serving/model_server/core/manager.py:42] message`."""

    def format(self, record):
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        micros = int((record.created % 1) * 1e6)
        level = record.levelname[0]
        path = record.pathname
        idx = path.find("serving/model_server")
        path = path[idx:] if idx >= 0 else record.filename
        message = super().format(record)
        return f"{t}.{micros:06d}: {level} {path}:{record.lineno}] {message}"


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TFLogFormatter("%(message)s"))
    root = logging.getLogger("serving.model_server")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
