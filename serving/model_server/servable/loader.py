"""Loader and Servable: one SavedModel version, loaded the way TF Serving loads it.

A Loader is cheap to construct (the Manager makes one per aspired version and may discard
it unloaded); `load()` does the expensive part. Like TF Serving's SavedModelBundle it loads
the MetaGraphDef tagged `--saved_model_tags` into its own TensorFlow Session, restoring the
variables and running the init op (main_op, legacy_init_op or TF2's __saved_model_init_op)
with the asset files' paths fed in. Requests then run the signature's tensors by name
(Session::MakeCallable), which is TF Serving's semantics for TF1 and TF2 exports alike:
an input is fed at the tensor its TensorInfo names, whatever static shape that tensor has,
and the graph decides what it accepts. Then batching and warmup, so a version only becomes
AVAILABLE once it has answered its warmup requests.

A request holds its Servable (`acquire`/`release`, TF Serving's ServableHandle), so an
unload waits for the requests still using the version before it closes the Session.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from serving.model_server.config import BatchingOptions
from serving.model_server.errors import Code, ServingError, from_tf_error
from serving.model_server.servable.signatures import runnable

log = logging.getLogger("serving.model_server")

Feeds = Dict[str, np.ndarray]  # tensor name -> value
Fetches = Tuple[str, ...]  # tensor names
MAX_CALLABLES = 256  # distinct (feeds, fetches) combinations kept ready per version
CLOSE_GRACE_SECONDS = 60.0  # an unload waits this long for requests still running


class Servable:
    """A loaded version: its signature defs, its Session, and a way to run tensors by name."""

    def __init__(self, name: str, version: int, path: str, signature_defs, session,
                 batching: Optional[BatchingOptions] = None):
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = signature_defs
        # what a Predict may run, decided once rather than per request
        self.runnable_signatures = {n: s for n, s in signature_defs.items() if runnable(s)}
        self._session = session
        self._callables: Dict[Tuple[Fetches, Fetches], Callable] = {}
        self._lock = threading.Condition()
        self._holders = 0
        self._closing = False
        self.batcher = None
        if batching is not None:
            from serving.model_server.servable.batching import Batcher
            self.batcher = Batcher(batching, self.run_direct, name=f"batch-{name}-{version}")

    def __repr__(self) -> str:
        return f"Servable({self.name!r}, {self.version})"

    # ---- handles -------------------------------------------------------------------
    def acquire(self) -> bool:
        """Hold the version for one request; False once it is being unloaded."""
        with self._lock:
            if self._closing:
                return False
            self._holders += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if not self._holders:
                self._lock.notify_all()

    # ---- running -------------------------------------------------------------------
    def run(self, feeds: Feeds, fetches: Fetches,
            timeout: Optional[float] = None) -> Dict[str, np.ndarray]:
        """Run the graph, through the batching queue when batching is on."""
        if self.batcher is None:
            return self.run_direct(fetches, feeds)
        future = self.batcher.submit(fetches, feeds)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:  # not the builtin TimeoutError before Python 3.11
            future.cancel()  # still queued: it will not run
            raise _batch_deadline() from None

    async def run_async(self, feeds: Feeds, fetches: Fetches, executor,
                        timeout: Optional[float] = None) -> Dict[str, np.ndarray]:
        """`run` for an event loop: a batched request is awaited (no thread blocks waiting
        for its batch), anything else runs on `executor`. Cancelling the caller (a gRPC
        deadline or a client that went away), or `timeout` passing while it waits, takes a
        still-queued request out of its batch.
        """
        loop = asyncio.get_running_loop()
        queued = None if self.batcher is None else self.batcher.try_submit(fetches, feeds,
                                                                           loop)
        if queued is None:
            return await loop.run_in_executor(executor, self.run_direct, fetches, feeds)
        if timeout is None:
            return await queued
        try:
            return await asyncio.wait_for(queued, timeout)
        except asyncio.TimeoutError:
            raise _batch_deadline() from None

    def run_direct(self, fetches: Fetches, feeds: Feeds) -> Dict[str, np.ndarray]:
        """One Session run: `feeds` by tensor name -> {fetched tensor name: value}."""
        import tensorflow as tf

        names = tuple(sorted(feeds))
        fn = self._callable(names, fetches)
        try:
            values = fn(*(feeds[n] for n in names))
        except tf.errors.OpError as e:
            raise from_tf_error(e) from e
        except (TypeError, ValueError) as e:  # a value numpy/TF cannot make a tensor of
            raise ServingError(Code.INVALID_ARGUMENT, str(e)) from e
        return dict(zip(fetches, values))

    def _callable(self, feeds: Fetches, fetches: Fetches) -> Callable:
        key = (feeds, fetches)
        fn = self._callables.get(key)
        if fn is not None:
            return fn
        import tensorflow as tf

        from tensorflow.core.protobuf import config_pb2

        # Session::MakeCallable, as TF Serving's Session::Run: no Python on the run path
        # (Session.make_callable with feeds falls back to Session.run and its checks).
        options = config_pb2.CallableOptions(feed=feeds, fetch=fetches)
        try:
            fn = self._session._make_callable_from_options(options)
        except (KeyError, ValueError, TypeError, tf.errors.OpError) as e:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"The signature names tensors the graph cannot run: {e}") from e
        with self._lock:
            if len(self._callables) < MAX_CALLABLES:
                self._callables.setdefault(key, fn)
        return fn

    def close(self, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Refuse new requests, let the ones holding this version finish (up to `grace`
        seconds), then stop batching and close the Session, releasing its memory."""
        with self._lock:
            self._closing = True
            if not self._lock.wait_for(lambda: self._holders == 0, timeout=grace):
                log.warning("Unloading %s with %d requests still running", self,
                            self._holders)
        if self.batcher is not None:
            self.batcher.close()
        with self._lock:
            self._callables.clear()
        self._session.close()


def _batch_deadline() -> ServingError:
    return ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while batching")


class Loader:
    """Loads one version on `load()`; `warmup(servable)` runs before it is handed out."""

    def __init__(self, name: str, version: int, path: str, tags: Sequence[str] = ("serve",),
                 batching: Optional[BatchingOptions] = None,
                 warmup: Optional[Callable[[Servable], int]] = None,
                 session_config=None):
        self.name = name
        self.version = version
        self.path = path
        self.tags = tuple(tags)
        self.batching = batching
        self.warmup = warmup
        self.session_config = session_config

    def load(self) -> Servable:
        session, signature_defs = load_saved_model(self.path, self.tags, self.session_config)
        servable = Servable(self.name, self.version, self.path, signature_defs, session,
                            batching=self.batching)
        try:
            if self.warmup is not None:
                n = self.warmup(servable)
                if n:
                    log.info("Finished reading warmup data for model at %s/assets.extra/"
                             "tf_serving_warmup_requests. Number of warmup records read: %d.",
                             self.path, n)
        except BaseException:
            servable.close(grace=0)
            raise
        return servable


def load_saved_model(path: str, tags: Iterable[str], session_config=None):
    """(Session, {signature name: SignatureDef}) of the meta graph tagged `tags`: variables
    restored, assets fed, the init op run. Failures are ServingErrors saying what is wrong."""
    import tensorflow as tf

    v1 = tf.compat.v1
    tags = list(tags)
    graph = tf.Graph()
    session = v1.Session(graph=graph, config=session_config)
    try:
        with graph.as_default(), warnings.catch_warnings():
            # protobuf only warns on some corrupt saved_model.pb files, then goes on with
            # what it parsed: make that the parse error it is
            warnings.simplefilter("error", RuntimeWarning)
            meta_graph = v1.saved_model.loader.load(session, tags, path)
    except BaseException as e:
        session.close()
        raise _load_error(path, tags, e) from e
    graph.finalize()  # serving never adds ops: a request cannot grow the graph
    return session, dict(meta_graph.signature_def)


def _load_error(path: str, tags, e: BaseException) -> ServingError:
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    message = getattr(e, "message", None) or str(e)
    if isinstance(e, RuntimeError) and "could not be found in SavedModel" in message:
        return ServingError(Code.NOT_FOUND,
                            f"Could not find meta graph def matching supplied tags: "
                            f"{{ {' '.join(sorted(tags))} }}. To inspect available tag-sets in "
                            f"the SavedModel, please use the SavedModel CLI: `saved_model_cli`")
    if isinstance(e, (DecodeError, RuntimeWarning, SystemError)):  # protobuf's parse errors
        return ServingError(Code.DATA_LOSS, f"Could not parse the SavedModel at {path}: "
                                            f"saved_model.pb is not a valid SavedModel")
    if isinstance(e, IOError) and not isinstance(e, tf.errors.OpError):
        return ServingError(Code.DATA_LOSS, f"Could not parse the SavedModel at {path}: "
                                            f"{message}")
    if not (Path(path) / "variables").is_dir():
        return ServingError(Code.FAILED_PRECONDITION,
                            f"The SavedModel at {path} has no variables/ directory, but its "
                            f"graph has variables to restore ({message.splitlines()[0]})")
    if isinstance(e, tf.errors.OpError):
        return from_tf_error(e)
    return ServingError(Code.UNKNOWN, f"{type(e).__name__}: {message}")
