"""`autodiff`: reverse-mode differentiation as a graph-to-graph pass.

Contract: `autodiff(graph, loss, wrt)` returns a graph with the same inputs and parameters, every
output of the (decomposed) input graph unchanged, and one extra output `grad.<name>` per
differentiated source holding d(loss)/d(source), with the source's type. Composites are
decomposed first, so the gradient is built from primitives only.

How it works (the textbook's backprop, with gradients as graph nodes):
- Activity analysis picks the nodes that need a VJP: a value is *varying* if it depends through
  differentiable ops and float values on a differentiated source, *useful* if the loss depends on
  it. Only values that are both get a cotangent; nothing else is differentiated, so frozen
  parameters and inputs cost no backward node.
- A reverse walk over the body calls each primitive's VJP rule (declared beside the op in
  `ir/ops/<family>.py`) with the summed cotangents of its outputs. Rule-made nodes are named
  `grad.<node>.<op>`.
- Fan-out: a value read by several nodes receives one contribution per use; they are summed by
  explicit `add` nodes named `grad.<value>.sum`, visible in `graphc show` (the chapter's
  `dL/dh = dL/dh_j + dL/dh_k`).
- Broadcasting is undone inside the VJP rules (`unbroadcast`), which return cotangents of each
  operand's exact shape; the walk checks that.
- Nodes a VJP rule made that end up unused (say, the gradient w.r.t. a frozen operand of a `mul`)
  are removed: the result holds only nodes that serve some output.

Several losses can be combined with weights (`{"loss_a": 1.0, "loss_b": 0.5}`): the seed
cotangent of each is its weight, so the gradient is that of the weighted sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from graphc.ir.builder import Builder, Tensor
from graphc.ir.errors import GradientError, GraphError
from graphc.ir.graph import Graph, Node, Value
from graphc.ir.registry import get_op
from graphc.ir.types import FLOAT_DTYPES

from .base import Pass, PassContext
from .decompose import decompose
from .grad_joins import join_matmul_products, join_padded_slices

LossSpec = str | Mapping[str, float]
_Key = tuple[int, int]


def _key(v: Value) -> _Key:
    return (id(v.node), v.index)


def loss_weights(loss: LossSpec) -> dict[str, float]:
    """A loss spec as {output name: weight}; a bare name has weight 1."""
    if isinstance(loss, str):
        return {loss: 1.0}
    weights = {str(k): float(w) for k, w in dict(loss).items()}
    if not weights:
        raise GradientError("no loss given: the loss mapping is empty")
    return weights


def check_loss(graph: Graph, name: str) -> Value:
    """The output value `name`, which must be a float scalar."""
    if name not in graph.output_names:
        raise GradientError(f"loss {name!r} is not an output of graph {graph.name!r}; "
                            f"outputs are {graph.output_names}")
    v = graph.output(name)
    if v.shape != ():
        raise GradientError(f"loss {name!r} must be a scalar, but it is {v.type}; reduce it "
                            f"with sum or mean first")
    if v.dtype not in FLOAT_DTYPES:
        raise GradientError(f"loss {name!r} must be floating point, but it is {v.type}")
    return v


def default_wrt(graph: Graph) -> list[str]:
    """Every trainable parameter: float and not frozen."""
    return [v.node.attrs["name"] for v in graph.params
            if not v.node.attrs.get("frozen") and v.dtype in FLOAT_DTYPES]


def resolve_wrt(graph: Graph, wrt: Sequence[str] | None) -> list[Value]:
    """Source values to differentiate; GradientError for unknown, frozen or integer ones."""
    if isinstance(wrt, str):
        names = [wrt]
    elif wrt is None:
        names = default_wrt(graph)
    elif isinstance(wrt, Iterable) and all(isinstance(n, str) for n in wrt):
        names = list(wrt)
    else:
        raise GradientError(f"wrt={wrt!r}: give a name or a sequence of input and parameter "
                            f"names")
    sources = {v.node.attrs["name"]: v for v in graph.inputs + graph.params}
    out: list[Value] = []
    for name in names:
        v = sources.get(name)
        if v is None:
            raise GradientError(f"cannot differentiate w.r.t. {name!r}: graph {graph.name!r} has "
                                f"no such input or parameter (known: {sorted(sources)})")
        if v.node.attrs.get("frozen"):
            raise GradientError(f"parameter {name!r} is frozen; it gets no gradient (unfreeze "
                                f"it or leave it out of wrt)")
        if v.dtype not in FLOAT_DTYPES:
            raise GradientError(f"cannot differentiate w.r.t. {name!r} of type {v.type}: only "
                                f"floating-point values have gradients")
        if any(o is v for o in out):
            raise GradientError(f"{name!r} is listed twice in wrt")
        out.append(v)
    return out


# -- activity analysis -----------------------------------------------------------------------------


def varying_values(nodes: Sequence[Node], wrt: Sequence[Value]) -> set[_Key]:
    """Values that depend on a source in `wrt` through differentiable ops and float values."""
    vary = {_key(v) for v in wrt}
    for n in nodes:
        if not get_op(n.op).differentiable:
            continue
        if any(_key(v) in vary for v in n.inputs):
            vary.update(_key(o) for o in n.outputs if o.dtype in FLOAT_DTYPES)
    return vary


def useful_values(nodes: Sequence[Node], targets: Sequence[Value]) -> set[_Key]:
    """Values that some target depends on."""
    useful = {_key(v) for v in targets}
    for n in reversed(nodes):
        if any(_key(o) in useful for o in n.outputs):
            useful.update(_key(v) for v in n.inputs)
    return useful


# -- the reverse walk ------------------------------------------------------------------------------


def _value_label(v: Value) -> str:
    node = v.node
    base = node.attrs["name"] if node.op in ("input", "param") else (node.name or node.op)
    return base if len(node.outputs) == 1 else f"{base}#{v.index}"


class _Cotangents:
    """Per-value lists of cotangent contributions, summed on demand with named `add` nodes."""

    def __init__(self, b: Builder) -> None:
        self.b = b
        self.parts: dict[_Key, list[Tensor]] = {}

    def add(self, v: Value, ct: Tensor) -> None:
        self.parts.setdefault(_key(v), []).append(ct)

    def total(self, v: Value) -> Tensor | None:
        parts = self.parts.get(_key(v))
        if not parts:
            return None
        label = f"grad.{_value_label(v)}.sum"
        label_v = _value_label(v)
        parts = join_padded_slices(self.b, parts, f"grad.{label_v}.join")
        parts = join_matmul_products(self.b, parts, f"grad.{label_v}.joined")
        acc = parts[0]
        for p in parts[1:]:
            acc = self.b.op("add", acc, p, name=label)
        self.parts[_key(v)] = [acc]
        return acc


def _call_vjp(b: Builder, n: Node, cts: list[Tensor | None]) -> Sequence[Tensor | None]:
    opdef = get_op(n.op)
    if opdef.vjp is None:
        kind = "composite (decompose first)" if not opdef.primitive else "primitive"
        raise GradientError(f"node %{n.name} = {n.op}: {kind} op {n.op!r} has no VJP rule")
    ins = tuple(b.tensor(v) for v in n.inputs)
    outs = tuple(b.tensor(o) for o in n.outputs)
    with b.scope(f"grad.{n.name or n.op}"):
        try:
            grads = opdef.vjp(b, ins, outs, tuple(cts), dict(n.attrs))
        except GradientError:
            raise
        except GraphError as e:
            raise GradientError(f"VJP rule of node %{n.name} = {n.op} failed: {e}") from e
    grads = tuple(grads)
    if len(grads) != len(n.inputs):
        raise GradientError(f"VJP rule of {n.op} (node %{n.name}) returned {len(grads)} "
                            f"cotangents for {len(n.inputs)} operands")
    return grads


def backprop(b: Builder, nodes: Sequence[Node], seeds: Sequence[tuple[Value, Tensor]],
             wrt: Sequence[Value]) -> list[Tensor]:
    """Emit into `b` the gradient of sum(<seed ct, seed value>) w.r.t. each `wrt` source.

    `nodes` is a topological body already held by `b` (forward nodes); seed values are scalars or
    any values with a cotangent of their own type. Returns one Tensor per `wrt` entry (a zero
    constant where the seeds do not depend on it).
    """
    vary = varying_values(nodes, wrt)
    seeds = [(v, ct) for v, ct in seeds if _key(v) in vary]
    useful = useful_values(nodes, [v for v, _ in seeds])
    active = vary & useful
    cts = _Cotangents(b)
    for v, ct in seeds:
        cts.add(v, ct)
    for n in reversed(nodes):
        if not any(_key(o) in active for o in n.outputs):
            continue
        out_cts = [cts.total(o) for o in n.outputs]
        if all(c is None for c in out_cts):
            continue
        grads = _call_vjp(b, n, out_cts)
        for v, g in zip(n.inputs, grads, strict=True):
            if g is None or _key(v) not in active:
                continue
            if g.type != v.type:
                raise GradientError(f"VJP rule of {n.op} (node %{n.name}) returned a cotangent of "
                                    f"type {g.type} for operand %{v.name} of type {v.type}")
            cts.add(v, g)
    out = []
    for v in wrt:
        total = cts.total(v)
        out.append(total if total is not None else b.zeros(v.shape, v.dtype))
    return out


def seed_cotangent(b: Builder, v: Value, weight: float) -> Tensor:
    """The cotangent loss `v` starts with: its weight. Left unnamed on purpose: the builder shares
    it (CSE) with equal constants of VJP rules, such as the 1 in sigmoid's 1 - y."""
    return b.const(float(weight), dtype=v.dtype)


def prune_new_nodes(graph: Graph, keep: Sequence[Node]) -> Graph:
    """Drop body nodes that serve no output, except those in `keep` (the forward body)."""
    kept = {id(n) for n in keep} | {id(n) for n in graph.live_nodes()}
    body = [n for n in graph.nodes if id(n) in kept]
    return Graph(graph.name, graph.inputs, graph.params, body, graph.outputs, graph.param_values)


def autodiff(graph: Graph, loss: LossSpec, wrt: Sequence[str] | None = None) -> Graph:
    """Return `graph` (decomposed) with extra outputs `grad.<name>` = d loss / d name.

    `loss` names a scalar float output, or maps several to weights (the gradient is that of the
    weighted sum). `wrt` lists parameter or input names; the default is every parameter that is
    float and not frozen. Raises GradientError for a non-scalar/non-float loss, an unknown,
    integer or frozen `wrt` name.
    """
    graph.check_defined()
    g = decompose(graph)
    weights = loss_weights(loss)
    loss_values = [(check_loss(g, name), w) for name, w in weights.items()]
    sources = resolve_wrt(g, wrt)
    b = Builder.from_graph(g)
    b.copy_body(g)
    seeds = [(v, seed_cotangent(b, v, w)) for v, w in loss_values]
    grads = backprop(b, g.nodes, seeds, sources)
    outputs = dict(g.outputs)
    for v, gr in zip(sources, grads, strict=True):
        name = f"grad.{v.node.attrs['name']}"
        if name in outputs:
            raise GradientError(f"graph {g.name!r} already has an output named {name!r}")
        outputs[name] = gr.value
    built = b.build(outputs={k: b.tensor(v) for k, v in outputs.items()})
    return prune_new_nodes(built, g.nodes)


@dataclass
class AutodiffPass(Pass):
    """Append reverse-mode gradients of `loss` w.r.t. `wrt` (see module docstring).

    Options: `loss` (an output name or {name: weight}), `wrt` (names; None = every trainable
    parameter). Logs the number of forward and backward nodes.
    """

    name: ClassVar[str] = "autodiff"
    loss: LossSpec = "loss"
    wrt: tuple[str, ...] | None = None

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        out = autodiff(graph, self.loss, self.wrt)
        ctx.log.append({"pass": self.name, "nodes_before": len(graph.nodes),
                        "nodes_after": len(out.nodes)})
        return out
