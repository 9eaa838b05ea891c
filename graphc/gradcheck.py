"""Gradient checking: autodiff against central finite differences in float64.

`gradcheck(graph, loss)` casts the graph to float64 (`to_float64`), differentiates it with the
autodiff pass, and compares every differentiated parameter's gradient with

    (L(w + eps e_k) - L(w - eps e_k)) / (2 eps)

at up to `max_coords` coordinates k per parameter (all of them for small tensors, a seeded random
sample for big ones). It returns a `GradcheckReport` (one row per parameter: coordinates checked,
max absolute and relative error, ok) and raises `GradcheckFailure` (a GradientError) naming the
parameters above tolerance. `graphc gradcheck MODEL` prints the table and exits with status 1 on
failure.

A coordinate passes when |autodiff - numeric| <= atol + rtol |numeric| + 1e-15 |L| / eps: the
last term is what central differences lose to cancellation in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder, Tensor
from graphc.ir.errors import GradientError
from graphc.ir.graph import Graph, Value
from graphc.ir.types import DTYPES, FLOAT_DTYPES
from graphc.passes.autodiff import LossSpec, autodiff, default_wrt, loss_weights
from graphc.passes.decompose import decompose


class GradcheckFailure(GradientError):
    """Autodiff and finite differences disagree beyond tolerance; `report` has the table."""

    def __init__(self, message: str, report: GradcheckReport) -> None:
        super().__init__(message)
        self.report = report


# -- float64 copies ------------------------------------------------------------------------------


def _f64(dtype: str) -> str:
    return "f64" if dtype in FLOAT_DTYPES else dtype


def to_float64(graph: Graph) -> Graph:
    """`graph` rebuilt in float64: float inputs, parameters, constants and casts become f64.

    Parameter values are converted; an op whose float result has a fixed dtype of its own (such
    as `random_uniform`, always f32) is followed by a cast to f64.
    """
    b = Builder(graph.name)
    vmap: dict[tuple[int, int], Tensor] = {}
    for v in graph.inputs:
        vmap[(id(v.node), 0)] = b.input(v.node.attrs["name"], v.shape, _f64(v.dtype))
    for v in graph.params:
        name = v.node.attrs["name"]
        if name not in graph.param_values:
            raise GradientError(f"parameter {name!r} of graph {graph.name!r} has no value")
        value = np.asarray(graph.param_values[name])
        dt = _f64(v.dtype)
        vmap[(id(v.node), 0)] = b.param(name, v.shape, init=value.astype(DTYPES[dt]), dtype=dt,
                                        frozen=bool(v.node.attrs.get("frozen")))
    for n in graph.nodes:
        attrs = dict(n.attrs)
        if isinstance(attrs.get("dtype"), str) and attrs["dtype"] in FLOAT_DTYPES:
            attrs["dtype"] = "f64"
        result = b.op(n.op, *(vmap[(id(v.node), v.index)] for v in n.inputs), name=n.name,
                      **attrs)
        outs = result if isinstance(result, tuple) else (result,)
        for old, new in zip(n.outputs, outs, strict=True):
            if new.dtype in FLOAT_DTYPES and new.dtype != "f64":
                new = b.cast(new, dtype="f64")
            vmap[(id(n), old.index)] = new
    return b.build(outputs={k: vmap[(id(v.node), v.index)] for k, v in graph.outputs})


def sample_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for a check: standard normal floats, zero integers (valid indices and labels),
    random booleans."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        name = v.node.attrs["name"]
        if v.dtype in FLOAT_DTYPES:
            out[name] = rng.standard_normal(v.shape)
        elif v.dtype == "bool":
            out[name] = rng.random(v.shape) < 0.5
        else:
            out[name] = np.zeros(v.shape, DTYPES[v.dtype])
    return out


# -- the check -----------------------------------------------------------------------------------


@dataclass
class ParamCheck:
    """One row of the report."""

    name: str
    shape: tuple[int, ...]
    checked: int
    max_abs_err: float
    max_rel_err: float
    ok: bool


@dataclass
class GradcheckReport:
    """Per-parameter comparison of autodiff with finite differences."""

    loss: str
    rows: list[ParamCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def failures(self) -> list[ParamCheck]:
        return [r for r in self.rows if not r.ok]

    def table(self) -> str:
        """The report as an aligned text table."""
        head = ("param", "shape", "checked", "max abs err", "max rel err", "ok")
        lines = [(r.name, str(r.shape), str(r.checked), f"{r.max_abs_err:.3e}",
                  f"{r.max_rel_err:.3e}", "ok" if r.ok else "FAIL") for r in self.rows]
        widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join(fmt.format(*row).rstrip() for row in [head, *lines]) + "\n"


def _coords(size: int, max_coords: int, rng: np.random.Generator) -> np.ndarray:
    if size <= max_coords:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_coords, replace=False))


def _objective(graph: Graph, weights: Mapping[str, float]):
    """L(inputs, params) = sum of weighted losses, evaluating only what the losses need."""
    losses = graph.with_outputs([(k, graph.output(k)) for k in weights])

    def f(feed: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]) -> float:
        out = run_graph(losses, feed, params)
        return float(sum(w * float(out[k]) for k, w in weights.items()))
    return f


def _check_one(source: Value, analytic: np.ndarray, f, feed: dict[str, np.ndarray],
               params: dict[str, np.ndarray], coords: np.ndarray, eps: float, rtol: float,
               atol: float, f0: float) -> ParamCheck:
    name = source.node.attrs["name"]
    table = feed if source.node.op == "input" else params
    base = np.array(table[name], dtype=np.float64)
    max_abs = max_rel = 0.0
    ok = True
    for k in coords:
        values = []
        for sign in (1.0, -1.0):
            bumped = base.copy()
            bumped.reshape(-1)[k] += sign * eps
            table[name] = bumped
            values.append(f(feed, params))
        table[name] = base
        numeric = (values[0] - values[1]) / (2 * eps)
        got = float(analytic.reshape(-1)[k])
        err = abs(got - numeric)
        max_abs = max(max_abs, err)
        max_rel = max(max_rel, err / max(abs(got), abs(numeric), 1e-12))
        if err > atol + rtol * abs(numeric) + 1e-15 * abs(f0) / eps:
            ok = False
    return ParamCheck(name, source.shape, len(coords), max_abs, max_rel, ok)


def gradcheck(graph: Graph, loss: LossSpec, wrt: Sequence[str] | None = None, *,
              inputs: Mapping[str, np.ndarray] | None = None, eps: float = 1e-6,
              rtol: float = 1e-5, atol: float = 1e-7, max_coords: int = 16, seed: int = 0,
              raise_on_failure: bool = True, verbose: bool = False) -> GradcheckReport:
    """Compare autodiff with float64 central differences for each parameter in `wrt`.

    `wrt` defaults to every trainable parameter; `inputs` to `sample_inputs(graph, seed)`.
    `verbose` prints the per-parameter table. Raises GradcheckFailure (a GradientError) if any
    parameter is above tolerance, unless `raise_on_failure` is False.
    """
    weights = loss_weights(loss)
    g64 = decompose(to_float64(graph))
    names = default_wrt(g64) if wrt is None else [wrt] if isinstance(wrt, str) else list(wrt)
    grads = autodiff(g64, weights, names)
    feed = {k: (np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
            for k, v in (inputs if inputs is not None else sample_inputs(graph, seed)).items()}
    analytic = run_graph(grads.with_outputs([(f"grad.{n}", grads.output(f"grad.{n}"))
                                             for n in names]), feed)
    f = _objective(g64, weights)
    params = {k: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else v
              for k, v in g64.param_values.items()}
    f0 = f(feed, params)
    rng = np.random.default_rng(seed)
    report = GradcheckReport(", ".join(weights))
    sources = {v.node.attrs["name"]: v for v in g64.inputs + g64.params}
    for name in names:
        coords = _coords(sources[name].type.size, max_coords, rng)
        report.rows.append(_check_one(sources[name], analytic[f"grad.{name}"], f, feed, params,
                                      coords, eps, rtol, atol, f0))
    if verbose:
        print(report.table(), end="")
    if raise_on_failure and not report.ok:
        bad = ", ".join(r.name for r in report.failures())
        raise GradcheckFailure(
            f"gradient check of loss {report.loss!r} failed for {bad} (autodiff vs float64 "
            f"central differences, eps={eps}, rtol={rtol}, atol={atol}):\n{report.table()}",
            report)
    return report


__all__ = ["GradcheckFailure", "GradcheckReport", "ParamCheck", "gradcheck", "sample_inputs",
           "to_float64"]
