"""Running compiled LLVM code: the argument layout and the `NativeProgram` behind an Executable.

This module imports only ctypes, numpy and graphc's light modules, never llvmlite: the same
class runs a schedule JIT-compiled in this process, a shared library from the compile cache, or
one from an AOT package (`aot_loader.load_program`).

Note: the C entry point
-----------------------
Every compiled schedule exports one function (`Layout.entry`, "graphc_main"):

    void graphc_main(void **args, uint8_t *arena, int64_t *status, int32_t nthreads)

`args` holds one data pointer per slot of `Layout.args`: the graph inputs, then the parameters,
then the outputs (signature order), each a dense C-order array the caller owns (outputs are
written, never read before). `arena` holds every temp at the offsets of the memory plan
(`arena_bytes`, 64-byte aligned); it is allocated once per program and reused by every call.
`status` is four int64s. The first three are zeroed by the caller: a kernel that meets bad data
(an index out of range) stores its error code (1-based into `Layout.errors`), the offending
value and its flat position, writes nothing out of bounds, and the call returns early and
raises a GraphError. The fourth is the parameters' epoch (`NativeProgram.run`): kernels keep
what they derive from parameters (prepacked GEMM weights) in the arena while it holds.
`nthreads` bounds the threads of every parallel loop (1: no libgomp call at all). One graph run
is exactly one call.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphc.backends.program import Signature
from graphc.ir.errors import GraphError
from graphc.ir.types import DTYPES

ENTRY = "graphc_main"
PROFILE_SYMBOL = "graphc_profile"  # per-kernel tick counters, with `profile` (codegen's note)
TICKS_SYMBOL = "graphc_ticks"
ABI_VERSION = 1
ARENA_ALIGNMENT = 64
PAGE = 4096
# Outputs and inputs from this size on are placed apart within their pages (`page_offset_apart`).
ALIAS_MIN_BYTES = 1 << 16
THREADS_ENV = "GRAPHC_NUM_THREADS"

ENTRY_ARGTYPES = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)


@dataclass(frozen=True)
class ArgSlot:
    """One pointer of the entry point's `args` array."""

    name: str
    role: str  # input | param | output
    shape: tuple[int, ...]
    dtype: str


def _nbytes(a: ArgSlot) -> int:
    return int(np.prod(a.shape, dtype=np.int64)) * DTYPES[a.dtype].itemsize


@dataclass(frozen=True)
class Layout:
    """The calling convention of one compiled schedule (JSON in packages and the cache)."""

    args: tuple[ArgSlot, ...]
    arena_bytes: int
    errors: tuple[dict[str, Any], ...] = ()
    kernels: tuple[dict[str, Any], ...] = ()
    entry: str = ENTRY
    abi: int = ABI_VERSION
    profiled: bool = False  # compiled with per-kernel tick counters (`codegen`'s note)

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry, "abi": self.abi, "arena_bytes": self.arena_bytes,
                "profiled": self.profiled,
                "args": [{"name": a.name, "role": a.role, "shape": list(a.shape),
                          "dtype": a.dtype} for a in self.args],
                "errors": list(self.errors), "kernels": list(self.kernels),
                "c_signature": "void graphc_main(void **args, uint8_t *arena, "
                               "int64_t *status, int32_t nthreads)"}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Layout:
        if d.get("abi") != ABI_VERSION:
            raise GraphError(f"compiled code uses calling convention {d.get('abi')}; this "
                             f"graphc runs version {ABI_VERSION}")
        args = tuple(ArgSlot(a["name"], a["role"], tuple(a["shape"]), a["dtype"])
                     for a in d["args"])
        return Layout(args, int(d["arena_bytes"]), tuple(d.get("errors", ())),
                      tuple(d.get("kernels", ())), d.get("entry", ENTRY), d["abi"],
                      bool(d.get("profiled", False)))


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype, page_offset: int | None = None
                  ) -> np.ndarray:
    """An uninitialized C-order array whose data starts on a 64-byte boundary (full vector
    stores, streaming stores need it; numpy's own allocations are 16-byte aligned), or, given
    `page_offset` (a multiple of 64), at that offset within a 4 KiB page."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if page_offset is None:
        raw = np.empty(nbytes + ARENA_ALIGNMENT, np.uint8)
        off = (-raw.ctypes.data) % ARENA_ALIGNMENT
    else:
        raw = np.empty(nbytes + PAGE, np.uint8)
        off = (page_offset - raw.ctypes.data) % PAGE
    return raw[off:off + nbytes].view(dtype).reshape(shape)


def page_offset_apart(addresses: list[int]) -> int:
    """The 64-byte aligned offset within a 4 KiB page farthest (circularly) from the page
    offsets of `addresses`: where an output streamed beside those inputs goes.

    Why: a load whose address matches, in its low 12 bits, part of an earlier store still in
    flight is held back as if it depended on it (4 KiB aliasing). A kernel storing vector j of
    its output and then loading vector j + 1 of an input trips over it on every vector when
    the two arrays sit about one vector apart within their pages: numpy's large arrays start
    16 bytes into a page, and an output 64 bytes into one ran relu(x*w + b)·sigmoid(x) +
    tanh(x)·0.5 over 16M floats (one thread) in 22 ms instead of 13-14 ms at any other
    distance. Half a page away (as far as the other streams allow), no load comes near a
    store in flight."""
    if not addresses:
        return 0
    offsets = [a % PAGE for a in addresses]

    def nearest(c: int) -> int:
        return min(min((c - o) % PAGE, (o - c) % PAGE) for o in offsets)

    return max(range(0, PAGE, ARENA_ALIGNMENT), key=lambda c: (nearest(c), -c))


HUGE_PAGE = 2 << 20
HUGE_ARENA_MIN = 1 << 20  # arenas from this size on ask for 2 MiB pages


def arena_buffer(nbytes: int) -> np.ndarray:
    """Zeroed bytes for the arena, 64-byte aligned. From `HUGE_ARENA_MIN` on, a private
    mapping advised into 2 MiB pages (transparent huge pages; where the kernel gives none, it
    is ordinary memory): an arena holds the prepacked weights and GEMM workspaces that every
    call reads again, and on 4 KiB pages (numpy asks for huge pages only from 4 MiB on) each
    call after another library's work missed the TLB on hundreds of them (MLP inference
    784-256-256-10 against ONNX Runtime, five calls each in turn: 0.96-0.97x -> 0.98x)."""
    if nbytes < HUGE_ARENA_MIN or not hasattr(mmap, "MADV_HUGEPAGE"):
        raw = np.zeros(nbytes + ARENA_ALIGNMENT, np.uint8)
        off = (-raw.ctypes.data) % ARENA_ALIGNMENT
        return raw[off:off + nbytes]
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    # MAP_PRIVATE: Python's default anonymous mapping is shared memory, which the kernel's
    # anonymous huge-page setting does not cover.
    region = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(region, np.uint8)  # keeps the mapping alive
    off = (-raw.ctypes.data) % HUGE_PAGE
    region.madvise(mmap.MADV_HUGEPAGE, off, size)
    return raw[off:off + nbytes]


def resolve_threads(threads: int | None = None) -> int:
    """The thread count: `threads` if given, else $GRAPHC_NUM_THREADS, else every core."""
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise GraphError(f"{THREADS_ENV}={env!r} is not an integer") from None
        else:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else (os.cpu_count() or 1)
    if threads < 1:
        raise GraphError(f"thread count must be at least 1, got {threads}")
    return int(threads)


# Arrays kept per output: a caller that holds each call's result until the next call returns
# (`y = exe(x)` in a loop) gets the two arrays in turn, instead of a fresh one every call whose
# first touch costs a page fault per page (16M floats: about 9 ms on top of a 14 ms call).
OUTPUT_POOL = 2


def _references(entry: tuple[np.ndarray, int]) -> tuple[int, int]:
    """Reference counts of a pool entry's array and of its memory's owner (`aligned_empty`
    returns a view; every view a caller takes of the array, y[:5], links to that owner too,
    not to the array)."""
    out = entry[0]
    base = out.base
    return sys.getrefcount(out), 0 if base is None else sys.getrefcount(base)


# The counts of an entry that only its pool holds, measured rather than assumed (what
# getrefcount includes differs between Python versions).
_UNHELD = _references((aligned_empty((1,), np.dtype(np.float32)), 0))


def _unheld(pool: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, int] | None:
    """An (array, data address) of `pool` whose array nobody else holds any more, so that
    this call may write it again."""
    for entry in pool:
        own, base = _references(entry)
        if own <= _UNHELD[0] and base <= _UNHELD[1]:
            return entry
    return None


@dataclass
class NativeProgram:
    """A compiled schedule behind one C entry point (the `Program` protocol of the backends).

    `run` fills the pointer array, allocates the outputs and makes one call; the arena is
    allocated once. Calls are serialized by a lock (the arena is shared state).
    """

    signature: Signature
    layout: Layout
    function: Callable[..., None]
    threads: int
    keepalive: Any = None                       # the JIT module or library owning the code
    saver: Callable[[Path], dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    target: str = "llvm"

    def __post_init__(self) -> None:
        n = len(self.layout.args)
        self._ptrs = (ctypes.c_void_p * max(n, 1))()
        self._arena = arena_buffer(self.layout.arena_bytes)
        self._arena_ptr = self._arena.ctypes.data
        # [error code, value, position, parameter epoch]
        self._status = (ctypes.c_int64 * 4)()  # element access costs a third of numpy's
        self._epoch = 1
        self._status_ptr = ctypes.addressof(self._status)
        self._lock = threading.Lock()
        self._inputs = [(k, a.name, a.role == "param") for k, a in enumerate(self.layout.args)
                        if a.role != "output"]
        self._outputs = [(k, a.name, a.shape, DTYPES[a.dtype], _nbytes(a) >= ALIAS_MIN_BYTES)
                         for k, a in enumerate(self.layout.args) if a.role == "output"]
        self._large_inputs = [k for k, a in enumerate(self.layout.args)
                              if a.role != "output" and _nbytes(a) >= ALIAS_MIN_BYTES]
        self._bound: dict[int, Any] = {}
        self.runs = 0
        self._ticks_per_second: float | None = None
        if self.layout.profiled:
            n = len(self.layout.kernels) + 1
            addr = self.keepalive.global_address(PROFILE_SYMBOL)
            self._counters = np.ctypeslib.as_array((ctypes.c_int64 * n).from_address(addr))
            self._clock = self.keepalive.function(TICKS_SYMBOL, ctypes.c_int64)
        # output slot -> its last arrays, with their data addresses
        self._recycle: dict[int, list[tuple[np.ndarray, int]]] = {}

    def run(self, arrays: Mapping[str, np.ndarray], *, frozen_params: bool = False
            ) -> dict[str, np.ndarray]:
        """One call into the compiled code; `arrays` were checked by `check_arrays`.

        `frozen_params`: every parameter array is read-only and owned by the caller's
        parameter store, so the same object means the same values. Then what the code derived
        from parameters on an earlier call (prepacked weights) stays valid until a parameter is
        rebound: the epoch in status slot 3 changes only then. Otherwise the call gets an epoch
        of its own: the code derives everything again, once, and the call sites that share a
        derived copy (the steps of an unrolled LSTM) share it within this call (a training
        loop passing each step's parameters, LSTM step: 55.4 -> 49.6 ms, one thread)."""
        ptrs = self._ptrs
        outs: dict[str, np.ndarray] = {}
        with self._lock:
            bound = self._bound
            for k, name, param in self._inputs:
                arr = arrays[name]
                if bound.get(k) is not arr:  # parameters are usually the same objects
                    ptrs[k] = arr.__array_interface__["data"][0]
                    bound[k] = arr
                    self._epoch += param
            for k, name, shape, dt, large in self._outputs:
                pool = self._recycle.setdefault(k, [])
                entry = _unheld(pool)
                if entry is None:
                    offset = page_offset_apart(self._large_streams(k)) if large \
                        else None
                    fresh = aligned_empty(shape, dt, offset)
                    entry = (fresh, fresh.__array_interface__["data"][0])
                    pool.append(entry)
                    if len(pool) > OUTPUT_POOL:
                        del pool[0]  # the caller still holds it; it is theirs now
                outs[name], ptrs[k] = entry
            if not frozen_params:
                self._epoch += 1
            self._status[0] = 0
            self._status[3] = self._epoch
            self.function(ptrs, self._arena_ptr, self._status_ptr, self.threads)
            self.runs += 1
            if self._status[0]:
                self._raise(*(int(v) for v in self._status[:3]))
        return outs

    def _large_streams(self, slot: int) -> list[int]:
        """Data addresses of this call's large inputs (bound in the pointer table already) and
        of the other large outputs (as allocated so far): what a new output for `slot` is
        placed apart from."""
        others = [address for (k, *_, large) in self._outputs
                  if large and k != slot for _, address in self._recycle.get(k, ())]
        return [self._ptrs[k] for k in self._large_inputs] + others

    @property
    def profiled(self) -> bool:
        return self.layout.profiled

    def profile_data(self, reset: bool = False) -> dict[str, Any]:
        """Seconds spent in each kernel (layout order) and in whole calls since the last reset,
        over `runs` calls; only for code compiled with `profile` (`profiled`)."""
        if self._ticks_per_second is None:
            # the time stamp counter ticks at a constant rate: calibrate it against the clock
            t0, c0 = time.perf_counter(), self._clock()
            time.sleep(0.02)
            self._ticks_per_second = (self._clock() - c0) / (time.perf_counter() - t0)
        with self._lock:
            seconds = self._counters.astype(np.float64) / self._ticks_per_second
            runs = self.runs
            if reset:
                self._counters[:] = 0
                self.runs = 0
        return {"kernels": list(self.layout.kernels), "seconds": seconds[:-1].tolist(),
                "total_seconds": float(seconds[-1]), "runs": runs}

    def _raise(self, code: int, value: int, position: int) -> None:
        errors = self.layout.errors
        if not 0 < code <= len(errors):
            raise GraphError(f"compiled code of {self.signature.name!r} failed (error {code})")
        err = errors[code - 1]
        shape = tuple(err.get("index_shape", ()))
        pos = tuple(int(i) for i in np.unravel_index(position, shape)) if shape else ()
        raise GraphError(err["message"].replace("{value}", str(value))
                         .replace("{position}", str(pos)))

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the shared library into `folder`; return the manifest's target entries."""
        if self.saver is None:
            raise GraphError("this LLVM program cannot be saved (it was loaded from a package)")
        return self.saver(Path(folder))
