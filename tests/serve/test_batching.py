"""The micro-batcher: concurrent jobs share one call and each gets its own row back; a lone job does
not wait for the window; jobs still decoding are waited for; a failing batch fails only itself."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from imgcls.serve.batching import MicroBatcher, choose_max_batch

LONG_WINDOW_MS = 30_000  # far longer than any test waits: reaching it would show as a timeout


def image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


def row_of(batch: np.ndarray) -> np.ndarray:
    """Stand-in model: each image's mean pixel and its batch size, so a result shows where it came from."""
    means = batch.reshape(len(batch), -1).mean(axis=1)
    return np.stack([means, np.full(len(batch), len(batch), dtype=np.float64)], axis=1)


@pytest.fixture
def batcher_factory():
    made: list[MicroBatcher] = []

    def make(run_batch=row_of, **kwargs) -> MicroBatcher:
        batcher = MicroBatcher(run_batch, **kwargs)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close()


def test_jobs_queued_while_the_model_runs_share_the_next_call(batcher_factory):
    started, release = threading.Event(), threading.Event()

    def slow(batch: np.ndarray) -> np.ndarray:
        started.set()
        release.wait(10)
        return row_of(batch)

    batcher = batcher_factory(slow, max_batch=8, window_ms=0)
    first = batcher.submit(image(1))
    assert started.wait(10)
    others = [batcher.submit(image(v)) for v in (2, 3, 4)]
    release.set()
    assert first.result(10).tolist() == [1.0, 1.0]
    assert [f.result(10).tolist() for f in others] == [[2.0, 3.0], [3.0, 3.0], [4.0, 3.0]]
    assert batcher.stats.sizes == {1: 1, 3: 1}


def test_batches_never_exceed_max_batch(batcher_factory):
    started, release = threading.Event(), threading.Event()

    def slow(batch: np.ndarray) -> np.ndarray:
        started.set()
        release.wait(10)
        return row_of(batch)

    batcher = batcher_factory(slow, max_batch=2, window_ms=0)
    futures = [batcher.submit(image(0))]
    assert started.wait(10)
    futures += [batcher.submit(image(v)) for v in range(1, 6)]
    release.set()
    assert [f.result(10)[0] for f in futures] == [0, 1, 2, 3, 4, 5]
    assert batcher.stats.largest == 2 and batcher.stats.images == 6


def test_a_lone_job_does_not_wait_for_the_window(batcher_factory):
    batcher = batcher_factory(max_batch=16, window_ms=LONG_WINDOW_MS)
    with batcher.reserve() as place:
        future = place.submit(image(7))
    assert future.result(timeout=10).tolist() == [7.0, 1.0]


def test_a_job_still_decoding_joins_the_batch(batcher_factory):
    batcher = batcher_factory(max_batch=16, window_ms=LONG_WINDOW_MS)
    with batcher.reserve() as first, batcher.reserve() as second:
        early = first.submit(image(1))
        time.sleep(0.05)  # the second request is still "decoding": the worker must wait for it
        assert not early.done()
        late = second.submit(image(2))
    assert early.result(10).tolist() == [1.0, 2.0]
    assert late.result(10).tolist() == [2.0, 2.0]


def test_a_request_that_fails_to_decode_releases_its_place(batcher_factory):
    batcher = batcher_factory(max_batch=16, window_ms=LONG_WINDOW_MS)
    with batcher.reserve() as good:
        future = good.submit(image(5))
        with pytest.raises(ValueError), batcher.reserve():
            raise ValueError("corrupt upload")  # leaves without submitting
    assert future.result(timeout=10).tolist() == [5.0, 1.0]
    assert batcher.pending == 0


def test_a_failing_batch_fails_only_its_own_jobs(batcher_factory):
    calls = []

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return row_of(batch)

    batcher = batcher_factory(flaky, window_ms=0)
    with pytest.raises(RuntimeError, match="model exploded"):
        batcher.submit(image(1)).result(10)
    assert batcher.submit(image(9)).result(10).tolist() == [9.0, 1.0]


def test_a_reservation_submits_once(batcher_factory):
    batcher = batcher_factory()
    with batcher.reserve() as place:
        place.submit(image(1)).result(10)
        with pytest.raises(RuntimeError, match="already used"):
            place.submit(image(2))


def test_closing_finishes_queued_jobs_and_refuses_new_ones():
    batcher = MicroBatcher(row_of, window_ms=0)
    futures = [batcher.submit(image(v)) for v in range(3)]
    batcher.close()
    assert [f.result(10)[0] for f in futures] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(image(4))


def burn(milliseconds: float) -> None:
    """Use this much CPU time (what `choose_max_batch` measures), not just wall time."""
    end = time.process_time() + milliseconds / 1000
    while time.process_time() < end:
        pass


def test_choose_max_batch_batches_a_model_whose_calls_cost_mostly_overhead():
    def overhead_bound(batch: np.ndarray) -> np.ndarray:  # like a small CNN: 4 ms per call + 0.2 ms per image
        burn(4 + 0.2 * len(batch))
        return row_of(batch)

    chosen, costs = choose_max_batch(overhead_bound, image(1), repeats=2)
    assert chosen == 16
    assert costs[1] > 3 * costs[16]


def test_choose_max_batch_does_not_batch_a_model_that_gets_dearer_per_image():
    def cache_bound(batch: np.ndarray) -> np.ndarray:  # like EfficientNet at 192 px: bigger batches spill caches
        burn(1.5 * len(batch) * (1 + 0.1 * len(batch)))
        return row_of(batch)

    chosen, costs = choose_max_batch(cache_bound, image(1), repeats=2)
    assert chosen == 1
    assert costs[16] > 1.5 * costs[1]
