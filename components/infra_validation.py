"""TFX's InfraValidator, set up to load and query a candidate model in the serving image.

Before a model is pushed, InfraValidator starts the image that will serve it in the local
Docker Engine (`LocalDockerConfig`), mounts the model as `/model/<name>/1`, waits for
GetModelStatus to say AVAILABLE, then sends Classify / Regress requests built from the
`eval` split. A model that does not load, or whose signatures fail on real examples, is
not blessed, and a Pusher given `infra_blessing` does not push it.

The default image is the project's stand-in, `tfx-serving-toolkit/model-server:latest`
(`make serving-image`), which keeps the official image's contract (MODEL_NAME and
MODEL_BASE_PATH, gRPC on 8500); `tensorflow/serving:2.16.1` works the same where it can
be pulled. `serving_image_status` says whether the Docker Engine and the image are there,
so a pipeline can leave InfraValidator out where they are not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Tuple

from docker.utils import parse_repository_tag

from serving.lifecycle import config as lifecycle_config

if TYPE_CHECKING:  # TFX imports TensorFlow: only when a component is built
    from tfx import v1 as tfx

# The images `make serve` chooses between (serving/lifecycle/config.py names them).
OFFICIAL_IMAGE, STANDIN_IMAGE = lifecycle_config.DEFAULT_IMAGE, lifecycle_config.STANDIN_IMAGE
DEFAULT_IMAGE = STANDIN_IMAGE

# Requests per signature, from the first records of the eval split.
DEFAULT_NUM_EXAMPLES = 4
# Container start, TensorFlow import and model load: 5-10 s here. A model that cannot load
# never becomes AVAILABLE (the server retries it a minute apart), so it costs this wait.
DEFAULT_MAX_LOADING_SECONDS = 120
# A second try covers a container that failed to start; a model that cannot load fails
# every try, so it costs tries x the loading time before it is marked not blessed.
DEFAULT_NUM_TRIES = 2


def preferred_image() -> Tuple[str, Optional[str]]:
    """The official TF Serving image when this Docker Engine has it, else the stand-in (as
    `make serve` chooses), with `serving_image_status` of the one chosen."""
    if serving_image_status(OFFICIAL_IMAGE) is None:
        return OFFICIAL_IMAGE, None
    return STANDIN_IMAGE, serving_image_status(STANDIN_IMAGE)


def serving_image_status(image: str = DEFAULT_IMAGE) -> Optional[str]:
    """None when a Docker daemon answers and `image` is present locally; else one line
    that says what is missing and what to do about it."""
    import docker
    from docker import errors

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure here means "no daemon"
        return (f"no Docker daemon answers ({type(e).__name__}); start one (systemctl start "
                f"docker, or: nohup dockerd >/var/log/dockerd.log 2>&1 &) or set DOCKER_HOST")
    try:
        client.images.get(image)
    except errors.ImageNotFound:
        standin = parse_repository_tag(image)[0] == parse_repository_tag(STANDIN_IMAGE)[0]
        how = ("build it with `make serving-image`" if standin
               else f"pull it with `docker pull {image}`")
        return f"image {image} is not present on the Docker Engine; {how}"
    except errors.APIError as e:
        return f"cannot inspect image {image}: {e.explanation or e}"
    finally:
        client.close()
    return None


def serving_binary(image: str) -> "tfx.proto.TensorFlowServing":
    """`name:tag` or `name@sha256:...` -> TensorFlowServing(image_name, tags | digests);
    a name with no tag means `latest`, as in `docker run`."""
    from tfx import v1 as tfx

    name, reference = parse_repository_tag(image)
    if "@" in image:
        return tfx.proto.TensorFlowServing(image_name=name, digests=[reference])
    return tfx.proto.TensorFlowServing(image_name=name, tags=[reference or "latest"])


def create_infra_validator(*, model, examples, signature_names: Sequence[str],
                           model_name: str, image: str = DEFAULT_IMAGE,
                           num_examples: int = DEFAULT_NUM_EXAMPLES,
                           max_loading_time_seconds: int = DEFAULT_MAX_LOADING_SECONDS,
                           num_tries: int = DEFAULT_NUM_TRIES) -> "tfx.components.InfraValidator":
    """InfraValidator for `model` in `image` on the local Docker Engine, queried through
    `signature_names` with `num_examples` records of the `eval` split of `examples`.

    `model_name` is the name the server serves it under (MODEL_NAME), as in the repository.
    The signatures' method names pick the request: classify -> Classify, regress ->
    Regress; a predict signature must take one serialized-record input."""
    from tfx import v1 as tfx

    return tfx.components.InfraValidator(
        model=model,
        examples=examples,
        serving_spec=tfx.proto.ServingSpec(
            tensorflow_serving=serving_binary(image),
            local_docker=tfx.proto.LocalDockerConfig(),
            model_name=model_name),
        validation_spec=tfx.proto.ValidationSpec(
            max_loading_time_seconds=max_loading_time_seconds, num_tries=num_tries),
        request_spec=tfx.proto.RequestSpec(
            tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(
                signature_names=list(signature_names)),
            split_name="eval",
            num_examples=num_examples))
