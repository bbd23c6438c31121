"""InfraValidator's set-up: which image it runs, what it asks, and the environment check."""

from __future__ import annotations

import pytest
from tfx import v1 as tfx
from tfx.components.infra_validator import serving_bins
from tfx.proto import infra_validator_pb2
from tfx.utils import proto_utils

from components.infra_validation import (DEFAULT_IMAGE, create_infra_validator,
                                         serving_image_status)
from toolkit_testing import require_docker, test_image


def _validator(**kwargs):
    return create_infra_validator(
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples),
        signature_names=["classification"], model_name="mnist", **kwargs)


def _spec(component, key, proto):
    return proto_utils.json_to_proto(component.exec_properties[key], proto)


@pytest.mark.parametrize("image, runs", [
    ("tfx-serving-toolkit/model-server:latest", "tfx-serving-toolkit/model-server:latest"),
    ("tensorflow/serving:2.16.1", "tensorflow/serving:2.16.1"),
    ("tensorflow/serving", "tensorflow/serving:latest"),
    ("localhost:5000/serving:2.16.1", "localhost:5000/serving:2.16.1"),
    ("localhost:5000/serving", "localhost:5000/serving:latest"),
    ("tensorflow/serving@sha256:" + "a" * 64, "tensorflow/serving@sha256:" + "a" * 64),
])
def test_the_container_runs_the_image_asked_for(image, runs):
    serving_spec = _spec(_validator(image=image), "serving_spec",
                         infra_validator_pb2.ServingSpec())
    binaries = serving_bins.parse_serving_binaries(serving_spec)  # what the executor starts
    assert [binary.image for binary in binaries] == [runs]
    assert serving_spec.WhichOneof("serving_platform") == "local_docker"
    assert serving_spec.model_name == "mnist"


def test_defaults_query_the_eval_split_in_the_project_image():
    component = _validator()
    serving_spec = _spec(component, "serving_spec", infra_validator_pb2.ServingSpec())
    assert [b.image for b in serving_bins.parse_serving_binaries(serving_spec)] == [DEFAULT_IMAGE]
    request_spec = _spec(component, "request_spec", infra_validator_pb2.RequestSpec())
    assert request_spec.split_name == "eval"
    assert list(request_spec.tensorflow_serving.signature_names) == ["classification"]
    assert request_spec.num_examples > 0
    assert not request_spec.make_warmup
    validation_spec = _spec(component, "validation_spec", infra_validator_pb2.ValidationSpec())
    assert validation_spec.max_loading_time_seconds > 0 and validation_spec.num_tries > 0


def test_status_names_a_daemon_that_does_not_answer(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    reason = serving_image_status(DEFAULT_IMAGE)
    assert reason is not None and reason.startswith("no Docker daemon answers")
    assert "\n" not in reason and "DOCKER_HOST" in reason


@pytest.mark.parametrize("image, advice", [
    ("tfx-serving-toolkit/no-such-image:0", "docker pull tfx-serving-toolkit/no-such-image:0"),
    ("tfx-serving-toolkit/model-server:no-such-tag", "make serving-image"),
])
def test_status_says_how_to_get_a_missing_image(pytestconfig, image, advice):
    require_docker(pytestconfig, need_image=False)
    reason = serving_image_status(image)
    assert reason is not None and f"image {image} is not present" in reason
    assert advice in reason and "\n" not in reason


def test_status_is_none_when_the_daemon_has_the_image(pytestconfig):
    require_docker(pytestconfig)
    assert serving_image_status(test_image()) is None
