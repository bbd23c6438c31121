"""The batcher in isolation: batch formation, padding, limits, and unchanged answers."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from serving.model_server.config import BatchingOptions, ConfigError
from serving.model_server.errors import Code, ServingError
from serving.model_server.servable.batching import Batcher


class Recorder:
    """A fake signature: y = 2x + 1 row-wise, recording the batch shapes it ran."""

    def __init__(self):
        self.shapes = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, signature, inputs):
        self.entered.set()
        self.release.wait(10)
        x = inputs["x"]
        self.shapes.append(x.shape)
        return {"y": x * 2 + 1}


def submit_all(batcher, arrays):
    futures = [batcher.submit("sig", {"x": a}) for a in arrays]
    return [f.result(10)["y"] for f in futures]


def test_queued_requests_run_as_one_padded_batch_and_split_back():
    run = Recorder()
    run.release.clear()  # hold the thread so the next requests queue up together
    b = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1,
                                allowed_batch_sizes=(4, 8)), run)
    try:
        first = b.submit("sig", {"x": np.array([[0.0]], np.float32)})
        assert run.entered.wait(10)  # the worker is busy with the first batch
        arrays = [np.full((n, 1), n, np.float32) for n in (1, 2, 2)]
        futures = [b.submit("sig", {"x": a}) for a in arrays]
        run.release.set()
        assert first.result(10)["y"].tolist() == [[1.0]]
        outs = [f.result(10)["y"] for f in futures]
    finally:
        b.close()
    for a, y in zip(arrays, outs):
        np.testing.assert_array_equal(y, a * 2 + 1)
    # first request alone padded to 4; then 1+2+2=5 rows padded to 8 (allowed sizes).
    assert run.shapes == [(4, 1), (8, 1)]


def test_batched_answers_equal_direct_answers_under_concurrency():
    run = Recorder()
    b = Batcher(BatchingOptions(max_batch_size=16, batch_timeout_micros=2000,
                                num_batch_threads=2), run)
    rng = np.random.default_rng(0)
    arrays = [rng.random((1 + i % 4, 3), dtype=np.float32) for i in range(40)]
    results = [None] * len(arrays)

    def go(i):
        results[i] = b.submit("sig", {"x": arrays[i]}).result(10)["y"]
    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(arrays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    b.close()
    for a, y in zip(arrays, results):
        np.testing.assert_array_equal(y, a * 2 + 1)
    assert max(s[0] for s in run.shapes) > 4  # some requests really were batched together


def test_task_larger_than_max_batch_size_is_invalid_argument():
    b = Batcher(BatchingOptions(max_batch_size=2, num_batch_threads=1), Recorder())
    try:
        with pytest.raises(ServingError) as e:
            b.submit("sig", {"x": np.zeros((3, 1), np.float32)})
        assert e.value.code == Code.INVALID_ARGUMENT
        assert "Task size 3 is larger than maximum input batch size 2" in e.value.message
    finally:
        b.close()


def test_full_queue_is_unavailable():
    run = Recorder()
    run.release.clear()
    b = Batcher(BatchingOptions(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1,
                                batch_timeout_micros=10_000_000), run)
    try:
        b.submit("sig", {"x": np.zeros((1, 1), np.float32)})
        with pytest.raises(ServingError) as e:
            b.submit("sig", {"x": np.zeros((1, 1), np.float32)})
        assert e.value.code == Code.UNAVAILABLE
    finally:
        run.release.set()
        b.close()


def test_pad_variable_length_inputs_pads_with_the_first_element():
    run = Recorder()
    run.release.clear()
    b = Batcher(BatchingOptions(max_batch_size=4, num_batch_threads=1,
                                batch_timeout_micros=200_000,
                                pad_variable_length_inputs=True), run)
    try:
        f1 = b.submit("sig", {"x": np.array([[5.0, 6.0, 7.0]], np.float32)})
        f2 = b.submit("sig", {"x": np.array([[1.0]], np.float32)})
        run.release.set()
        y1, y2 = f1.result(10)["y"], f2.result(10)["y"]
    finally:
        b.close()
    assert y1.tolist() == [[11.0, 13.0, 15.0]]
    assert y2.tolist() == [[3.0, 3.0, 3.0]]  # [1] padded to [1, 1, 1] with its first element


def test_different_shapes_without_padding_go_to_separate_batches():
    run = Recorder()
    b = Batcher(BatchingOptions(max_batch_size=4, num_batch_threads=1,
                                batch_timeout_micros=1000), run)
    try:
        outs = submit_all(b, [np.ones((1, 3), np.float32), np.ones((1, 2), np.float32)])
    finally:
        b.close()
    assert [o.shape for o in outs] == [(1, 3), (1, 2)]


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_batch_size=8, allowed_batch_sizes=(4,)), "final entry must equal max_batch_size"),
    (dict(max_batch_size=8, allowed_batch_sizes=(8, 4)), "increasing"),
    (dict(max_batch_size=0), "max_batch_size must be positive"),
])
def test_invalid_batching_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BatchingOptions(**kwargs).validate()


def test_request_deadline_while_waiting_in_the_batch_queue():
    """--rest_api_timeout_in_ms / gRPC deadlines bound the wait for a batch."""
    import tensorflow as tf

    from serving.model_server.servable.loader import Servable

    graph = tf.Graph()
    with graph.as_default():
        tf.identity(tf.compat.v1.placeholder(tf.float32, name="x"), name="y")
    servable = Servable("m", 1, "/nowhere", {}, tf.compat.v1.Session(graph=graph),
                        batching=BatchingOptions(max_batch_size=8, num_batch_threads=1,
                                                 batch_timeout_micros=2_000_000))
    try:
        with pytest.raises(ServingError) as e:
            servable.run({"x:0": np.ones((1,), np.float32)}, ("y:0",), timeout=0.05)
        assert e.value.code == Code.DEADLINE_EXCEEDED
        y = servable.run({"x:0": np.ones((2,), np.float32)}, ("y:0",), timeout=10)["y:0"]
        assert y.tolist() == [1.0, 1.0]
    finally:
        servable.close()


def test_a_cancelled_request_never_runs():
    """A caller that gave up (deadline, cancelled RPC) is dropped from its batch."""
    run = Recorder()
    run.release.clear()
    b = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1),
                run)
    try:
        first = b.submit("sig", {"x": np.array([[0.0]], np.float32)})
        assert run.entered.wait(10)
        gone = b.submit("sig", {"x": np.full((2, 1), 5, np.float32)})
        kept = b.submit("sig", {"x": np.full((1, 1), 7, np.float32)})
        assert gone.cancel()
        run.release.set()
        first.result(10)
        assert kept.result(10)["y"].tolist() == [[15.0]]
    finally:
        b.close()
    assert run.shapes == [(1, 1), (1, 1)]


def test_event_loop_requests_batch_together_and_a_cancelled_one_never_runs():
    """try_submit(loop=...): asyncio futures, settled on their loop; cancel withdraws."""
    run = Recorder()
    run.release.clear()
    b = Batcher(BatchingOptions(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1),
                run)

    async def scenario():
        loop = asyncio.get_running_loop()
        for unbatchable, words in (({"x": np.float32(1.0)}, "at least one dimension"),
                                   ({"x": np.zeros((2, 1), np.float32),
                                     "z": np.zeros((3, 1), np.float32)}, "equal 0th-dimension")):
            with pytest.raises(ServingError, match=words) as refused:  # as TF Serving's
                b.try_submit("sig", unbatchable, loop)
            assert refused.value.code == Code.INVALID_ARGUMENT
        assert b.try_submit("sig", {"x": np.zeros((0, 1), np.float32)}, loop) is None  # no rows
        first = b.try_submit("sig", {"x": np.array([[0.0]], np.float32)}, loop)
        assert await loop.run_in_executor(None, run.entered.wait, 10)
        futures = [b.try_submit("sig", {"x": np.full((1, 1), i, np.float32)}, loop)
                   for i in (1, 2, 3)]
        futures[1].cancel()
        run.release.set()
        await first
        return [(await futures[0])["y"], (await futures[2])["y"]], futures[1].cancelled()

    try:
        (one, three), cancelled = asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        b.close()
    assert one.tolist() == [[3.0]] and three.tolist() == [[7.0]] and cancelled
    assert run.shapes == [(1, 1), (2, 1)]  # 1 and 3 in one batch; 2 never ran
