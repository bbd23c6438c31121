"""Keep the console readable during a run: progress and summary there, everything else in a log.

This module imports nothing heavy, so it can take over the file descriptors before
TensorFlow is imported and prints its start-up noise.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO


@contextlib.contextmanager
def output_to_log(log_path: Path) -> Iterator[TextIO]:
    """Send everything written to fds 1 and 2 to `log_path`; yield a stream to the console.

    TensorFlow's C++ logging, Beam, and the Trainer's pip and setuptools subprocesses all
    write straight to the file descriptors, so redirecting sys.stdout would not catch them.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()
