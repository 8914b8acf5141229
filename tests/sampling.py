"""Sample something in a background thread while a block of a test runs (a run going on, a budget granting)."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def sampling(sample: Callable[[], None], every: float, join_timeout: float = 30) -> Iterator[None]:
    """Call `sample` every `every` seconds until the block ends, and once more after it."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            sample()
            stop.wait(every)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=join_timeout)
        sample()  # what changed between the last sample and the block's end
