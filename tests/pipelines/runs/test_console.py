"""output_to_log catches what TensorFlow and subprocesses write to the raw file descriptors."""

from __future__ import annotations

import os
import subprocess
import sys

from pipelines.runs.console import output_to_log


def test_fd_level_output_goes_to_the_log_and_the_console_stays_usable(tmp_path, capfd):
    log = tmp_path / "logs" / "run.log"
    with output_to_log(log) as console:
        os.write(1, b"raw fd 1\n")
        os.write(2, b"raw fd 2\n")
        subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
        console.write("progress line\n")
    print("after")
    captured = capfd.readouterr()
    assert log.read_text().splitlines() == ["raw fd 1", "raw fd 2", "from a child process"]
    assert "progress line" in captured.out and "after" in captured.out
    assert "raw fd" not in captured.out + captured.err
