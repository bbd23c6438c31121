"""Serving lifecycle: start a TF Serving container (or the embedded server) over the model
repository, prove each pushed version is served, roll back, and clean up.

The pipeline runner calls `verify_pushed` (or `wait_for_version` and
`sample_prediction`) after a push; the CLI
is `python -m serving` (serving/__main__.py).
"""

from serving.lifecycle.api import (current, down, logs, rollback, running_server_for,
                                   sample_prediction, status, up, verify_pushed,
                                   wait_for_version)
from serving.lifecycle.config import DEFAULT_IMAGE, DEFAULT_STATE_DIR, STANDIN_IMAGE, UpConfig
from serving.lifecycle.errors import (EnvironmentProblem, LifecycleError, NotRunning,
                                      ServerExited, VersionFailed, WaitTimeout)

__all__ = ["up", "down", "status", "wait_for_version", "sample_prediction", "verify_pushed",
           "running_server_for", "rollback", "logs", "current", "UpConfig", "DEFAULT_IMAGE",
           "STANDIN_IMAGE", "DEFAULT_STATE_DIR",
           "LifecycleError", "EnvironmentProblem", "NotRunning", "ServerExited", "VersionFailed",
           "WaitTimeout"]
