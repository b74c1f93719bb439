"""Dynamic batching: concurrent requests share forward passes, through one bounded queue.

The rule: the oldest waiting image opens the next pass. Waiting images of its size (height x width) join it,
oldest first, up to `max_batch`; if fewer are there, the pass waits for more until the opener has waited
`max_wait_s`, then starts with what it has. Images of other sizes stay in the queue in arrival order and open
later passes, so no size waits behind another for more than one pass per image ahead of it.

Passes run one at a time on a worker thread (the model already uses every core), while the event loop goes on
receiving, decoding and answering. A request withdrawn before its pass (the client left, or it timed out) is
taken out of the queue and never computed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from seglab.serving.metrics import ServeMetrics


class QueueFull(Exception):
    """The queue holds its maximum of waiting images."""


@dataclasses.dataclass(eq=False)
class Job:
    """One image waiting for (or in) a forward pass, and the future its class map is delivered to."""

    image: np.ndarray
    answer: asyncio.Future
    arrived: float  # time.monotonic() at submission

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


class Batcher:
    """Collects submitted images into same-size batches for `predict_batch` (a list of `(H, W, 3)` uint8 arrays
    of one size -> one class map per image), at most `max_batch` per pass and `max_queue` waiting."""

    def __init__(self, predict_batch: Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]], *, max_batch: int,
                 max_wait_s: float, max_queue: int, metrics: ServeMetrics) -> None:
        self.predict_batch = predict_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.metrics = metrics
        self.passes = 0  # forward passes run
        self.images_predicted = 0
        self._waiting: collections.deque[Job] = collections.deque()
        self._arrival = asyncio.Event()
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="seglab-forward")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        """Starts the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="seglab-batcher")

    async def stop(self) -> None:
        """Stops the loop (a pass in progress finishes first) and its worker thread; waiting jobs are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._waiting:
            self._waiting.popleft().answer.cancel()
        self.metrics.queue_depth.set(0)
        self._worker.shutdown(wait=True)

    def submit(self, image: np.ndarray) -> Job:
        """Queues `image`; `QueueFull` if `max_queue` images already wait."""
        if len(self._waiting) >= self.max_queue:
            raise QueueFull
        job = Job(image, asyncio.get_running_loop().create_future(), time.monotonic())
        self._waiting.append(job)
        self.metrics.queue_depth.set(len(self._waiting))
        self._arrival.set()
        return job

    def withdraw(self, job: Job) -> bool:
        """Takes `job` out of the queue if it still waits (True: it will never be computed); its answer, if it
        comes from a pass already running, is dropped."""
        job.answer.cancel()
        try:
            self._waiting.remove(job)
        except ValueError:
            return False
        self.metrics.queue_depth.set(len(self._waiting))
        return True

    def _same_size(self, size: tuple[int, int]) -> list[Job]:
        return [job for job in self._waiting if job.size == size][:self.max_batch]

    async def _next_batch(self) -> list[Job]:
        # The opener waits for company until its max_wait_s is spent; a withdrawn opener hands over to the next.
        while True:
            while not self._waiting:
                self._arrival.clear()
                await self._arrival.wait()
            opener = self._waiting[0]
            while len(self._same_size(opener.size)) < self.max_batch and opener in self._waiting:
                remaining = opener.arrived + self.max_wait_s - time.monotonic()
                if remaining <= 0:
                    break
                self._arrival.clear()
                try:
                    await asyncio.wait_for(self._arrival.wait(), remaining)
                except TimeoutError:
                    break
            if opener not in self._waiting:
                continue
            batch = self._same_size(opener.size)
            for job in batch:
                self._waiting.remove(job)
            self.metrics.queue_depth.set(len(self._waiting))
            return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self.metrics.batch_size.observe(len(batch))
            started = time.monotonic()
            try:
                masks = await loop.run_in_executor(self._worker, self.predict_batch, [job.image for job in batch])
            except Exception as error:  # the model failed on this batch: each of its requests answers 500
                for job in batch:
                    if not job.answer.done():
                        job.answer.set_exception(error)
                continue
            finally:
                self.metrics.forward_seconds.observe(time.monotonic() - started)
                self.passes += 1
                self.images_predicted += len(batch)
            for job, mask in zip(batch, masks, strict=True):
                if not job.answer.done():  # withdrawn while its pass ran: nobody waits for it
                    job.answer.set_result(mask)
