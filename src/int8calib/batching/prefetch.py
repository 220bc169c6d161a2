"""Background prefetching: produce the next items in a thread while the caller works.

Decoding and resizing images (PIL) and reading tensor files release the GIL, so a
single thread hides most of the data loading behind inference.
"""

from __future__ import annotations

import queue
import threading
import weakref
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate over ``items`` with up to ``depth`` of them produced ahead in a thread.

    The thread starts at once, before the first ``next``: the first items are being
    produced while the caller still prepares (collection builds its ONNX Runtime
    session meanwhile). ``depth <= 0`` iterates in the caller's thread. An exception in
    the producer is re-raised in the consumer at the point it happened; closing the
    iterator early, or dropping it, stops the producer.
    """
    if depth <= 0:
        return iter(items)
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="int8calib-prefetch", daemon=True)
    thread.start()
    consumer = _consume(buffer, stop, thread)
    weakref.finalize(consumer, stop.set)  # an iterator dropped unstarted never runs its finally
    return consumer


def _consume(buffer: queue.Queue, stop: threading.Event, thread: threading.Thread) -> Iterator:
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()
