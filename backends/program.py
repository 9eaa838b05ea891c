"""What every backend hands back: a `Program` that runs a Schedule, and the argument checks
that run before any compiled code is entered.

A backend builds a Program from a `Schedule` (kernel IR + memory plan). `Program.run` takes
every input and parameter buffer by name (numpy arrays; `check_arrays` has already accepted
them) and returns every graph output by output name. `graphc.compile` wraps a Program in an
`Executable`, which owns parameter values and the user-facing signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from graphc.ir.errors import InputError
from graphc.ir.kernel import Schedule
from graphc.ir.types import DTYPES, TensorType


@dataclass(frozen=True)
class Signature:
    """What a compiled program takes and returns: (name, type) per input, parameter, output."""

    name: str
    inputs: tuple[tuple[str, TensorType], ...]
    params: tuple[tuple[str, TensorType], ...]
    outputs: tuple[tuple[str, TensorType], ...]

    @staticmethod
    def of(schedule: Schedule) -> Signature:
        bt = {n: b.type for n, b in schedule.buffers.items()}
        return Signature(schedule.name, tuple((n, bt[n]) for n in schedule.inputs),
                         tuple((n, bt[n]) for n in schedule.params),
                         tuple((n, bt[buf]) for n, buf in schedule.outputs))

    def to_json(self) -> dict[str, Any]:
        def rows(items):
            return [{"name": n, "shape": list(t.shape), "dtype": t.dtype} for n, t in items]
        return {"name": self.name, "inputs": rows(self.inputs), "params": rows(self.params),
                "outputs": rows(self.outputs)}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Signature:
        def items(rows):
            return tuple((r["name"], TensorType(tuple(r["shape"]), r["dtype"])) for r in rows)
        return Signature(d["name"], items(d["inputs"]), items(d["params"]), items(d["outputs"]))


class Program(Protocol):
    """A compiled schedule. `target` names the backend ("reference", "llvm", "triton")."""

    target: str
    signature: Signature

    def run(self, arrays: Mapping[str, np.ndarray], *, frozen_params: bool = False
            ) -> dict[str, np.ndarray]:
        """Run once: `arrays` holds every input and param buffer by name. `frozen_params`:
        the parameter arrays are the caller's read-only copies (same object, same values), so
        anything derived from them on an earlier call may be reused."""
        ...

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the compiled code into `folder`; return manifest entries describing it."""
        ...


_MISSING = object()


def _no_extra(sig: Signature, inputs: Mapping[str, Any]) -> None:
    names = [n for n, _ in sig.inputs]
    extra = set(inputs) - set(names)
    if extra:
        raise InputError(f"{sig.name!r} has no input(s) {sorted(extra)}; inputs are {names}")


def check_array(name: str, arr: Any, shape: tuple[int, ...], dtype: str, what: str = "input"
                ) -> np.ndarray:
    """Return `arr` if it is a C-contiguous ndarray of `shape` and `dtype`; else InputError."""
    if not isinstance(arr, np.ndarray):
        if np.isscalar(arr) and shape == ():
            arr = np.asarray(arr, DTYPES[dtype])
        else:
            raise InputError(f"{what} {name!r}: expected a numpy array {dtype}{list(shape)}, got "
                             f"{type(arr).__name__}")
    if arr.shape != shape:
        raise InputError(f"{what} {name!r}: expected shape {shape} ({dtype}), got {arr.shape}")
    if arr.dtype != DTYPES[dtype]:
        raise InputError(f"{what} {name!r}: expected dtype {dtype} ({DTYPES[dtype]}), got "
                         f"{arr.dtype}")
    flags = arr.flags
    if not flags.c_contiguous:
        raise InputError(f"{what} {name!r}: array is not C-contiguous (strides {arr.strides}); "
                         f"pass np.ascontiguousarray(...)")
    if not flags.aligned:
        raise InputError(f"{what} {name!r}: array data is not aligned")
    return arr


def check_arrays(sig: Signature, inputs: Mapping[str, Any],
                 params: Mapping[str, np.ndarray], checked_params: bool = False
                 ) -> dict[str, np.ndarray]:
    """Every input and parameter of `sig`, checked; InputError names the culprit.
    `checked_params`: `params` holds exactly the signature's parameters, each already checked
    and read-only (an Executable's own store): they are taken as they are."""
    out: dict[str, np.ndarray] = {}
    for name, t in sig.inputs:
        arr = inputs.get(name, _MISSING)
        if arr is _MISSING:
            _no_extra(sig, inputs)  # a misspelt name is reported as such
            raise InputError(f"{sig.name!r}: missing input {name!r} ({t})")
        out[name] = check_array(name, arr, t.shape, t.dtype)
    if len(inputs) != len(out):  # every expected name is there: the rest are extra
        _no_extra(sig, inputs)
    if checked_params:
        out.update(params)
        return out
    for name, t in sig.params:
        if name not in params:
            raise InputError(f"{sig.name!r}: no value for parameter {name!r}")
        out[name] = check_array(name, params[name], t.shape, t.dtype, "parameter")
    return out
