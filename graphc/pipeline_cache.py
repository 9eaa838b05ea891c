"""On-disk cache of the pass pipeline: (graph, pipeline options) -> planned Schedule.

Note: what is cached and why
----------------------------
The backends cache machine code by a hash of the schedule (`graphc.backends.llvm.cache`), but
a schedule only exists after decomposition, simplification, fusion and memory planning have
run: 1.5 s for an LSTM training step unrolled over 128 steps (3,289 nodes), most of a compile
whose machine code is already cached. This cache maps the graph itself to the pipeline's
result, so that a compile of a graph seen before skips the passes as well.

The key is a sha256 over the graph's text (`ir.text.print_graph`: every node, attribute and
constant value, lossless), the pipeline's options, the numpy version and the source of every
module the passes can run (`graphc/`, `ir/`): editing a pass never returns a stale schedule.
Parameter *values* are not in the key and not in the entry: the schedule of a hit takes the
values of the graph being compiled.

An entry is one pickle under `<cache dir>/pipeline/<key[:2]>/<key>.pkl` holding the schedule,
the graph after the graph passes (as text, parsed only when someone asks for it) and the pass
log, written to a temporary name and renamed into place (atomic on POSIX: two processes
compiling the same graph both succeed). An entry that cannot be read is a miss and is
rewritten. `GRAPHC_PIPELINE_CACHE=0` turns this cache off (the test suite does: its tests
patch passes at run time, which no key sees). Unpickling runs code named by the file, as
loading the cached shared libraries beside it does: the cache directory must be as trusted as
the code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from graphc.backends.cache_root import atomic_write, cache_dir
from graphc.ir.graph import Graph
from graphc.ir.kernel import Schedule
from graphc.ir.text import print_graph

SWITCH_ENV = "GRAPHC_PIPELINE_CACHE"  # "0" turns this cache off (the machine-code cache stays)
ENTRY_VERSION = 1
_SOURCES = ("graphc", "ir")  # what the passes can run (the backends are not part of it)


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "1").strip() not in ("0", "off", "false", "no")


@cache
def source_fingerprint() -> str:
    """sha256 of the pipeline's sources and the numpy version (constant folding runs numpy)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(np.__version__.encode())
    for pkg in _SOURCES:
        base = root if pkg == "graphc" else (root / pkg)
        if not base.is_dir():  # the source tree maps `ir` beside `graphc`, not inside it
            base = root.parent / pkg
        for p in sorted(base.rglob("*.py")):
            h.update(str(p.relative_to(base)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def pipeline_key(graph: Graph, options: dict[str, Any]) -> str:
    h = hashlib.sha256(f"v{ENTRY_VERSION}".encode())
    h.update(source_fingerprint().encode())
    h.update(repr(sorted(options.items())).encode())
    h.update(print_graph(graph).encode())
    return h.hexdigest()


@dataclass
class CachedPipeline:
    schedule: Schedule
    graph_text: str
    log: list[dict[str, Any]]


class PipelineCache:
    """Pipeline results by key, written atomically (module note)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = cache_dir(root) / "pipeline"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pkl"

    def lookup(self, key: str, param_values: dict[str, np.ndarray]) -> CachedPipeline | None:
        """The entry for `key` with `param_values` put into its schedule, else None."""
        try:
            with open(self.path(key), "rb") as f:
                entry = pickle.load(f)
            if entry.get("version") != ENTRY_VERSION or entry.get("key") != key:
                return None
            names = entry["param_names"]
            if not set(names) <= set(param_values):
                return None
            values = {k: param_values[k] for k in names}
            return CachedPipeline(replace(entry["schedule"], param_values=values),
                                  entry["graph_text"], entry["log"])
        except Exception:  # noqa: BLE001 - missing, truncated or foreign: a miss
            return None

    def store(self, key: str, schedule: Schedule, graph: Graph, log: list[dict[str, Any]]
              ) -> None:
        entry = {"version": ENTRY_VERSION, "key": key, "graph_text": print_graph(graph),
                 "schedule": replace(schedule, param_values={}), "log": log,
                 "param_names": sorted(schedule.param_values)}
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))
