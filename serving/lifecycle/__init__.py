"""Serving lifecycle: start a TF Serving container (or the embedded server) over the model
repository, roll versions out on TF Serving's labels (canary, promote, rollback, hold), and
clean up.

The pipeline runner deploys each push through `pipelines/operations/post_push.py`, which calls
`serving.lifecycle.rollout` (load_canary, promote, withdraw_canary); the CLI is
`python -m serving` (serving/__main__.py).
"""

from serving.lifecycle.api import (current, down, logs, recorded_repository, running_server_for,
                                   sample_prediction, scale, status, up, wait_for_version)
from serving.lifecycle.config import DEFAULT_IMAGE, DEFAULT_STATE_DIR, STANDIN_IMAGE, UpConfig
from serving.lifecycle.errors import (EnvironmentProblem, Held, LifecycleError, NotRunning,
                                      ServerExited, VersionFailed, WaitTimeout)

__all__ = ["up", "down", "status", "scale", "wait_for_version", "sample_prediction",
           "running_server_for", "recorded_repository", "logs", "current", "UpConfig", "DEFAULT_IMAGE",
           "STANDIN_IMAGE", "DEFAULT_STATE_DIR",
           "LifecycleError", "EnvironmentProblem", "Held", "NotRunning", "ServerExited",
           "VersionFailed", "WaitTimeout"]
