"""Server-side dynamic batching with TF Serving's BatchingParameters semantics.

Requests for the same target (the tensors they fetch), with the same input names and
dtypes and, unless padding is on, the same per-example shapes, queue together, as TF
Serving's batching session keys its queues by tensor signature. A batch thread takes a
batch when the queue holds `max_batch_size` rows or its oldest task has waited
`batch_timeout_micros`, concatenates the inputs along dimension 0, pads the batch up to
the next `allowed_batch_sizes` entry by repeating the first row, runs it once, and splits
the outputs back per request. With
`pad_variable_length_inputs`, inputs whose non-batch dimensions differ are padded to the
largest with the tensor's first element, as TF Serving's batching session does.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from typing import Callable, Deque, Dict, Hashable, List, Mapping, Tuple

import numpy as np

from serving.model_server.config import BatchingOptions
from serving.model_server.errors import Code, ServingError

RunFn = Callable[[Hashable, Dict[str, np.ndarray]], Dict[str, np.ndarray]]


class _Task:
    """One queued request. Its future is a concurrent one, or, when submitted from an
    event loop, an asyncio one of that `loop` (settled there, a whole batch at a time)."""

    __slots__ = ("inputs", "size", "future", "loop", "enqueued")

    def __init__(self, inputs: Dict[str, np.ndarray], size: int, loop=None):
        self.inputs = inputs
        self.size = size
        self.loop = loop
        self.future = Future() if loop is None else loop.create_future()
        self.enqueued = time.monotonic()

    def claim(self) -> bool:
        """False when the caller has given up (cancelled): the task is dropped unrun."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()
        return not self.future.cancelled()


class _Queue:
    def __init__(self, key):
        self.key = key
        self.tasks: Deque[_Task] = collections.deque()
        self.rows = 0


def batch_size_of(inputs: Mapping[str, np.ndarray]) -> int:
    """The common 0th dimension of all inputs. A scalar input, or inputs that differ in it,
    cannot be batched: INVALID_ARGUMENT with TF Serving's own words (batching_util.h,
    ComputeTensorBatchSize), as tensorflow_model_server --enable_batching answers, so a
    request that works here works on the official image (without batching both serve it)."""
    size = None
    for a in inputs.values():
        if a.ndim == 0:
            raise ServingError(Code.INVALID_ARGUMENT,
                               "Batching Run() input tensors must have at least one dimension")
        if size is None:
            size = a.shape[0]
        elif a.shape[0] != size:
            raise ServingError(Code.INVALID_ARGUMENT, "Batching Run() input tensors must have "
                                                      "equal 0th-dimension size")
    return size


class Batcher:
    """Batches `run(target, inputs)` calls of one servable over `num_batch_threads`."""

    def __init__(self, options: BatchingOptions, run: RunFn, name: str = "batch"):
        self.options = options
        self._run = run
        self._cond = threading.Condition()
        self._queues: Dict[Tuple, _Queue] = {}
        self._order: Deque[Tuple] = collections.deque()
        self._closed = False
        self._threads = [threading.Thread(target=self._worker, name=f"{name}-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for t in self._threads:
            t.start()

    def submit(self, target: Hashable, inputs: Dict[str, np.ndarray]) -> Future:
        """Queue one request; the future resolves to its share of the batch's outputs. A
        request with no inputs or no rows, or one after close, runs directly, here."""
        future = self.try_submit(target, inputs)
        return self._direct(target, inputs) if future is None else future

    def try_submit(self, target: Hashable, inputs: Dict[str, np.ndarray], loop=None):
        """Like submit, but None instead of running such a request on this thread. With
        `loop` (the running event loop; call from its thread) the result is an asyncio
        future: a batch thread settles all of a batch's futures with one wake-up of the loop
        instead of one per request."""
        if not inputs or self._closed:
            return None
        size = batch_size_of(inputs)
        if size == 0:
            return None
        if size > self.options.max_batch_size:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Task size {size} is larger than maximum input batch size "
                               f"{self.options.max_batch_size}")
        items = sorted(inputs.items())
        key = (target, tuple((k, a.dtype) for k, a in items),
               () if self.options.pad_variable_length_inputs else tuple(
                   a.shape[1:] for _, a in items))
        task = _Task(inputs, size, loop)
        with self._cond:
            if self._closed:
                return None
            q = self._queues.get(key)
            if q is None:
                q = self._queues[key] = _Queue(key)
            limit = self.options.max_enqueued_batches * self.options.max_batch_size
            if q.rows + size > limit:
                raise ServingError(Code.UNAVAILABLE, "The batch scheduling queue to which this "
                                                     "task was submitted is full")
            q.tasks.append(task)
            q.rows += size
            # Wake a batch thread only when it has something new to decide: a queue that
            # was empty (start its timeout) or one that holds a full batch. Waking it on
            # every request costs a thread switch each and decides nothing.
            if len(q.tasks) == 1 or q.rows >= self.options.max_batch_size:
                self._cond.notify()
        return task.future

    def _direct(self, target, inputs) -> Future:
        f: Future = Future()
        try:
            f.set_result(self._run(target, inputs))
        except BaseException as e:  # delivered to the caller through the future
            f.set_exception(e)
        return f

    def _take(self):
        """Under the lock: (key, tasks) of a ready batch, or the seconds until one may be."""
        timeout = self.options.batch_timeout_micros / 1e6
        now = time.monotonic()
        wait = None
        for key, q in list(self._queues.items()):
            if not q.tasks:
                del self._queues[key]
                continue
            age = now - q.tasks[0].enqueued
            if q.rows >= self.options.max_batch_size or age >= timeout or self._closed:
                tasks, rows, taken = [], 0, 0
                while q.tasks and rows + q.tasks[0].size <= self.options.max_batch_size:
                    t = q.tasks.popleft()
                    taken += t.size
                    if t.claim():
                        rows += t.size
                        tasks.append(t)
                q.rows -= taken
                if q.rows >= self.options.max_batch_size:
                    self._cond.notify()  # another full batch: the other threads may take it
                if not tasks:
                    return self._take()  # every task taken had been cancelled: look again
                # fairness: move this queue to the end of the dict order
                if not q.tasks:
                    del self._queues[key]
                else:
                    self._queues[key] = self._queues.pop(key)
                return key, tasks
            remaining = timeout - age
            wait = remaining if wait is None else min(wait, remaining)
        return None, wait

    def _worker(self) -> None:
        while True:
            with self._cond:
                while True:
                    key, tasks = self._take()
                    if key is not None:
                        break
                    if self._closed:
                        return
                    self._cond.wait(tasks)
            self._process(key[0], tasks)

    def _process(self, target, tasks: List[_Task]) -> None:
        try:
            outputs = self._run(target, self._merge(tasks))
            total = sum(t.size for t in tasks)
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] < total:
                    raise ServingError(Code.INTERNAL,
                                       f"Batched output tensor {name} has 0th dimension "
                                       f"{value.shape[0] if value.ndim else 'none'}, not the "
                                       f"batched input size {total}")
            results, offset = [], 0
            for t in tasks:
                results.append((t, True, {name: value[offset:offset + t.size]
                                          for name, value in outputs.items()}))
                offset += t.size
        except BaseException as e:
            results = [(t, False, e) for t in tasks]
        by_loop = {}
        for item in results:
            t = item[0]
            if t.loop is None:
                _settle([item])
            else:
                by_loop.setdefault(t.loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    def _merge(self, tasks: List[_Task]) -> Dict[str, np.ndarray]:
        merged = {}
        rows = sum(t.size for t in tasks)
        target = next((s for s in self.options.allowed_batch_sizes if s >= rows), rows)
        for name in tasks[0].inputs:
            parts = [t.inputs[name] for t in tasks]
            if self.options.pad_variable_length_inputs:
                parts = _pad_to_common_shape(parts)
            value = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            if target > rows:
                pad = np.repeat(value[:1], target - rows, axis=0)
                value = np.concatenate([value, pad], axis=0)
            merged[name] = value
        return merged

    def close(self) -> None:
        """Finish what is queued, then stop the threads; later submits run directly."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=30)


def _settle(items) -> None:
    """Resolve (task, ok, result-or-exception) items; on the futures' own thread for
    asyncio ones. A future cancelled meanwhile stays cancelled."""
    for task, ok, value in items:
        if task.future.done():
            continue
        if ok:
            task.future.set_result(value)
        else:
            task.future.set_exception(value)


def _pad_to_common_shape(parts: List[np.ndarray]) -> List[np.ndarray]:
    ranks = {p.ndim for p in parts}
    if len(ranks) != 1:
        raise ServingError(Code.INVALID_ARGUMENT,
                           "cannot batch tensors of different ranks with padding")
    target = tuple(max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim))
    out = []
    for p in parts:
        if p.shape[1:] == target:
            out.append(p)
            continue
        widths = [(0, 0)] + [(0, t - s) for s, t in zip(p.shape[1:], target)]
        fill = p.flat[0] if p.size else 0
        out.append(np.pad(p, widths, mode="constant", constant_values=fill))
    return out
