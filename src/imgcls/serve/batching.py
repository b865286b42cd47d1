"""Micro-batching: concurrent requests share one model call, a lone request does not wait.

A request first *reserves* a place (before decoding its upload), then *submits* its decoded
pixels. The worker thread takes whatever is queued and waits up to `window_ms` for more only
while other reserved requests are still decoding: those are the ones that can join the batch.
With nothing else in flight the batch runs at once, so a lone request pays no window at all.
Decoding happens before a request reaches the queue, so a bad upload never enters a batch and
cannot fail the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

BatchFunction = Callable[[np.ndarray], np.ndarray]  # (N, H, W, C) uint8 -> (N, n_classes)


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    def add(self, size: int) -> None:
        self.batches += 1
        self.images += size
        self.largest = max(self.largest, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1


@dataclass
class _Job:
    pixels: np.ndarray
    future: Future = field(default_factory=Future)


class Reservation:
    """A place in the next batches, held while the request decodes; `submit` at most once."""

    def __init__(self, batcher: MicroBatcher):
        self._batcher = batcher
        self.open = True

    def submit(self, pixels: np.ndarray) -> Future:
        """Queue (H, W, C) uint8 pixels; the future resolves to that image's (n_classes,) row."""
        if not self.open:
            raise RuntimeError("this reservation was already used")
        self.open = False
        return self._batcher._enqueue(pixels, reserved=True)


class MicroBatcher:
    """One worker thread running `run_batch` on up to `max_batch` images at a time."""

    def __init__(self, run_batch: BatchFunction, max_batch: int = 16, window_ms: float = 3.0):
        if max_batch < 1 or window_ms < 0:
            raise ValueError("max_batch must be >= 1 and window_ms >= 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window = window_ms / 1000
        self.stats = BatchStats()
        self._jobs: list[_Job] = []
        self._decoding = 0  # reserved, not yet submitted: requests that may still join a batch
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="imgcls-batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def reserve(self) -> Iterator[Reservation]:
        """Hold a place while decoding; leaving without `submit` (a bad upload) releases it."""
        with self._changed:
            self._decoding += 1
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            if reservation.open:
                reservation.open = False
                with self._changed:
                    self._decoding -= 1
                    self._changed.notify_all()

    def submit(self, pixels: np.ndarray) -> Future:
        """Queue pixels without a reservation (they join whatever batch runs next)."""
        return self._enqueue(pixels, reserved=False)

    @property
    def pending(self) -> int:
        """Requests decoding or queued."""
        with self._changed:
            return self._decoding + len(self._jobs)

    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued jobs, then stop the worker."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def _enqueue(self, pixels: np.ndarray, reserved: bool) -> Future:
        job = _Job(pixels)
        with self._changed:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if reserved:
                self._decoding -= 1
            self._jobs.append(job)
            self._changed.notify_all()
        return job.future

    def _work(self) -> None:
        while batch := self._next_batch():
            self._run(batch)

    def _next_batch(self) -> list[_Job]:
        """Wait for a job; then, while others are still decoding, up to `window` for them to join."""
        with self._changed:
            while not self._jobs and not self._closed:
                self._changed.wait()
            deadline = time.monotonic() + self.window
            while len(self._jobs) < self.max_batch and self._decoding > 0 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            batch, self._jobs = self._jobs[: self.max_batch], self._jobs[self.max_batch :]
            return batch

    def _run(self, batch: list[_Job]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            rows = self.run_batch(np.stack([job.pixels for job in live]))
        except BaseException as error:  # a model failure fails this batch only; the worker keeps serving
            for job in live:
                job.future.set_exception(error)
            return
        self.stats.add(len(live))
        for job, row in zip(live, rows, strict=True):
            job.future.set_result(row)


BATCH_SIZES = (1, 2, 4, 8, 16)


def choose_max_batch(
    run_batch: BatchFunction, image: np.ndarray, sizes: tuple[int, ...] = BATCH_SIZES, repeats: int = 3
) -> tuple[int, dict[int, float]]:
    """The batch size that makes this model cheapest per image on this CPU, and the measured cost of
    each size (CPU ms per image, all threads of the process). Batching is not always a saving: a small
    CNN costs about half as much per image in batches of 16, while EfficientNet-Lite0 at 192 px costs
    more (its activations leave the cache), so there the answer is 1. Among sizes within 5% of the
    cheapest, the smallest wins: same throughput, shorter waits. CPU time rather than wall time, so that
    other programs on the machine bias the choice less."""
    costs: dict[int, float] = {}
    for size in sizes:
        batch = np.repeat(image[None], size, axis=0)
        run_batch(batch)  # first call at this size allocates
        started = time.process_time()
        for _ in range(repeats):
            run_batch(batch)
        costs[size] = round((time.process_time() - started) * 1000 / (repeats * size), 3)
    cheapest = min(costs.values())
    return min(size for size, cost in costs.items() if cost <= cheapest * 1.05), costs
