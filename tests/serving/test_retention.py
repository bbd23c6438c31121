"""The repository's retention policy (serving/retention.py) and `python -m pipelines gc`,
on fake SavedModels: what stays and why, what goes, and that numbers are never reused."""

from __future__ import annotations

import datetime
import json

import pytest

from pipelines import __main__ as pipelines_main
from serving import retention, rollouts
from serving.repository import ModelRepository
from toolkit_testing import write_fake_saved_model

MODEL = "half_plus_two"  # a pipeline name, as `gc NAME` takes


def publish(repo: ModelRepository, candidate: bool = False, payload: bytes = b"g") -> int:
    with repo.publish(MODEL, candidate=candidate) as publication:
        write_fake_saved_model(publication.staging, payload)
    return publication.version


@pytest.fixture
def repo(tmp_path):
    return ModelRepository(tmp_path / "repo")


def by_version(decisions):
    return {(d.where, d.version): d for d in decisions}


def test_roles_and_the_newest_n_stay_the_rest_goes(repo):
    for _ in range(8):
        publish(repo)
    with rollouts.update(repo.model_dir(MODEL), MODEL) as record:
        record.make_stable(2, verified=True)
        record.make_stable(3, verified=True)  # previous 2
        record.hold = rollouts.Hold(by="op", at=rollouts.now(), reason="x")
    newer_candidate = publish(repo, candidate=True)  # 9: waiting for a promote
    decisions = by_version(retention.plan(repo, MODEL, keep_versions=3, loaded=[5]))
    keep = {v for (_, v), d in decisions.items() if d.keep}
    assert keep == {2, 3, 5, 7, 8, newer_candidate}
    assert decisions[("published", 3)].why == "stable (held)"
    assert decisions[("published", 2)].why == "previous"
    assert decisions[("published", 5)].why == "loaded by the running server"
    assert "waiting for promote" in decisions[("candidate", newer_candidate)].why
    assert not decisions[("published", 1)].keep
    removed = retention.apply(repo, decisions.values())
    assert sorted(d.version for d in removed) == [1, 4, 6]
    assert repo.versions(MODEL) == [2, 3, 5, 7, 8]
    assert repo.candidates(MODEL) == [newer_candidate]
    assert not list(repo.model_dir(MODEL).glob(".staging-*"))


def test_a_removed_number_is_never_given_out_again(repo):
    for _ in range(3):
        publish(repo)
    rejected = publish(repo, candidate=True)
    repo.reject(MODEL, rejected, "bad canary")
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    decisions = retention.plan(repo, MODEL, keep_versions=3, keep_rejected_days=14, now=later)
    assert [d.version for d in decisions if not d.keep] == [rejected]
    retention.apply(repo, decisions)
    assert repo.rejected_versions(MODEL) == []
    assert publish(repo) == rejected + 1


def test_a_rejected_version_stays_for_the_post_mortem(repo):
    publish(repo)
    rejected = publish(repo, candidate=True)
    repo.reject(MODEL, rejected, "bad canary")
    [decision] = [d for d in retention.plan(repo, MODEL, keep_rejected_days=14)
                  if d.where == "rejected"]
    assert decision.keep and "kept 14 days" in decision.why


def test_keep_versions_below_one_is_refused(repo):
    publish(repo)
    with pytest.raises(ValueError, match="at least 1"):
        retention.plan(repo, MODEL, keep_versions=0)


def test_gc_is_a_dry_run_unless_applied(repo, tmp_path, capsys):
    for _ in range(4):
        publish(repo)
    args = ["gc", MODEL, "--repository", str(repo.root), "--keep-versions", "2",
            "--state-dir", str(tmp_path / "no-server")]
    assert pipelines_main.main(args) == 0
    out = capsys.readouterr().out
    assert "would remove published 1" in out and "dry run: 2 version(s) would go" in out
    assert repo.versions(MODEL) == [1, 2, 3, 4]
    assert pipelines_main.main(args + ["--apply", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["removed"] == [1, 2]
    assert repo.versions(MODEL) == [3, 4]


def test_gc_refuses_a_bad_keep_versions(repo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipelines_main.main(["gc", MODEL, "--repository", str(repo.root), "--keep-versions", "0"])
    assert exit_info.value.code == 2
