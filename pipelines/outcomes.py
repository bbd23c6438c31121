"""How a run ends: one table of outcomes, each with its exit code and what it means.

The exit codes are stable: cron, systemd and scripts act on them. The outcome's name is
what ML Metadata records for the run and what `python -m pipelines history` shows.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class Outcome:
    name: str
    exit_code: int
    meaning: str


PUSHED = Outcome("pushed", 0, "a new version was pushed (and served, when a server is up)")
UNCHANGED = Outcome("unchanged", 0, "the model equals the latest version; nothing to push")
ERROR = Outcome("error", 1, "a component failed, unreadable data, unwritable "
                            "repository, ...")
ANOMALIES = Outcome("anomalies", 1, "the new data does not match the schema; nothing pushed")
USAGE = Outcome("usage", 2, "bad command line")
NOT_BLESSED = Outcome("not blessed", 3, "the Evaluator's gates (or InfraValidator) did not "
                                        "pass; nothing pushed")
NOT_SERVED = Outcome("rolled back", 4, "pushed, but the running server did not serve it well "
                                       "(failed to load, or below the gate in the smoke "
                                       "check): rolled back to the previous version")
NOTHING_NEW = Outcome("nothing new", 5, "no span newer than the last one trained on")
LOCKED = Outcome("locked", 6, "another run of the same model is in progress")
DRIFT = Outcome("drift", 7, "the new span drifted beyond a threshold; nothing pushed "
                            "(--accept-drift lets it through)")
DISK_FULL = Outcome("disk full", 8, "a disk ran out of space: the repository's during the "
                                    "push, or the pipeline root's; the message names the "
                                    "filesystem, its free space and the path. Nothing "
                                    "half-written is served; free space and run again")
ABANDONED = Outcome("abandoned", 143, "stopped by SIGTERM or SIGINT; nothing pushed")

ALL: Tuple[Outcome, ...] = (PUSHED, UNCHANGED, ERROR, ANOMALIES, USAGE, NOT_BLESSED,
                            NOT_SERVED, NOTHING_NEW, LOCKED, DRIFT, DISK_FULL, ABANDONED)
# Not a command's outcome: how a run that only ingested an older span into the training
# window ended, as `history` shows it.
INGESTED = Outcome("ingested", 0, "an older span passed the data gates into the window")

# `run` never rolls back (only `retrain` does): its exit 4 leaves the pushed version in place.
RUN_NOT_SERVED = Outcome("not served", 4, "pushed, but the running server did not serve it "
                                          "(it failed to load, or was not AVAILABLE within "
                                          "--timeout); nothing was rolled back: the version "
                                          "stays in the repository")
# The other commands' outcomes.
DONE = Outcome("done", 0, "the command did what it says")
FAILED = Outcome("error", 1, "the command failed; the message says why")
SPANS_FAILED = Outcome("error", 1, "a bad --out, data that cannot be loaded, or a span that "
                                   "already exists; nothing was written")
STOPPED = Outcome("stopped", 0, "the loop ended: SIGTERM/SIGINT or --max-runs (each run's own "
                                "exit code is in the loop's output)")

# Each command's exit codes, as its --help lists them (`python -m pipelines COMMAND --help`).
BY_COMMAND = {
    "list": (DONE, USAGE),
    "run": (PUSHED, ERROR, USAGE, NOT_BLESSED, RUN_NOT_SERVED, LOCKED, DISK_FULL, ABANDONED),
    "retrain": ALL,
    "schedule": (STOPPED, USAGE),
    "make-spans": (DONE, SPANS_FAILED, USAGE),
    "history": (DONE, FAILED, USAGE),
    "compile": (DONE, FAILED, USAGE),
}


def exit_codes_help(outcomes=ALL, title: str = "exit codes:") -> str:
    """The `exit codes:` block of --help."""
    lines = [title]
    for o in outcomes:
        lines.append(f"  {o.exit_code:<3} {o.name}: {o.meaning}")
    return "\n".join(lines)


def worst(codes) -> int:
    """The exit code of several runs (`run a b`): errors first, then the most serious."""
    order = [ERROR.exit_code, DISK_FULL.exit_code, ABANDONED.exit_code, DRIFT.exit_code, NOT_SERVED.exit_code,
             NOT_BLESSED.exit_code, LOCKED.exit_code, NOTHING_NEW.exit_code]
    for code in order:
        if code in codes:
            return code
    return PUSHED.exit_code
