"""Loader and Servable: one SavedModel version, loaded on demand.

A Loader is cheap to construct (the Manager makes one per aspired version and may discard
it unloaded); `load()` does the expensive part: tf.saved_model.load, the batching session,
then warmup, so a version only becomes AVAILABLE once it has answered its warmup requests.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import numpy as np

from serving.model_server.config import BatchingOptions
from serving.model_server.errors import Code, ServingError, from_tf_error

log = logging.getLogger("serving.model_server")


def read_signature_defs(path: str, tags: Iterable[str]):
    """The SignatureDef map of the meta graph tagged `tags`, straight from saved_model.pb(txt)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    import warnings

    from google.protobuf.message import DecodeError

    saved_model = saved_model_pb2.SavedModel()
    pb = Path(path) / "saved_model.pb"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # protobuf only warns on some corrupt input
            if pb.is_file():
                saved_model.ParseFromString(pb.read_bytes())
            else:
                text_format.Parse((Path(path) / "saved_model.pbtxt").read_text(), saved_model)
    except (DecodeError, RuntimeWarning, SystemError) as e:
        raise ServingError(Code.DATA_LOSS, f"Could not parse the SavedModel at {path}: "
                                           f"saved_model.pb is not a valid SavedModel") from e
    except (text_format.ParseError, OSError) as e:
        raise ServingError(Code.DATA_LOSS, f"Could not parse the SavedModel at {path}: "
                                           f"{e}") from e
    wanted = set(tags)
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return dict(meta_graph.signature_def)
    raise ServingError(Code.NOT_FOUND,
                       f"Could not find meta graph def matching supplied tags: "
                       f"{{ {' '.join(sorted(wanted))} }}. To inspect available tag-sets in the "
                       f"SavedModel, please use the SavedModel CLI: `saved_model_cli`")


class Servable:
    """A loaded version: its signature defs and a way to run them on numpy inputs."""

    def __init__(self, name: str, version: int, path: str, signature_defs, functions,
                 batching: Optional[BatchingOptions] = None, keepalive=None):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs
        self._functions = functions
        self._keepalive = keepalive  # the loaded object owns the variables the functions read
        self.batcher = None
        if batching is not None:
            from serving.model_server.batching import Batcher
            self.batcher = Batcher(batching, self.run_direct, name=f"batch-{name}-{version}")

    def __repr__(self) -> str:
        return f"Servable({self.name!r}, {self.version})"

    def can_run(self, signature_name: str) -> bool:
        """False for signature defs with no function (e.g. TF2's __saved_model_init_op)."""
        return signature_name in self._functions

    def run(self, signature_name: str, inputs: Dict[str, np.ndarray],
            timeout: Optional[float] = None) -> Dict[str, np.ndarray]:
        """Run a signature, through the batching queue when batching is on."""
        if self.batcher is None:
            return self.run_direct(signature_name, inputs)
        future = self.batcher.submit(signature_name, inputs)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:  # not the builtin TimeoutError before Python 3.11
            future.cancel()  # still queued: it will not run
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while batching") \
                from None

    async def run_async(self, signature_name: str, inputs: Dict[str, np.ndarray],
                        executor) -> Dict[str, np.ndarray]:
        """`run` for an event loop: a batched request is awaited (no thread blocks waiting
        for its batch), anything else runs on `executor`. Cancelling the caller (a gRPC
        deadline or a client that went away) takes a still-queued request out of its batch.
        """
        loop = asyncio.get_running_loop()
        queued = None if self.batcher is None else self.batcher.try_submit(signature_name,
                                                                           inputs, loop)
        if queued is None:
            return await loop.run_in_executor(executor, self.run_direct, signature_name,
                                              inputs)
        return await queued

    def run_direct(self, signature_name: str, inputs: Dict[str, np.ndarray]):
        import tensorflow as tf

        fn = self._functions[signature_name]
        try:
            kwargs = {k: tf.constant(v) for k, v in inputs.items()}
            outputs = fn(**kwargs)
        except (tf.errors.OpError,) as e:
            raise from_tf_error(e) from e
        except (TypeError, ValueError) as e:
            raise ServingError(Code.INVALID_ARGUMENT, str(e)) from e
        return {k: v.numpy() for k, v in outputs.items()}

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


class Loader:
    """Loads one version on `load()`; `warmup(servable)` runs before it is handed out."""

    def __init__(self, name: str, version: int, path: str, tags=("serve",),
                 batching: Optional[BatchingOptions] = None,
                 warmup: Optional[Callable[[Servable], int]] = None):
        self.name = name
        self.version = version
        self.path = path
        self.tags = tuple(tags)
        self.batching = batching
        self.warmup = warmup

    def load(self) -> Servable:
        import tensorflow as tf

        signature_defs = read_signature_defs(self.path, self.tags)
        try:
            obj = tf.saved_model.load(self.path, tags=list(self.tags))
        except Exception as e:  # noqa: BLE001 - any load failure is reported, never raised on
            if isinstance(e, tf.errors.OpError):
                raise from_tf_error(e) from e
            raise ServingError(Code.UNKNOWN, f"{type(e).__name__}: {e}") from e
        functions = dict(obj.signatures)
        servable = Servable(self.name, self.version, self.path,
                            {k: v for k, v in signature_defs.items()}, functions,
                            batching=self.batching, keepalive=obj)
        try:
            if self.warmup is not None:
                n = self.warmup(servable)
                if n:
                    log.info("Finished reading warmup data for model at %s/assets.extra/"
                             "tf_serving_warmup_requests. Number of warmup records read: %d.",
                             self.path, n)
        except BaseException:
            servable.close()
            raise
        return servable
