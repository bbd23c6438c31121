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


PUSHED = Outcome("pushed", 0, "a new version was pushed and is stable: verified as the "
                              "canary and promoted when a server is up, promoted unverified "
                              "when none is")
CANDIDATE = Outcome("candidate", 0, "--no-promote (and every notebook experiment): a new "
                                    "version was published as a candidate, not loaded "
                                    "(`python -m serving promote` serves it)")
UNCHANGED = Outcome("unchanged", 0, "the model equals the latest version; nothing to push")
ERROR = Outcome("error", 1, "a component failed, unreadable data, unwritable "
                            "repository, ...")
ANOMALIES = Outcome("anomalies", 1, "the new data does not match the schema; nothing pushed")
USAGE = Outcome("usage", 2, "bad command line")
NOT_BLESSED = Outcome("not blessed", 3, "the Evaluator's gates (or InfraValidator) did not "
                                        "pass; nothing pushed")
NOT_SERVED = Outcome("rejected", 4, "pushed, but the canary did not serve well (failed to "
                                    "load, or below the gate in the smoke check): withdrawn "
                                    "as .rejected-N; stable never changed")
NOTHING_NEW = Outcome("nothing new", 5, "no span newer than the last one trained on")
LOCKED = Outcome("locked", 6, "another run of the same model is in progress")
DRIFT = Outcome("drift", 7, "the new span drifted beyond a threshold; nothing pushed "
                            "(--accept-drift lets it through)")
DISK_FULL = Outcome("disk full", 8, "a disk ran out of space: the repository's during the "
                                    "push, or the pipeline root's; the message names the "
                                    "filesystem, its free space and the path. Nothing "
                                    "half-written is served; free space and run again")
HELD = Outcome("held", 9, "pushed as a candidate, not promoted: an operator holds the model "
                          "(`python -m serving hold`); the output says who, when, why and how "
                          "to promote it")
ABANDONED = Outcome("abandoned", 143, "stopped by SIGTERM or SIGINT; nothing pushed")

ALL: Tuple[Outcome, ...] = (PUSHED, CANDIDATE, UNCHANGED, ERROR, ANOMALIES, USAGE,
                            NOT_BLESSED, NOT_SERVED, NOTHING_NEW, LOCKED, DRIFT, DISK_FULL,
                            HELD, ABANDONED)
# Not a command's outcome: how a run that only ingested an older span into the training
# window ended, as `history` shows it.
INGESTED = Outcome("ingested", 0, "an older span passed the data gates into the window")

# Not a command's outcome either: a run whose process died without ending (SIGKILL, the
# OOM killer, a power loss), as the next run of the model records it when it takes over
# the dead run's lock. 137 is how a shell reports a process killed by SIGKILL.
KILLED = Outcome("killed", 137, "the run's process died without ending (SIGKILL, the OOM "
                                "killer, a power loss); the next run of the model found its "
                                "lock free and recorded it")

# `run`'s canary check is one sample prediction (it has no eval span at hand).
RUN_NOT_SERVED = Outcome("rejected", 4, "pushed, but the canary did not load or did not "
                                        "answer a sample prediction: withdrawn as "
                                        ".rejected-N; stable never changed")
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
    "run": (PUSHED, CANDIDATE, ERROR, USAGE, NOT_BLESSED, RUN_NOT_SERVED, LOCKED, DISK_FULL,
            HELD, ABANDONED),
    "retrain": ALL,
    "schedule": (STOPPED, USAGE),
    "make-spans": (DONE, SPANS_FAILED, USAGE),
    "history": (DONE, FAILED, USAGE),
    "compile": (DONE, FAILED, USAGE),
    "gc": (DONE, FAILED, USAGE),
    "new": (DONE, FAILED, USAGE),
}


def exit_codes_help(outcomes=ALL, title: str = "exit codes:") -> str:
    """The `exit codes:` block of --help."""
    lines = [title]
    for o in outcomes:
        lines.append(f"  {o.exit_code:<3} {o.name}: {o.meaning}")
    return "\n".join(lines)


def worst(codes) -> int:
    """The exit code of several runs (`run a b`): errors first, then the most serious."""
    order = [ERROR.exit_code, DISK_FULL.exit_code, ABANDONED.exit_code, DRIFT.exit_code,
             NOT_SERVED.exit_code, NOT_BLESSED.exit_code, LOCKED.exit_code, HELD.exit_code,
             NOTHING_NEW.exit_code]
    for code in order:
        if code in codes:
            return code
    return PUSHED.exit_code
