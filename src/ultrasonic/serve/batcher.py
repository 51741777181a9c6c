"""Batcher: requests that arrive together share one model call.

    batcher = Batcher(lambda images: predictor.predict_scored(images, batch_size=16), max_batch=16, max_wait_ms=10)
    probs, scores = batcher.submit(image).result()   # this image's row: (1, K) and (1,) or None

On 2 cores a model call on 16 images costs little more than on one (the
network is small, the per-call overhead is not), so under load one call per
request leaves most of the machine idle in Python and Keras bookkeeping. The
first request of a batch waits at most `max_wait_ms` for others; a full batch
goes at once. Requests come from uvicorn's thread pool; each gets a
concurrent.futures.Future, which one worker thread fulfils with its own row.

A batch whose call fails is retried image by image, so one image the model
cannot take fails only its own request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

from ultrasonic.serve.settings import MAX_BATCH, MAX_WAIT_MS

log = logging.getLogger("ultrasonic")

Rows = tuple[np.ndarray, "np.ndarray | None"]  # (N, K) probabilities and (N,) OOD scores (None without a gate)


class Batcher:
    """One worker thread that stacks queued images and calls `run` once per batch."""

    def __init__(self, run: Callable[[np.ndarray], Rows], max_batch: int = MAX_BATCH,
                 max_wait_ms: float = MAX_WAIT_MS):
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.calls = 0  # model calls made (the tests count them); batches retried image by image count each
        self._queue: queue.SimpleQueue[tuple[np.ndarray, Future] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name="ultrasonic-batcher", daemon=True)
        self._worker.start()

    def submit(self, image: np.ndarray) -> Future:
        """A future of this image's (1, K) probabilities and (1,) scores (or None); its exception if the
        model failed on it."""
        future: Future = Future()
        self._queue.put((image, future))
        return future

    def close(self) -> None:
        """Stop the worker once the requests queued so far are answered."""
        self._queue.put(None)
        self._worker.join()

    def _serve(self) -> None:
        while (first := self._queue.get()) is not None:
            batch, stop = self._collect(first)
            self._answer(batch)
            if stop:
                return

    def _collect(self, first: tuple[np.ndarray, Future]) -> tuple[list[tuple[np.ndarray, Future]], bool]:
        """The first request and whatever arrives within max_wait of it, up to max_batch; and whether
        close() was called meanwhile."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _answer(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        """One call for the batch (less any request cancelled meanwhile), each future its own row."""
        self._call([(image, future) for image, future in batch if future.set_running_or_notify_cancel()])

    def _call(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        """One model call for the batch; if it fails, one call per image, so only the image at fault fails."""
        if not batch:
            return
        try:
            self.calls += 1
            probs, scores = self.run(np.stack([image for image, _ in batch]))
        except Exception as exc:  # noqa: BLE001 - whose image it was is found by retrying them one by one
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.warning("a batch of %d images failed (%s: %s); predicting them one by one", len(batch),
                        type(exc).__name__, exc)
            for item in batch:
                self._call([item])
            return
        for k, (_, future) in enumerate(batch):
            future.set_result((probs[k:k + 1], None if scores is None else scores[k:k + 1]))
