"""Training-step graphs and a small driver that runs them.

`train_step(graph, loss, optimizer)` turns a forward graph into ONE graph that performs a whole
optimization step: forward pass, reverse-mode gradients (`graphc.passes.autodiff`) and optimizer
updates (`graphc.optim`). Its signature:

- inputs: the forward graph's inputs, plus `step` (i64 scalar, 1 for the first update), used for
  Adam's bias correction and as the random seed: a forward input named `seed` (an integer
  scalar, e.g. the dropout seed) is replaced by `step` (cast to its dtype);
- parameters: the forward graph's parameters, plus optimizer state `state.<param>.<slot>`
  (frozen, initial value zeros);
- outputs: every loss, `new.<param>` for each updated parameter, `state.<param>.<slot>` for the
  new optimizer state, and `new.<param>` for every forward output named `update.<param>` (by
  convention the new value of a parameter that is not trained by gradients, such as batch-norm
  running statistics).

Parameters are trained in groups, each with its own optimizer and, optionally, its own loss:
`{("g.w1", "g.w2"): Adam(...), ("d.w",): SGD(...)}`, or a list of `ParamGroup`s when groups have
different losses (a GAN step: the discriminator loss updates only D, the generator loss only G).
A loss is an output name or `{name: weight}` (multitask heads summed with weights).

`Trainer(step_graph)` runs a step graph repeatedly on the reference backend (or any runner with
the signature of `run_graph`), feeding `new.*` and `state.*` outputs back as parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder, Tensor
from graphc.ir.errors import GradientError
from graphc.ir.graph import Graph, Node, Value
from graphc.ir.types import INT_DTYPES, TensorType
from graphc.optim import SGD, Adam, AdamW, Optimizer
from graphc.passes.autodiff import (
    LossSpec,
    backprop,
    check_loss,
    default_wrt,
    loss_weights,
    resolve_wrt,
    seed_cotangent,
)
from graphc.passes.decompose import decompose

STEP_INPUT = "step"
SEED_INPUT = "seed"
UPDATE_PREFIX = "update."

Runner = Callable[[Graph, Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                  dict[str, np.ndarray]]


@dataclass(frozen=True)
class ParamGroup:
    """Parameters trained by one optimizer on one loss (None: the step's loss)."""

    params: tuple[str, ...]
    optimizer: Optimizer
    loss: LossSpec | None = None


OptimizerSpec = Optimizer | Mapping[str | tuple[str, ...], Optimizer] | Sequence[ParamGroup]


# -- signature plumbing ----------------------------------------------------------------------------


def running_stat_outputs(graph: Graph) -> dict[str, Value]:
    """{param name: new value} for every output named `update.<param>`."""
    out: dict[str, Value] = {}
    for name, v in graph.outputs:
        if not name.startswith(UPDATE_PREFIX):
            continue
        pname = name[len(UPDATE_PREFIX):]
        p = graph.param(pname) if pname in graph.param_names else None
        if p is None:
            raise GradientError(f"output {name!r} updates parameter {pname!r}, which graph "
                                f"{graph.name!r} does not have")
        if p.type != v.type:
            raise GradientError(f"output {name!r} is {v.type} but parameter {pname!r} is {p.type}")
        out[pname] = v
    return out


def _integer_scalar(v: Value, what: str) -> None:
    if v.shape != () or v.dtype not in INT_DTYPES:
        raise GradientError(f"input {what!r} must be an integer scalar (i64[]), got {v.type}")


def with_step_input(graph: Graph) -> tuple[Graph, Value]:
    """`graph` with an i64 `step` input, replacing an integer `seed` input by (a cast of) it."""
    names = graph.input_names
    if STEP_INPUT in names:
        step = graph.input(STEP_INPUT)
        _integer_scalar(step, STEP_INPUT)
        return graph, step
    step = Node("input", (), {"name": STEP_INPUT}, (TensorType((), "i64"),), STEP_INPUT).out
    if SEED_INPUT not in names:
        return Graph(graph.name, graph.inputs + (step,), graph.params, graph.nodes,
                     graph.outputs, graph.param_values), step
    seed = graph.input(SEED_INPUT)
    _integer_scalar(seed, SEED_INPUT)
    head: list[Node] = []
    seed_value = step
    if seed.dtype != "i64":
        cast = Node("cast", (step,), {"dtype": seed.dtype}, (seed.type,), SEED_INPUT)
        head, seed_value = [cast], cast.out
    inputs = tuple(v for v in graph.inputs if v is not seed) + (step,)
    g = Graph(graph.name, inputs, graph.params, head + list(graph.nodes), graph.outputs,
              graph.param_values)
    return g.substitute({seed: seed_value}), step


def normalize_groups(graph: Graph, loss: LossSpec | None, optimizer: OptimizerSpec,
                     untrained: Iterable[str]) -> list[ParamGroup]:
    """Explicit, validated, disjoint parameter groups with a loss each."""
    untrained = set(untrained)
    if isinstance(optimizer, Optimizer):
        params = tuple(p for p in default_wrt(graph) if p not in untrained)
        groups = [ParamGroup(params, optimizer)]
    elif isinstance(optimizer, Mapping):
        groups = [ParamGroup((k,) if isinstance(k, str) else tuple(k), opt)
                  for k, opt in optimizer.items()]
    elif isinstance(optimizer, Iterable) and not isinstance(optimizer, str):
        groups = list(optimizer)
    else:
        raise GradientError(f"optimizer {optimizer!r}: give an Optimizer (SGD, Adam, AdamW), a "
                            f"mapping from parameter names to them, or ParamGroups")
    seen: dict[str, int] = {}
    out = []
    for i, grp in enumerate(groups):
        if not isinstance(grp, ParamGroup) or not isinstance(grp.optimizer, Optimizer):
            raise GradientError(f"optimizer group {i}: expected a ParamGroup with an Optimizer, "
                                f"got {grp!r}")
        resolve_wrt(graph, grp.params)  # unknown, frozen or integer names fail here
        for p in grp.params:
            if p in seen:
                raise GradientError(f"parameter {p!r} is in optimizer groups {seen[p]} and {i}; "
                                    f"groups must be disjoint")
            if p in untrained:
                raise GradientError(f"parameter {p!r} is updated by output 'update.{p}', so no "
                                    f"optimizer may train it")
            seen[p] = i
        group_loss = grp.loss if grp.loss is not None else loss
        if group_loss is None:
            raise GradientError(f"optimizer group {i} ({', '.join(grp.params)}) has no loss: "
                                f"give train_step a loss or the group one")
        out.append(ParamGroup(tuple(grp.params), grp.optimizer, group_loss))
    return out


# -- the step graph --------------------------------------------------------------------------------


def _emit_group(b: Builder, graph: Graph, group: ParamGroup, step: Tensor,
                outputs: dict[str, Value]) -> None:
    """Gradients of the group's loss and the optimizer update of each of its parameters."""
    weights = loss_weights(group.loss)
    params = [graph.param(p) for p in group.params]
    seeds = []
    for name, w in weights.items():
        v = check_loss(graph, name)
        outputs.setdefault(name, v)
        seeds.append((v, seed_cotangent(b, v, w)))
    lam = group.optimizer.l2_penalty()
    if lam and params:
        with b.scope("weight_decay"):
            penalty = b.weight_decay(*(b.tensor(p) for p in params), lam=lam)
        seeds.append((penalty.value, b.const(1.0, dtype=penalty.dtype)))
    body = b.build().nodes
    grads = backprop(b, body, seeds, params)
    for p, g in zip(params, grads, strict=True):
        pname = p.node.attrs["name"]
        state = {s: b.param(f"state.{pname}.{s}", p.shape, init="zeros", dtype=p.dtype,
                            frozen=True)
                 for s in group.optimizer.state_slots()}
        with b.scope(f"update.{pname}"):
            new_p, new_state = group.optimizer.update(b, b.tensor(p), g, step, state)
        outputs[f"new.{pname}"] = new_p.value
        for s, t in new_state.items():
            outputs[f"state.{pname}.{s}"] = t.value


def train_step(graph: Graph, loss: LossSpec | None, optimizer: OptimizerSpec, *,
               keep_outputs: Sequence[str] = ()) -> Graph:
    """One graph performing a full training step of `graph` (see the module docstring).

    `loss`: an output name, {name: weight}, or None when every group has its own.
    `optimizer`: one Optimizer for every trainable parameter (not frozen, float, not updated
    through `update.<param>`), a mapping from parameter names (a tuple or one name) to
    optimizers, or a list of ParamGroups with their own losses.
    `keep_outputs` names further forward outputs to keep (metrics such as accuracy).
    """
    g = decompose(graph)
    stats = running_stat_outputs(g)
    groups = normalize_groups(g, loss, optimizer, stats)
    g, step_value = with_step_input(g)
    b = Builder.from_graph(g, expand_composites=True)
    b.copy_body(g)
    step = b.tensor(step_value)
    outputs: dict[str, Value] = {}
    for group in groups:
        _emit_group(b, g, group, step, outputs)
    losses = {k: v for k, v in outputs.items() if not k.startswith(("new.", "state."))}
    updates = {k: v for k, v in outputs.items() if k not in losses}
    ordered = dict(losses)
    ordered.update({name: g.output(name) for name in keep_outputs})
    ordered.update(updates)
    for pname, v in stats.items():
        ordered[f"new.{pname}"] = v
    built = b.build(name=f"{graph.name}_step",
                    outputs={k: b.tensor(v) for k, v in ordered.items()})
    return Graph(built.name, built.inputs, built.params, built.live_nodes(), built.outputs,
                 built.param_values)


# -- driver ----------------------------------------------------------------------------------------


class Trainer:
    """Runs a step graph from `train_step` again and again, carrying parameters and state.

    `run` evaluates a graph given inputs and parameter values (default: the reference backend's
    `run_graph`); compiled backends plug in here. `params` holds the current values of every
    parameter of the step graph, optimizer state included.
    """

    def __init__(self, step_graph: Graph, run: Runner | None = None,
                 params: Mapping[str, np.ndarray] | None = None) -> None:
        if STEP_INPUT not in step_graph.input_names:
            raise GradientError(f"graph {step_graph.name!r} has no {STEP_INPUT!r} input; build "
                                f"it with train_step")
        self.graph = step_graph
        self.run_fn: Runner = run or run_graph
        self.params = {k: np.array(v) for k, v in step_graph.param_values.items()}
        self.params.update({k: np.array(v) for k, v in (params or {}).items()})
        self.steps_done = 0

    def step(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Make one update; returns the outputs that are not parameters (the losses)."""
        feed = dict(inputs)
        feed[STEP_INPUT] = np.asarray(self.steps_done + 1, np.int64)
        out = self.run_fn(self.graph, feed, self.params)
        for name, arr in out.items():
            if name.startswith("new."):
                self.params[name[len("new."):]] = arr
            elif name.startswith("state."):
                self.params[name] = arr
        self.steps_done += 1
        return {k: v for k, v in out.items() if not k.startswith(("new.", "state."))}

    def fit(self, batches: Iterable[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One `step` per batch; returns each step's losses."""
        return [self.step(batch) for batch in batches]

    def model_params(self) -> dict[str, np.ndarray]:
        """Current parameter values without the optimizer state."""
        return {k: v for k, v in self.params.items() if not k.startswith("state.")}

    def trained(self, graph: Graph) -> Graph:
        """`graph` (the forward graph) with the trained parameter values."""
        own = set(graph.param_names)
        return graph.with_param_values({k: v for k, v in self.params.items() if k in own})


__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "ParamGroup", "Trainer", "train_step"]
