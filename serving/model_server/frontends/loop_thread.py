"""An asyncio event loop on a thread of its own, driven from synchronous code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import uvloop


class LoopThread:
    """Runs `loop` forever on a daemon thread; `run(coro)` waits for a coroutine there.

    `fast`: the loop is uvloop's (as the REST front end's, under uvicorn), whose callbacks,
    futures and socket reads are C, not asyncio's pure-Python selector loop; the model
    process's link to its front-end workers runs on one (benchmarks/README.md, "Issue 22").
    """

    def __init__(self, name: str, fast: bool = False):
        self.loop = uvloop.new_event_loop() if fast else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Cancel what still runs there (a connection's reader), then stop the loop."""
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self.run(cancel_all(), timeout=5)
        except concurrent.futures.TimeoutError:  # a task that ignores cancellation: stop the loop under it
            pass
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
