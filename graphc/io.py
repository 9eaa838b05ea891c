"""Graphs on disk: `.gir` text with parameter values in a `.npz` beside it, and model files
(`.gir`, `.py` with a `build()` that returns a Graph, or `.onnx` with its symbolic dimensions
bound)."""

from __future__ import annotations

import importlib.util
import traceback
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from graphc.ir.errors import GraphError
from graphc.ir.graph import Graph
from graphc.ir.text import parse_graph, print_graph


def params_path(path: Path) -> Path:
    return path.with_suffix(".npz")


def save_graph(graph: Graph, path: str | Path) -> None:
    """Write `path` (.gir text) and, if the graph has parameter values, `path` with .npz."""
    path = Path(path)
    path.write_text(print_graph(graph))
    if graph.param_values:
        np.savez(params_path(path), **graph.param_values)


@contextmanager
def _user_code(path: Path):
    """Errors raised by a model file's own code become one GraphError naming the file and the
    line in it where they arose (GraphErrors from graphc's builder pass through as they are:
    they name the node at fault)."""
    try:
        yield
    except GraphError:
        raise
    except Exception as e:
        line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
        for frame in traceback.extract_tb(e.__traceback__):
            if Path(frame.filename).resolve() == path.resolve():
                line = frame.lineno
        where = f"{str(path)!r}" + (f", line {line}" if line else "")
        raise GraphError(f"model file {where}: {type(e).__name__}: {e}") from e


def _import_model(path: Path):
    spec = importlib.util.spec_from_file_location(f"graphc_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise GraphError(f"cannot import model file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    with _user_code(path):
        spec.loader.exec_module(module)
    return module


def load_example_inputs(path: str | Path) -> dict[str, np.ndarray] | None:
    """Inputs from a `.py` model's `example_inputs()`, if it defines one; else None."""
    path = Path(path)
    if path.suffix != ".py":
        return None
    fn = getattr(_import_model(path), "example_inputs", None)
    if fn is None:
        return None
    with _user_code(path):
        return dict(fn())


def parse_bindings(dims: Sequence[str] | None, shapes: Sequence[str] | None
                   ) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """The command line's `--dim NAME=N` and `--shape INPUT=AxBxC` (or A,B,C; nothing after
    the `=` for a scalar) as `from_onnx`'s `dims` and `shapes`."""
    def one(spec: str, flag: str, form: str) -> tuple[str, tuple[int, ...]]:
        name, eq, value = spec.partition("=")
        parts = [p.strip() for p in value.replace(",", "x").split("x")] if value.strip() else []
        if not eq or not name.strip() or not all(p.isdigit() for p in parts) \
                or (flag == "--dim" and len(parts) != 1):
            raise GraphError(f"{flag} {spec!r}: expected {form}")
        return name.strip(), tuple(int(p) for p in parts)

    bound = {n: v[0] for n, v in (one(s, "--dim", "NAME=N") for s in dims or ())}
    return bound, dict(one(s, "--shape", "INPUT=AxBxC") for s in shapes or ())


def load_bound(path: str | Path, dims: Mapping[str, int] | None = None,
               shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """`load_graph`, binding the symbolic dimensions of an `.onnx` model (`from_onnx`'s `dims`
    and `shapes`); bindings for any other kind of model file are an error."""
    if not dims and not shapes:
        return load_graph(path)
    if Path(path).suffix != ".onnx":
        raise GraphError(f"--dim and --shape bind symbolic dimensions of .onnx models; "
                         f"{str(path)!r} is not one")
    return load_graph(path, dims=dict(dims or {}), shapes=dict(shapes or {}))


def load_graph(path: str | Path, **build_kwargs) -> Graph:
    """Load a model: a `.gir` file (plus its `.npz`), a `.py` file defining `build()`, or an
    `.onnx` file (`build_kwargs` then go to `from_onnx`: `dims=` and `shapes=` for symbolic
    dimensions)."""
    path = Path(path)
    if not path.exists():
        raise GraphError(f"model file {str(path)!r} does not exist")
    if path.suffix == ".py":
        module = _import_model(path)
        build = getattr(module, "build", None)
        if build is None:
            raise GraphError(f"model file {str(path)!r} defines no build() function")
        with _user_code(path):
            graph = build(**build_kwargs)
        if not isinstance(graph, Graph):
            raise GraphError(f"{str(path)!r}: build() returned {type(graph).__name__}, "
                             "not a Graph")
        return graph
    if path.suffix == ".onnx":
        from .onnx_import import from_onnx

        return from_onnx(path, **build_kwargs)
    if path.suffix != ".gir":
        hint = (" (it is a compiled package: `graphc run` runs it, the other commands need the "
                "model it was compiled from)" if (path / "manifest.json").is_file() else "")
        raise GraphError(f"model file {str(path)!r}: expected a .gir, .py or .onnx file{hint}")
    graph = parse_graph(path.read_text(), source=str(path))
    npz = params_path(path)
    if npz.exists():
        with np.load(npz, allow_pickle=False) as data:
            graph = graph.with_param_values({k: data[k] for k in data.files})
    return graph
