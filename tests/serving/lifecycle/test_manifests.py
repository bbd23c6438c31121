"""Kubernetes manifests (serving/lifecycle/manifests.py), checked offline: no API server
runs here. Each object goes through the `kubernetes` client's own models (the API's field
names and types) and back, so a misspelt or misplaced field is lost and the comparison
fails; the ConfigMap's models.config is parsed as TF Serving's ModelServerConfig; `write`
is read back with yaml.safe_load. The last test starts the stand-in model server with the
Deployment's flags and the ConfigMap's config and asks it the readiness probe's path."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest
import yaml
from google.protobuf import text_format
from kubernetes.client import ApiClient
from tensorflow_serving.config import model_server_config_pb2

from serving import rollouts
from serving.lifecycle import manifests
from serving.repository import ModelRepository
from toolkit_testing import publish_fake, running_servers, write_fake_saved_model

MODEL, OTHER = "half_plus_two", "mnist"
IMAGE = "tfx-serving-toolkit/model-server:latest"
CLAIM = "model-repository"
EXPECTED_ARGS = ["--port=8500", "--rest_api_port=8501",
                 "--model_config_file=/serving_config/models.config",
                 "--model_config_file_poll_wait_seconds=5",
                 "--file_system_poll_wait_seconds=1",
                 "--allow_version_labels_for_unavailable_models"]
KINDS = {"ConfigMap": "V1ConfigMap", "Deployment": "V1Deployment", "Service": "V1Service"}


def round_trip(obj: dict) -> dict:
    """obj through the client's model of its kind and back to the API's JSON form."""
    client = ApiClient()
    model = client._ApiClient__deserialize(obj, KINDS[obj["kind"]])
    return client.sanitize_for_serialization(model)


def by_kind(objs):
    return {o["kind"]: o for o in objs}


@pytest.fixture
def repository(tmp_path) -> ModelRepository:
    """MODEL: versions 1-3 published, stable 3 (previous 2), a canary 4 in flight;
    OTHER: versions 1-2, stable 1 (rolled back from 2)."""
    repo = ModelRepository(tmp_path / "repository")
    for _ in range(3):
        publish_fake(repo, MODEL)
    with repo.publish(MODEL, candidate=True) as publication:
        write_fake_saved_model(publication.staging)
    with rollouts.update(repo.model_dir(MODEL), MODEL) as record:
        record.make_stable(2, verified=True)
        record.make_stable(3, verified=True)
        record.canary = 4
    for _ in range(2):
        publish_fake(repo, OTHER)
    with rollouts.update(repo.model_dir(OTHER), OTHER) as record:
        record.make_stable(1, verified=True)
        record.make_stable(2, verified=True)
        record.roll_back(1)
    return repo


def render(repository, models=(MODEL, OTHER), **overrides):
    args = dict(replicas=3, repository_claim=CLAIM, image=IMAGE)
    args.update(overrides)
    return manifests.render_for_repository(repository, models, **args)


def parsed_config(objs) -> model_server_config_pb2.ModelServerConfig:
    text = by_kind(objs)["ConfigMap"]["data"]["models.config"]
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def entries(config):
    return {e.name: e for e in config.model_config_list.config}


def test_every_object_survives_the_client_models(repository):
    objs = render(repository)
    assert [o["kind"] for o in objs] == ["ConfigMap", "Deployment", "Service"]
    for obj in objs:
        assert round_trip(obj) == obj, obj["kind"]


def test_the_deployment_fields_that_matter(repository):
    deployment = round_trip(by_kind(render(repository, memory_limit_mb=1536, cpu="500m"))
                            ["Deployment"])
    assert deployment["metadata"] == {"name": "tfx-serving", "labels": {"app": "tfx-serving"}}
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"app": "tfx-serving"}}
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    template = spec["template"]
    assert template["metadata"]["labels"] == {"app": "tfx-serving"}
    (container,) = template["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == EXPECTED_ARGS
    assert "command" not in container  # the image's entrypoint runs tensorflow_model_server
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == \
        {"grpc": 8500, "http": 8501}
    assert container["resources"] == {"requests": {"memory": "1536Mi", "cpu": "500m"},
                                      "limits": {"memory": "1536Mi", "cpu": "500m"}}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/models", "/serving_config"}
    assert all(m["readOnly"] and "subPath" not in m for m in mounts.values())
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"] == \
        {"claimName": CLAIM, "readOnly": True}
    assert volumes[mounts["/serving_config"]["name"]]["configMap"] == \
        {"name": "tfx-serving-config"}


def test_probes_ask_for_the_stable_version_of_the_first_model(repository):
    (container,) = round_trip(by_kind(render(repository))["Deployment"])["spec"][
        "template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": f"/v1/models/{MODEL}/labels/stable/metadata", "port": "http"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert container["startupProbe"]["tcpSocket"] == {"port": "grpc"}
    # TF Serving opens its ports only after the first config's models loaded: allow minutes.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300

    other_first = by_kind(render(repository, models=(OTHER, MODEL)))["Deployment"]
    probe = other_first["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == f"/v1/models/{OTHER}/labels/stable/metadata"


def test_a_config_with_no_stable_label_is_probed_on_any_version():
    # a config written by hand or another tool: the newest version, no labels
    text = (f'model_config_list {{ config {{ name: "{MODEL}" base_path: "/models/{MODEL}" '
            f'model_platform: "tensorflow" model_version_policy {{ latest {{ num_versions: 1 '
            f'}} }} }} }}')
    objs = manifests.render_kubernetes(repository_claim=CLAIM, models=(MODEL,), replicas=1,
                                       image=IMAGE, model_config_text=text)
    probe = by_kind(objs)["Deployment"]["spec"]["template"]["spec"]["containers"][0][
        "readinessProbe"]
    assert probe["httpGet"]["path"] == f"/v1/models/{MODEL}/metadata"


def test_the_service_exposes_grpc_and_http(repository):
    service = round_trip(by_kind(render(repository, name="mnist-serving"))["Service"])
    assert service["metadata"]["name"] == "mnist-serving"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"app": "mnist-serving"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == \
        [("grpc", 8500, "grpc"), ("http", 8501, "http")]


def test_the_config_map_holds_the_records_as_tf_serving_config(repository):
    objs = render(repository)
    config_map = round_trip(by_kind(objs)["ConfigMap"])
    assert config_map["metadata"]["name"] == "tfx-serving-config"
    config = parsed_config(objs)
    found = entries(config)
    # The canary is dropped: the fleet serves what the record made stable.
    assert list(found) == [MODEL, OTHER]
    assert found[MODEL].base_path == f"/models/{MODEL}"
    assert list(found[MODEL].model_version_policy.specific.versions) == [2, 3]
    assert dict(found[MODEL].version_labels) == {"stable": 3, "previous": 2}
    # The second model's labels: rolled back to 1; 2 is not kept (it would be the highest).
    assert found[OTHER].base_path == f"/models/{OTHER}"
    assert list(found[OTHER].model_version_policy.specific.versions) == [1]
    assert dict(found[OTHER].version_labels) == {"stable": 1}


def test_a_changed_config_changes_the_pod_template(repository):
    """Promotion reaches the pods as a rolling update: the template carries the config's
    hash, so `kubectl apply` of a re-render replaces the pods one at a time."""
    def template_annotations():
        return by_kind(render(repository))["Deployment"]["spec"]["template"]["metadata"][
            "annotations"]

    before = template_annotations()
    assert before == template_annotations()  # the same records, the same Deployment
    with rollouts.update(repository.model_dir(OTHER), OTHER) as record:
        record.make_stable(2, verified=True)
    after = template_annotations()
    assert after[manifests.CONFIG_HASH_ANNOTATION] != before[manifests.CONFIG_HASH_ANNOTATION]
    assert dict(entries(parsed_config(render(repository)))[OTHER].version_labels) == \
        {"stable": 2, "previous": 1}


def test_write_reads_back_as_the_same_objects(repository, tmp_path):
    objs = render(repository)
    out = tmp_path / "k8s"
    written = manifests.write(objs, out)
    assert [p.name for p in written] == ["configmap-tfx-serving-config.yaml",
                                         "deployment-tfx-serving.yaml",
                                         "service-tfx-serving.yaml", "kustomization.yaml"]
    assert [yaml.safe_load(p.read_text()) for p in written[:-1]] == objs
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [p.name for p in written[:-1]]
    # models.config stays readable in the file: a block scalar, not an escaped string.
    assert "models.config: |" in (out / "configmap-tfx-serving-config.yaml").read_text()


def test_a_repository_without_records_serves_its_newest_version(tmp_path):
    repo = ModelRepository(tmp_path / "plain")
    publish_fake(repo, MODEL)
    publish_fake(repo, MODEL)
    config = parsed_config(render(repo, models=(MODEL,)))
    assert dict(entries(config)[MODEL].version_labels) == {"stable": 2}
    assert not rollouts.record_path(repo.model_dir(MODEL)).exists()  # nothing written


@pytest.mark.parametrize("overrides, message", [
    (dict(name="Tfx_Serving"), "DNS-1035"),
    (dict(replicas=0), "replicas"),
    (dict(memory_limit_mb=0), "memory"),
    (dict(cpu="lots"), "cpu"),
    (dict(repository_claim=""), "claim"),
    (dict(image=""), "image"),
])
def test_arguments_kubernetes_would_refuse_are_refused_here(repository, overrides, message):
    with pytest.raises(ValueError, match=message):
        render(repository, **overrides)


def test_models_the_config_does_not_serve_are_refused(tmp_path, repository):
    text = by_kind(render(repository, models=(MODEL,)))["ConfigMap"]["data"]["models.config"]
    with pytest.raises(ValueError, match=f"does not serve {OTHER}"):
        manifests.render_kubernetes(repository_claim=CLAIM, models=(MODEL, OTHER), replicas=1,
                                    image=IMAGE, model_config_text=text)
    empty = ModelRepository(tmp_path / "empty")
    with pytest.raises(ValueError, match="no published version"):
        render(empty, models=(MODEL,))


# ---- the probe's path, asked of a real server ----------------------------------------------

def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.e2e
def test_the_readiness_path_answers_200_only_for_a_labelled_available_version(
        tmp_path, saved_model_templates):
    """The stand-in model server, started with the Deployment's args (ports and paths
    mapped to this machine) and the ConfigMap's models.config, answers the readiness path
    once it serves stable; the same path with a label it has not got is a 400 (what a pod
    whose label has not moved answers), and so is a model it does not serve."""
    repo = ModelRepository(tmp_path / "repository")
    for template in ("hp2_v1", "hp2_v2"):
        with repo.publish(MODEL) as publication:
            shutil.copytree(saved_model_templates / template, publication.staging,
                            dirs_exist_ok=True)
    with rollouts.update(repo.model_dir(MODEL), MODEL) as record:
        record.make_stable(1, verified=True)
        record.make_stable(2, verified=True)
    objs = render(repo, models=(MODEL,))
    text = by_kind(objs)["ConfigMap"]["data"]["models.config"]
    config_dir = tmp_path / "serving_config"
    config_dir.mkdir()
    (config_dir / "models.config").write_text(text.replace("/models/", f"{repo.root}/"))
    container = by_kind(objs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    flags = [a.replace("/serving_config/", f"{config_dir}/") for a in container["args"]
             if not a.startswith(("--port=", "--rest_api_port="))]  # the test's own ports
    path = container["readinessProbe"]["httpGet"]["path"]
    with running_servers() as start:
        server = start(*flags)
        assert get(server.rest_url + path) == 200
        with urllib.request.urlopen(server.rest_url + path, timeout=10) as response:
            assert json.load(response)["model_spec"]["version"] == "2"
        assert get(server.rest_url + f"/v1/models/{MODEL}/labels/previous/metadata") == 200
        assert get(server.rest_url + f"/v1/models/{MODEL}/labels/canary/metadata") == 400
        # As TF Serving's ServerCore::GetModelVersionForLabel: a label of a model it does
        # not serve is the same INVALID_ARGUMENT as an unknown label.
        assert get(server.rest_url + "/v1/models/nothing/labels/stable/metadata") == 400
