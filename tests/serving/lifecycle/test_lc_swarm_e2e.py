"""A fleet on Docker Swarm, end to end: a real single-node swarm service of model-server
replicas (`up --backend swarm`), the real HAProxy endpoint in front of them, and rollouts
that move labels on every replica.

Two fleets, one per class (each `up` takes ~15 s):

- `TestUnderLoad`: 2 replicas; status lists both; then, under 32 concurrent REST clients
  through the endpoint, a push deployed and promoted (pipelines.operations.post_push.deploy), a
  rollback, scale 2 -> 3 -> 2, and `docker kill` of one replica's container (Swarm
  replaces it). Not one request may fail, and every answer comes from a version that was
  stable at that moment or the one just before or after a move.
- `TestFailures`: 2 replicas; a version that loads on one replica but not on the other
  (undone on every replica, the error names the replica); a replica started after a
  promotion serves the promoted stable, not the newest version in the repository.

How "loads on one replica, not on the other" is made real: the replicas share the
repository through a read-only bind mount, so a file made unreadable would fail on every
replica, and `docker exec ... chmod` cannot write to the mount. What differs between
replicas is each container's own filesystem, as what differs between nodes is their
mounts (an NFS mount gone stale on one node). The candidate's directory is moved out of
the repository to an absolute path, a symlink to it is left in its place, and the
directory is copied (`docker cp`) to the same path inside ONE replica's container. On the
host and on that replica the version is complete and loads; on the other replica the
symlink dangles, so that replica never finds the version and the promotion's wait for it
runs out (`--timeout` 20 s).

Docker's host ports: Docker Engine 20.10 publishes each host-mode port on 0.0.0.0 and on
[::] from two allocators with a "next port" each, and a port published on one family only
(any `-p 127.0.0.1::PORT` container, such as the docker backend's) moves one of them on:
from then on a task's IPv4 and IPv6 ports differ, and its PortStatus lists both,
unlabelled. The fleet reads each replica's ports from its container's 0.0.0.0 bindings;
`test_replica_ports_are_the_ones_clients_reach` puts the allocators out of step on purpose
and checks the ports the fleet records and HAProxy uses.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import swarm_support as sw
from lc_support import EXPECTED_Y, MODEL, ManyClients, push, push_candidate, rest_predict, \
    smoke_check_expecting
from pipelines.operations import post_push
from serving import lifecycle, rollouts
from serving.lifecycle import health, rollout
from serving.lifecycle.errors import LifecycleError
from serving.repository import ModelRepository
from toolkit_testing import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 120.0
CLIENTS = 32


def _fleet(request, tmp_path_factory, templates):
    """A 2-replica fleet serving version 1 (y(1.0) = 2.5); torn down after the class."""
    sw.require_swarm(request.config)
    root = tmp_path_factory.mktemp("fleet")
    repo = root / "repository"
    repo.mkdir()
    push(repo, templates[1])
    state_dir = root / "state"
    try:
        state = sw.up_fleet(repo, state_dir, replicas=2)
    except BaseException:
        lifecycle.down(state_dir, timeout=30)
        raise
    return state, repo, state_dir


@pytest.fixture(scope="class")
def load_fleet(request, tmp_path_factory, templates):
    state, repo, state_dir = _fleet(request, tmp_path_factory, templates)
    yield state, repo
    sw.down_fleet(state_dir)


@pytest.fixture(scope="class")
def failure_fleet(request, tmp_path_factory, templates):
    state, repo, state_dir = _fleet(request, tmp_path_factory, templates)
    yield state, repo
    sw.down_fleet(state_dir)


def _stable(repo: Path) -> int:
    return rollouts.load(repo / MODEL, MODEL).stable


class TestUnderLoad:
    def test_up_runs_two_healthy_replicas_behind_one_endpoint(self, load_fleet):
        state, repo = load_fleet
        found = sw.wait_for_fleet(state, 2)
        assert len({r.addresses.rest_port for r in found}) == 2
        # The stand-in image has a healthcheck: both tasks turn healthy.
        wait_until(lambda: [r.health for r in sw.replicas(state)] == ["healthy"] * 2,
                   timeout=60, what="both replicas healthy")
        assert rest_predict(state.addresses.rest_url) == EXPECTED_Y[1]
        for r in found:  # each replica on its own port, too
            assert rest_predict(r.addresses.rest_url) == EXPECTED_Y[1]

        report = lifecycle.status(state.state_dir)
        assert report.healthy
        js = report.to_json()
        assert js["backend"] == "swarm" and js["endpoint_mode"].startswith("haproxy")
        assert len(js["replicas"]) == 2
        for row in js["replicas"]:
            assert row["state"] == "running" and row["health"] == "healthy" and row["node"]
            view = row["models"][MODEL]
            assert view["labels"] == {"stable": 1}, row
            assert view["versions"] == {1: "AVAILABLE"}, row
        text = report.to_text()
        assert text.count("replica ") == 2 and "labels {'stable': 1}" in text

    def test_no_request_fails_through_promote_rollback_scale_and_a_killed_replica(
            self, load_fleet, templates):
        state, repo = load_fleet
        repository = ModelRepository(repo)
        sw.wait_for_fleet(state, 2)
        y1, y2 = EXPECTED_Y[1], EXPECTED_Y[2]
        moves = {}
        with ManyClients(state.addresses.rest_url, n=CLIENTS) as clients:
            clients.wait_for(y1, timeout=30)

            # A push: canary on every replica, smoke check, promoted on every replica.
            v2 = push_candidate(repo, templates[2])
            moves["promote"] = (time.monotonic(),)
            deployment = post_push.deploy(MODEL, v2, repository, state.state_dir, TIMEOUT,
                                          smoke_check_expecting(y2), log=lambda *_: None)
            moves["promote"] += (time.monotonic(),)
            assert deployment.status == post_push.PROMOTED, deployment
            assert _stable(repo) == v2
            for r in sw.replicas(state):
                assert sw.labels_of(r) == {"stable": v2, "previous": 1}, r.name
            clients.wait_for(y2, timeout=30, sent_after=moves["promote"][1])

            moves["rollback"] = (time.monotonic(),)
            change = rollout.rollback(MODEL, repo, state_dir=state.state_dir, timeout=TIMEOUT)
            moves["rollback"] += (time.monotonic(),)
            assert change.record.stable == 1
            for r in sw.replicas(state):
                assert sw.labels_of(r)["stable"] == 1, r.name
            clients.wait_for(y1, timeout=30, sent_after=moves["rollback"][1])

            moves["scale 3"] = (time.monotonic(),)
            sw.scale(state, 3)
            three = sw.wait_for_fleet(state, 3)
            moves["scale 3"] += (time.monotonic(),)
            for r in three:  # the third replica came up in the current state
                assert sw.labels_of(r)["stable"] == 1, r.name
            moves["scale 2"] = (time.monotonic(),)
            sw.scale(state, 2)
            two = sw.wait_for_fleet(state, 2)
            moves["scale 2"] += (time.monotonic(),)

            victim = two[0]
            moves["kill"] = (time.monotonic(),)
            sw.docker_cli("kill", sw.container_of(state, victim.task_id).id)
            replaced = sw.wait_for_fleet(state, 2, gone=victim.task_id)
            moves["kill"] += (time.monotonic(),)
            assert victim.task_id not in {r.task_id for r in replaced}
            for r in replaced:
                assert rest_predict(r.addresses.rest_url) == y1, r.name
            end = time.monotonic()
            clients.wait_for(y1, timeout=30, sent_after=end)

        assert len(clients.results) > 1000, len(clients.results)
        assert clients.failures == [], (len(clients.failures), clients.failures[:5],
                                        sw.during(clients.failures, moves))
        # What each answer may be: the version stable when it was sent or answered.
        promote, rollback_ = moves["promote"], moves["rollback"]
        assert clients.answers(answered_before=promote[0]) == {y1}
        assert clients.answers(sent_after=promote[1], answered_before=rollback_[0]) == {y2}
        assert clients.answers(sent_after=rollback_[1]) == {y1}
        assert clients.answers() == {y1, y2}
        assert len(sw.replicas(state)) == 2


class TestFailures:
    def test_a_version_one_replica_cannot_load_is_undone_on_every_replica(
            self, failure_fleet, templates, tmp_path):
        state, repo = failure_fleet
        repository = ModelRepository(repo)
        loads, fails = sw.wait_for_fleet(state, 2)
        version = push_candidate(repo, templates[2])
        candidate = repository.candidate_path(MODEL, version)
        elsewhere = tmp_path / "node-local" / str(version)  # the same absolute path inside
        elsewhere.parent.mkdir()
        shutil.move(str(candidate), str(elsewhere))
        candidate.symlink_to(elsewhere, target_is_directory=True)
        container = sw.container_of(state, loads.task_id)
        sw.docker_cli("exec", container.id, "mkdir", "-p", str(elsewhere.parent))
        sw.docker_cli("cp", str(elsewhere), f"{container.id}:{elsewhere}")
        try:
            with ManyClients(state.addresses.rest_url, n=4) as clients:
                clients.wait_for(EXPECTED_Y[1], timeout=30)
                with pytest.raises(LifecycleError) as caught:
                    rollout.promote(MODEL, version, repo, state.state_dir, timeout=20)
                message = caught.value.message
                assert f"replica {fails.name}:" in message, message
                assert loads.name not in message, message
                assert f"version {version}" in message, message

                # Undone on every replica: the replica that loaded it unloads it again.
                def back():
                    views = [lifecycle.api._replica_view(r.addresses, MODEL)
                             for r in sw.replicas(state)]
                    return all([n for n, st in v["versions"].items() if st == "AVAILABLE"]
                               == [1] and v["labels"] == {"stable": 1} for v in views) and views
                wait_until(back, timeout=30, what="both replicas back to version 1 alone")
                undone = time.monotonic()
                assert _stable(repo) == 1
                assert rest_predict(state.addresses.rest_url) == EXPECTED_Y[1]
                clients.wait_for(EXPECTED_Y[1], timeout=30, sent_after=undone)
            assert clients.failures == [], clients.failures[:5]
            # While the version loaded (step 1), the replica that loaded it answered
            # unlabelled requests from it (TF Serving: the newest loaded version); once
            # undone, only the old stable answers.
            assert clients.answers() <= {EXPECTED_Y[1], EXPECTED_Y[2]}
            assert clients.answers(sent_after=undone) == {EXPECTED_Y[1]}
            # The record says nothing was promoted; the repository should say the same: a
            # plain tensorflow_model_server (newest published version) must not serve it.
            assert version not in repository.versions(MODEL) and \
                version in repository.candidates(MODEL), (
                    f"a promotion that failed left version {version} published "
                    f"(versions {repository.versions(MODEL)}, candidates "
                    f"{repository.candidates(MODEL)}) while the record's stable is "
                    f"{_stable(repo)}")
        finally:  # the dangling version must not follow into the next test
            for path in (candidate, repository.version_path(MODEL, version)):
                if path.is_symlink():
                    path.unlink()

    def test_a_replica_started_after_a_promotion_serves_the_promoted_stable(
            self, failure_fleet, templates):
        state, repo = failure_fleet
        repository = ModelRepository(repo)
        sw.wait_for_fleet(state, 2)
        promoted = push_candidate(repo, templates[2])
        deployment = post_push.deploy(MODEL, promoted, repository, state.state_dir, TIMEOUT,
                                      smoke_check_expecting(EXPECTED_Y[2]), log=lambda *_: None)
        assert deployment.status == post_push.PROMOTED, deployment
        newest, _ = push(repo, templates[1])  # published as <model>/N, never promoted
        assert newest > promoted and repository.latest_version(MODEL) == newest
        before = {r.task_id for r in sw.replicas(state)}

        sw.scale(state, 3, timeout=120)
        found = sw.wait_for_fleet(state, 3, timeout=60)
        # The scaled-up replica (and any replica Swarm replaced meanwhile): all started
        # after the promotion.
        new = [r for r in found if r.task_id not in before]
        assert new, (before, found)
        for r in new:
            assert sw.labels_of(r)["stable"] == promoted, r.name
            st = health.get_model_status(r.addresses.rest_url, MODEL)
            assert newest not in [v.version for v in st.versions], (r.name, st)
            assert st.available() == [1, promoted], (r.name, st)
            assert rest_predict(r.addresses.rest_url) == EXPECTED_Y[2]
            assert rest_predict(r.addresses.rest_url, label="stable") == EXPECTED_Y[2]
        # Through the endpoint, whichever replica answers.
        assert {rest_predict(state.addresses.rest_url) for _ in range(12)} == {EXPECTED_Y[2]}
        listed = {row["task"]: row for row in lifecycle.status(state.state_dir).to_json()
                  ["replicas"]}
        for r in found:  # status lists each replica with its labels
            assert listed[r.task_id]["models"][MODEL]["labels"]["stable"] == promoted, r.name

    def test_replica_ports_are_the_ones_clients_reach(self, failure_fleet):
        """A replica's ports (status, the rollout commands, HAProxy) must be the ones that
        127.0.0.1 reaches: its container's 0.0.0.0 bindings. With Docker's IPv4 and IPv6
        allocators out of step (one IPv4-only port published first), a new replica's two
        bindings differ."""
        state, repo = failure_fleet
        before = {r.task_id for r in sw.wait_for_fleet(state, len(sw.replicas(state)))}
        count = len(before) + 1
        sw.skew_port_allocators(by=1)
        try:
            waited = ""
            try:
                lifecycle.scale(count, state.state_dir, timeout=60)
            except LifecycleError as e:
                waited = e.message
            found = wait_until(lambda: len(sw.replicas(state)) == count and sw.replicas(state),
                               timeout=60, what=f"{count} replicas running")
            for r in found:
                ipv4 = sw.container_ipv4_ports(state, r.task_id)
                assert (r.addresses.rest_port, r.addresses.grpc_port) == \
                    (ipv4[8501], ipv4[8500]), (
                        f"replica {r.name} is recorded at REST {r.addresses.rest_port} gRPC "
                        f"{r.addresses.grpc_port}, but 127.0.0.1 reaches it at REST "
                        f"{ipv4[8501]} gRPC {ipv4[8500]} (scale: {waited or 'ok'})")
            assert waited == ""
            # HAProxy's watcher follows the tasks every half second: its servers become
            # exactly the replicas' IPv4 REST ports
            expected = sorted(sw.container_ipv4_ports(state, r.task_id)[8501] for r in found)
            wait_until(lambda: sorted(sw.balancer_rest_ports(state)) == expected, timeout=10,
                       what=f"HAProxy routing to {expected}")
        finally:
            try:
                lifecycle.scale(count - 1, state.state_dir, timeout=120)
            except LifecycleError:
                pass  # the fleet is taken down after the class anyway
