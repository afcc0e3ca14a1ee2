"""Reading the next batch while the one before is written, in a thread of its own.

While a batch is staged the source would wait idle for its next FETCH; read ahead, it works
meanwhile. This pays only where reading is mostly waiting on the source: Python work on both
sides (decoding) runs no faster with two threads, and slower (see `SqlFetcher.batches`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from datasync_dagster.fetchers.base import Batch


def read_ahead(batches: Iterator[Batch]) -> Iterator[Batch]:
    """The batches, each one read by a thread while the one before is used.

    At most two batches are in memory: the one in use and the one being read. The thread
    stops, and `batches` is closed in it, when this generator ends, however it ends.
    """
    handed: queue.SimpleQueue[tuple[Batch | BaseException | None]] = queue.SimpleQueue()
    turn, stop = threading.Semaphore(1), threading.Event()
    reader = threading.Thread(
        target=_read, args=(batches, handed, turn, stop), name="datasync-read-ahead", daemon=True
    )
    reader.start()
    try:
        while True:
            (item,) = handed.get()
            turn.release()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                return
            yield item
            del item
    finally:
        stop.set()
        turn.release()
        reader.join()


def _read(
    batches: Iterator[Batch],
    handed: queue.SimpleQueue[tuple[Batch | BaseException | None]],
    turn: threading.Semaphore,
    stop: threading.Event,
) -> None:
    try:
        while _my_turn(turn, stop):
            batch = next(batches, None)
            handed.put((batch,))
            if batch is None:
                return
            del batch
    except BaseException as e:  # raised again where the batches are used
        handed.put((e,))
    finally:
        getattr(batches, "close", lambda: None)()


def _my_turn(turn: threading.Semaphore, stop: threading.Event) -> bool:
    """Wait until the batch read last has been taken; False once the batches are not wanted."""
    while not turn.acquire(timeout=0.1):
        if stop.is_set():
            return False
    return not stop.is_set()
