"""End to end: a rollout as an operator lives it, with half_plus_two, a real model server
process and the real `run` / `retrain` / `serving` commands. Steps run in order and rely on
each other (one server for the module):

1. version 1 is published and served (`up` adopts it as stable);
2. `run` pushes version 2: checked as the canary through the server, then promoted;
3. the operator rolls back (stable 1 again; version 2 stays published) and holds the model
   (a rollback alone is no hold: the next good push would be promoted);
4. `run` pushes version 3 while held: a candidate, never loaded; the run says who held the
   model, when and why, and exits 9 without waiting on the server;
5. `retrain` pushes version 4 while held: a candidate too, exit 9, nothing withdrawn;
6. the operator promotes 4 (served, the hold stays), then rolls back to 1;
7. released, `run --no-promote` pushes version 5 as a candidate: exit 0, the server as it was;
8. a push that reports the rolled-back version 2 again leaves it published and stable at 1.

No good version is ever withdrawn as `.rejected-N`. The commands run through their CLI's
main() in the test's process (the same arguments, exit codes and output, without a new
interpreter importing TensorFlow and TFX for each), as tests/pipelines/operations/test_retrain_e2e.py
does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components import half_plus_two_data
from serving import lifecycle, rollouts
from serving.lifecycle import health
from serving.lifecycle.config import UpConfig
from serving.repository import ModelRepository
from toolkit_testing import publish_copy, run_main, served_labels, version_dirs

pytestmark = pytest.mark.e2e

MODEL = "half_plus_two"
EXIT_PUSHED, EXIT_CANDIDATE, EXIT_HELD = 0, 0, 9
# Far longer than any step takes: a held run must return without waiting any of it out.
TIMEOUT = "300"
REASON = "version 2 answers late under load; investigating"


class Scenario:
    def __init__(self, root: Path):
        self.root = root
        self.repository = root / "repo"
        self.runs = root / "runs"
        self.state = root / "serving"
        self.spans = root / "spans"

    @property
    def model_dir(self) -> Path:
        return self.repository / MODEL

    def data(self, seed: int) -> Path:
        """A CSV data set of its own (the project's generator, another seed): a run on it
        trains a new model, not the cached one."""
        data_dir = self.root / f"data-{seed}"
        half_plus_two_data.write_examples(data_dir, 500, seed=seed)
        return data_dir

    def run(self, *extra: str):
        return run_main("pipelines", "run", MODEL, "--profile", "fast",
                        "--repository", str(self.repository), "--pipeline-root", str(self.runs),
                        "--state-dir", str(self.state), "--timeout", TIMEOUT, *extra)

    def retrain(self):
        return run_main("pipelines", "retrain", MODEL, "--data", str(self.spans),
                        "--profile", "fast", "--repository", str(self.repository),
                        "--pipeline-root", str(self.runs), "--state-dir", str(self.state),
                        "--infra-validation", "off", "--timeout", TIMEOUT)

    def serving(self, command: str, *extra: str):
        """`python -m serving COMMAND --model half_plus_two` (the repository: the running
        server's)."""
        return run_main("serving", command, "--model", MODEL, "--state-dir", str(self.state),
                        *extra)

    def record(self) -> rollouts.Rollout:
        return rollouts.load(self.model_dir, MODEL)

    def labels(self):
        return served_labels(self.rest_url, MODEL)

    @property
    def rest_url(self) -> str:
        return lifecycle.current(self.state).addresses.rest_url

    def events_for(self, version: int):
        return [e["action"] for e in self.record().events if e["version"] == version]


def _output(result) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, saved_model_templates):
    s = Scenario(tmp_path_factory.mktemp("rollout"))
    version, _ = publish_copy(s.repository, MODEL, saved_model_templates / "hp2_v1")
    assert version == 1
    lifecycle.up(UpConfig(repository=s.repository, models=(MODEL,), state_dir=s.state,
                          backend="process", grpc_port=0, rest_port=0,
                          file_system_poll_seconds=1, wait_seconds=180))
    yield s
    lifecycle.down(s.state, timeout=10)


def test_1_the_published_version_is_stable_and_served(scenario):
    assert scenario.labels() == {"stable": 1, "previous": None, "default": 1}
    record = scenario.record()
    assert (record.stable, record.previous, record.hold) == (1, None, None)


def test_2_a_run_checks_its_push_as_the_canary_and_promotes_it(scenario):
    result = scenario.run()
    assert result.returncode == EXIT_PUSHED, _output(result)
    assert "half_plus_two: pushed version 2" in result.stdout
    assert "serving: version 2 is the canary on " in result.stdout
    assert "(half_plus_two-canary, label canary); sending the smoke batch" in result.stdout
    assert "serving: version 2 is stable (labels " in result.stdout
    assert scenario.labels() == {"stable": 2, "previous": 1, "default": 2}
    record = scenario.record()
    assert (record.stable, record.previous, record.canary) == (2, 1, None)
    assert record.stable_verified
    assert version_dirs(scenario.model_dir) == ["1", "2"]


def test_3_the_operator_rolls_back_and_holds(scenario):
    rolled = scenario.serving("rollback")
    assert rolled.returncode == 0, _output(rolled)
    assert f"{MODEL}: rolled back to version 1 (labels on " in rolled.stdout
    assert scenario.labels() == {"stable": 1, "previous": None, "default": 1}
    assert version_dirs(scenario.model_dir) == ["1", "2"]  # 2 stays published: not rejected
    # A rollback is no hold: unattended runs would promote the next good push.
    assert scenario.record().hold is None

    held = scenario.serving("hold", "--reason", REASON)
    assert held.returncode == 0, _output(held)
    assert f"{MODEL}: held by {rollouts.actor()} at " in held.stdout
    assert f"{REASON}; stable stays 1" in held.stdout
    hold = scenario.record().hold
    assert (hold.by, hold.reason) == (rollouts.actor(), REASON)


def test_4_a_run_while_held_publishes_a_candidate_and_exits_9_at_once(scenario):
    result = scenario.run("--data-dir", str(scenario.data(seed=1)))
    out = _output(result)
    assert result.returncode == EXIT_HELD, out
    assert "half_plus_two: pushed version 3" in result.stdout
    hold = scenario.record().hold
    assert f"{MODEL}: version 3 is a candidate, not promoted: {MODEL} is held by " \
           f"{hold.by} at {hold.at}: {REASON}" in result.stdout
    assert f"Next step: `python -m serving promote --model {MODEL} --version 3 " \
           f"--repository {scenario.repository}` serves it" in result.stdout
    # Not loaded, not even as the canary: the run did not wait on the server for anything.
    assert "canary" not in out and "rejected" not in out
    assert scenario.events_for(3) == []
    assert scenario.labels() == {"stable": 1, "previous": None, "default": 1}
    assert version_dirs(scenario.model_dir) == [".candidates/3", "1", "2"]


def test_5_a_retrain_while_held_publishes_a_candidate_and_nothing_is_withdrawn(scenario):
    made = run_main("pipelines", "make-spans", MODEL, "--out", str(scenario.spans),
                    "--profile", "fast")
    assert made.returncode == 0, _output(made)
    result = scenario.retrain()
    out = _output(result)
    assert result.returncode == EXIT_HELD, out
    assert "half_plus_two: pushed version 4" in result.stdout
    assert f"{MODEL}: version 4 is a candidate, not promoted: {MODEL} is held by " in out
    assert f"serving: {MODEL} is held by " in result.stdout
    assert "version 4 is published as a candidate, not loaded; stable stays 1" in result.stdout
    assert f"{MODEL}: held (exit 9)" in result.stdout
    assert "canary" not in out
    assert scenario.events_for(4) == []
    repository = ModelRepository(scenario.repository)
    assert repository.candidates(MODEL) == [3, 4]
    assert repository.rejected_versions(MODEL) == []
    assert scenario.record().stable == 1
    assert scenario.labels() == {"stable": 1, "previous": None, "default": 1}
    history = run_main("pipelines", "history", MODEL, "--json", "--pipeline-root",
                       str(scenario.runs))
    assert '"outcome": "held"' in history.stdout


def test_6_the_operator_promotes_the_candidate_then_rolls_back_to_the_stable_before(scenario):
    promoted = scenario.serving("promote", "--version", "4", "--timeout", TIMEOUT)
    assert promoted.returncode == 0, _output(promoted)
    assert f"{MODEL}: version 4 is stable (labels on " in promoted.stdout
    assert "; previous 1" in promoted.stdout
    assert f"the hold stays: held by {rollouts.actor()}" in promoted.stdout
    assert scenario.labels() == {"stable": 4, "previous": 1, "default": 4}
    answered = health.predict(scenario.rest_url, MODEL, [1.0, 2.0, 5.0])["predictions"]
    assert np.ravel(answered).tolist() == pytest.approx([2.5, 3.0, 4.5], abs=1e-2)
    assert version_dirs(scenario.model_dir) == [".candidates/3", "1", "2", "4"]

    rolled = scenario.serving("rollback", "--timeout", TIMEOUT)
    assert rolled.returncode == 0, _output(rolled)
    assert f"{MODEL}: rolled back to version 1 (labels on " in rolled.stdout
    assert scenario.labels() == {"stable": 1, "previous": None, "default": 1}
    record = scenario.record()
    assert (record.stable, record.held) == (1, True)
    assert version_dirs(scenario.model_dir) == [".candidates/3", "1", "2", "4"]


def test_7_released_a_no_promote_run_leaves_a_candidate_and_the_server_as_it_was(scenario):
    released = scenario.serving("release")
    assert released.returncode == 0, _output(released)
    assert f"{MODEL}: released; the next run promotes again" in released.stdout

    result = scenario.run("--no-promote", "--data-dir", str(scenario.data(seed=2)))
    out = _output(result)
    assert result.returncode == EXIT_CANDIDATE, out
    assert "half_plus_two: pushed version 5" in result.stdout
    assert "serving: version 5 published as a candidate (--no-promote); `python -m serving " \
           f"promote --model {MODEL} --version 5 --repository {scenario.repository}` " \
           "serves it" in result.stdout
    assert "canary" not in out
    assert scenario.events_for(5) == []
    assert scenario.labels() == {"stable": 1, "previous": None, "default": 1}
    record = scenario.record()
    assert (record.stable, record.canary, record.hold) == (1, None, None)
    assert version_dirs(scenario.model_dir) == [".candidates/3", ".candidates/5", "1", "2",
                                                "4"]


def test_8_a_push_that_reproduces_a_rolled_back_version_leaves_it_alone(scenario):
    """The Pusher publishes nothing for a model identical to the newest published version
    and reports that version instead (components/repository_pusher.py), so a run can hand
    deploy() a version that is published, good, and not stable: version 2 after the
    rollback. It must not be withdrawn as `.rejected-2`, nor made stable again behind the
    operator's back. (deploy() is called as the run calls it: which model a real re-run
    trains, and so whether the Pusher reuses version 2, is not the test's to choose.)"""
    from pipelines.operations import post_push

    deployment = post_push.deploy(MODEL, 2, ModelRepository(scenario.repository),
                                  scenario.state, float(TIMEOUT), log=lambda line: None)
    assert deployment.status == post_push.CANDIDATE, deployment
    assert "an operator's rollback is not undone by a run" in deployment.reason
    assert version_dirs(scenario.model_dir) == [".candidates/3", ".candidates/5", "1", "2",
                                                "4"]
    assert scenario.record().stable == 1
    assert scenario.labels() == {"stable": 1, "previous": None, "default": 1}
