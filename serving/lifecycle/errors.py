"""Errors the lifecycle raises, each with the exit code the CLI returns and the next step.

The CLI maps an exception to its exit code in one place, so scripts can tell "the model
did not come up" (1) from "the machine is not set up" (3) from "nothing is running" (4).
"""

from __future__ import annotations

# Exit codes of `python -m serving` (documented in its --help).
EXIT_OK = 0
EXIT_FAILED = 1       # the operation ran and failed: timeout, load error, verification
EXIT_USAGE = 2        # bad flags (argparse)
EXIT_ENVIRONMENT = 3  # port taken, daemon down, image missing, repository cannot be made
EXIT_NOT_RUNNING = 4  # no server recorded by `up` (status: the recorded one stopped)

# (code, meaning): the table every `python -m serving` command's --help lists.
EXIT_CODES = (
    (EXIT_OK, "done (status: every model healthy or waiting for its first version; down: "
              "also when nothing was running)"),
    (EXIT_FAILED, "the operation failed: a version failed to load, a timeout, a promote "
                  "or rollback not verified (the server is back to what it served), no such "
                  "version or no rollback target, the server exited (up removes it); "
                  "status: a model is not healthy"),
    (EXIT_USAGE, "bad command line: an unknown or renamed option, a bad path, number or name"),
    (EXIT_ENVIRONMENT, "environment not ready: port taken, Docker daemon not answering, "
                       "image missing, the repository cannot be made (the message says the "
                       "next step)"),
    (EXIT_NOT_RUNNING, "no server recorded for this --state-dir (status, predict: the "
                       "recorded one stopped; with --json, status still prints its answer)"),
)


class LifecycleError(RuntimeError):
    """A failure with a message for humans and, where there is one, the next step to take."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, next_step: str = "", details: str = ""):
        super().__init__(message)
        self.message = message
        self.next_step = next_step
        self.details = details

    def __str__(self) -> str:
        text = self.message
        if self.next_step:
            text += f"\nNext step: {self.next_step}"
        if self.details:
            text += f"\n{self.details}"
        return text


class EnvironmentProblem(LifecycleError):
    """The machine is not ready (port, daemon, image, path): fixable before retrying."""

    exit_code = EXIT_ENVIRONMENT


class NotRunning(LifecycleError):
    """No server recorded in the state directory (or it is gone)."""

    exit_code = EXIT_NOT_RUNNING


class Held(LifecycleError):
    """An unattended change (a pipeline run's canary or promote) refused: an operator holds
    the model (`python -m serving hold`)."""


class CanaryBusy(LifecycleError):
    """Another run's canary of the same model is being checked: one canary at a time."""


class ServerExited(LifecycleError):
    """The server process or container stopped on its own (bad flag, crash)."""


class VersionFailed(LifecycleError):
    """The server reported the awaited version as failed to load (state END with an error)."""


class WaitTimeout(LifecycleError):
    """The awaited version did not become AVAILABLE in time."""
