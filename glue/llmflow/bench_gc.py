"""Garbage collection in the benchmarks, as in the serving process."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def startup_frozen() -> Iterator[None]:
    """Collect, then freeze every object that exists now, for the duration of the block.

    The serving process does the same once start-up is over (``api/app.py``): the modules
    it imported (llmflow, Presidio, pymilvus … about a million tracked objects) move out of
    the collector's generations, and a full collection no longer walks them. A benchmark
    that runs the code under test in its own process and does not freeze charges the calls
    it times with full collections of 25–290 ms that a server never makes. Collections of
    what the calls themselves allocate still happen, as in the server.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
