"""End to end, a model of one's own: `pipelines new` for each template in a temporary
directory, then run -> serve -> predict -> retrain on one new span, all through the public
commands (in this process: tests/toolkit_testing.run_main), in the fast profile. One server
(the process backend) serves both models. Steps run in order and rely on each other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.models import registry
from serving import lifecycle
from toolkit_testing import run_main

pytestmark = pytest.mark.e2e

TEMPLATES = {"regression": "fares", "image-classification": "shapes"}


class World:
    def __init__(self, root: Path):
        self.root = root
        self.repository = root / "repo"
        self.runs = root / "runs"
        self.state = root / "serving"

    def project(self, name: str) -> Path:
        return self.root / "projects" / name

    def paths(self):
        return ["--repository", str(self.repository), "--pipeline-root", str(self.runs),
                "--state-dir", str(self.state)]

    def predict(self, model: str, instances) -> dict:
        result = run_main("serving", "predict", "--model", model, "--instances",
                          json.dumps(instances), "--state-dir", str(self.state))
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("model_projects"))
    yield w
    lifecycle.down(w.state, timeout=10)


@pytest.mark.parametrize("template,name", TEMPLATES.items())
def test_new_then_run_pushes_a_blessed_version(world, template, name):
    result = run_main("pipelines", "new", name, "--template", template,
                      "--out", str(world.project(name)))
    assert result.returncode == 0, result.stderr
    result = run_main("pipelines", "run", name, "--model-dir", str(world.project(name)),
                      "--profile", "fast", *world.paths())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{name}: pushed version 1" in result.stdout
    assert "blessed: yes" in result.stdout
    lineage = json.loads((world.repository / name / "1" / "lineage.json").read_text())
    assert lineage["trainer_module"] == str(world.project(name) / f"{name}_trainer.py")


def test_one_server_serves_both_and_predicts(world):
    result = run_main("serving", "up", "--model", ",".join(TEMPLATES.values()),
                      "--backend", "process", "--grpc-port", "0", "--rest-port", "0",
                      "--timeout", "180", *world.paths()[:2], "--state-dir", str(world.state))
    assert result.returncode == 0, result.stdout + result.stderr
    # fares: y = 3·x1 - 2·x2 + 1
    [y] = world.predict("fares", [{"x1": 0.5, "x2": -0.25}])["predictions"]
    assert y == pytest.approx(3.0, abs=0.2)
    # shapes: a horizontal line (class 0), a vertical line (class 1), as raw pixels
    horizontal = [255 if row == 3 else 10 for row in range(8) for _ in range(8)]
    vertical = [255 if column == 5 else 10 for _ in range(8) for column in range(8)]
    scores = world.predict("shapes", [horizontal, vertical])["predictions"]
    assert [max(range(3), key=s.__getitem__) for s in scores] == [0, 1]


@pytest.mark.parametrize("template,name", TEMPLATES.items())
def test_retrain_on_a_new_span_is_checked_through_the_server(world, monkeypatch, template,
                                                             name):
    # The project through the environment, this time (as a cron job would name it).
    monkeypatch.setenv(registry.MODEL_DIR_VARIABLE, str(world.project(name)))
    spans = world.root / "spans" / name
    result = run_main("pipelines", "make-spans", name, "--out", str(spans), "--profile", "fast")
    assert result.returncode == 0, result.stderr
    result = run_main("pipelines", "retrain", name, "--data", str(spans), "--profile", "fast",
                      "--infra-validation", "off", *world.paths())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{name}: pushed version 2" in result.stdout
    assert "serving: version 2 is stable (labels " in result.stdout
    assert "serving: smoke check " in result.stdout
    history = json.loads(run_main("pipelines", "history", name, "--json",
                                  "--pipeline-root", str(world.runs)).stdout)
    assert [(r["pipeline"], r["outcome"]) for r in history] == [
        (name, "pushed"), (f"{name}_retrain", "pushed")]
