"""`fewer_collections()`: CPython's cyclic garbage collector, tuned for the length of a compile.

Compiling allocates many small objects that live to its end (graph nodes, kernel IR trees,
lowerings kept for reuse). The default thresholds (a young collection every 700 net
allocations, a full one every 100 young ones) make the collector walk them again and again:
an LSTM training step's pipeline spent about a quarter of its 1.4 s there. Inside the block
the young threshold is 100 000 and older generations are collected less often; refcounting
still frees acyclic garbage at once, and the next collection after the block takes the rest.
The thresholds are process-wide: nested and concurrent blocks share one setting, restored when
the last of them ends."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_depth = 0
_saved: tuple[int, ...] = ()
RELAXED = (100_000, 50, 100)


@contextmanager
def fewer_collections() -> Iterator[None]:
    global _depth, _saved
    with _LOCK:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(*(max(a, b) for a, b in zip(_saved, RELAXED, strict=False)))
        _depth += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
