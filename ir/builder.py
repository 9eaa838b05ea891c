"""Builder: the one way nodes are made, by users, decompositions and VJP rules alike.

`Builder.op(name, *tensors, **attrs)` checks attributes and infers types through the registry,
hash-conses structurally equal nodes (free CSE), and returns `Tensor` handles that overload
Python operators, so a network reads like its formula:

    b = Builder("net", seed=0)
    x = b.input("x", (4, 2))
    w = b.param("w", (2, 2))
    h = b.sigmoid(x @ w + 1.0)

With `expand_composites=True` a composite op is replaced on the spot by its decomposition
(recursively), which is exactly what the `decompose` pass does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import GraphError
from .graph import Graph, Node, Value
from .registry import OPS, check_node, get_op
from .types import (
    DTYPES,
    FLOAT_DTYPES,
    TensorType,
    check_dtype,
    dtype_of_array,
    round_to_dtype,
)


class Tensor:
    """A handle on a Value inside a Builder, with operator overloading."""

    __slots__ = ("value", "builder")
    __array_priority__ = 1000  # numpy scalars on the left defer to our reflected operators

    def __init__(self, value: Value, builder: Builder) -> None:
        self.value = value
        self.builder = builder

    # -- type info -------------------------------------------------------------------------------
    @property
    def type(self) -> TensorType:
        return self.value.type

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def dtype(self) -> str:
        return self.value.dtype

    @property
    def ndim(self) -> int:
        return len(self.value.shape)

    @property
    def node(self) -> Node:
        return self.value.node

    def __repr__(self) -> str:
        return f"Tensor(%{self.value.name}: {self.type})"

    # -- arithmetic --------------------------------------------------------------------------------
    def _lift(self, other: Any) -> Tensor:
        return self.builder.lift(other, like=self)

    def __add__(self, o): return self.builder.op("add", self, self._lift(o))
    def __radd__(self, o): return self.builder.op("add", self._lift(o), self)
    def __sub__(self, o): return self.builder.op("sub", self, self._lift(o))
    def __rsub__(self, o): return self.builder.op("sub", self._lift(o), self)
    def __mul__(self, o): return self.builder.op("mul", self, self._lift(o))
    def __rmul__(self, o): return self.builder.op("mul", self._lift(o), self)
    def __truediv__(self, o): return self.builder.op("div", self, self._lift(o))
    def __rtruediv__(self, o): return self.builder.op("div", self._lift(o), self)
    def __pow__(self, o): return self.builder.op("pow", self, self._lift(o))
    def __rpow__(self, o): return self.builder.op("pow", self._lift(o), self)
    def __matmul__(self, o): return self.builder.op("matmul", self, self._lift(o))
    def __rmatmul__(self, o): return self.builder.op("matmul", self._lift(o), self)
    def __neg__(self): return self.builder.op("neg", self)
    def __abs__(self): return self.builder.op("abs", self)
    def __lt__(self, o): return self.builder.op("lt", self, self._lift(o))
    def __le__(self, o): return self.builder.op("le", self, self._lift(o))
    def __gt__(self, o): return self.builder.op("gt", self, self._lift(o))
    def __ge__(self, o): return self.builder.op("ge", self, self._lift(o))
    # == and != keep identity semantics so Tensors stay usable as dict keys; use eq()/ne().
    __hash__ = object.__hash__

    def eq(self, o): return self.builder.op("eq", self, self._lift(o))
    def ne(self, o): return self.builder.op("ne", self, self._lift(o))

    # -- common methods ----------------------------------------------------------------------------
    def reshape(self, *shape) -> Tensor:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self.builder.reshape(self, shape)

    def transpose(self, *perm) -> Tensor:
        perm = perm[0] if len(perm) == 1 and isinstance(perm[0], (tuple, list)) else perm
        if not perm:
            perm = tuple(reversed(range(self.ndim)))
        return self.builder.op("transpose", self, perm=tuple(perm))

    @property
    def T(self) -> Tensor:
        """Swap the last two axes (a matrix transpose)."""
        perm = list(range(self.ndim))
        perm[-1], perm[-2] = perm[-2], perm[-1]
        return self.builder.op("transpose", self, perm=tuple(perm))

    def sum(self, axes=None, keepdims: bool = False) -> Tensor:
        return self.builder.op("reduce_sum", self, axes=_axes(axes), keepdims=keepdims)

    def max(self, axes=None, keepdims: bool = False) -> Tensor:
        return self.builder.op("reduce_max", self, axes=_axes(axes), keepdims=keepdims)

    def mean(self, axes=None, keepdims: bool = False) -> Tensor:
        return self.builder.op("mean", self, axes=_axes(axes), keepdims=keepdims)

    def astype(self, dtype: str) -> Tensor:
        return self.builder.op("cast", self, dtype=dtype)

    def named(self, name: str) -> Tensor:
        """Give this tensor's node a name (it prints as %name)."""
        return self.builder.rename(self, name)

    def __getattr__(self, op: str):
        # x.relu(), x.exp(), ... for every single-operand op in the registry.
        if op.startswith("_") or op not in OPS:
            raise AttributeError(op)
        return lambda *args, **attrs: self.builder.op(op, self, *args, **attrs)


def _axes(axes) -> tuple[int, ...] | None:
    if axes is None:
        return None
    if isinstance(axes, int):
        return (axes,)
    return tuple(axes)


class Builder:
    """Creates nodes and assembles a Graph."""

    def __init__(self, name: str = "main", seed: int = 0, *, expand_composites: bool = False,
                 cse: bool = True) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.expand_composites = expand_composites
        self.cse = cse
        self._inputs: list[Value] = []
        self._params: list[Value] = []
        self._nodes: list[Node] = []
        self._outputs: list[tuple[str, Value]] = []
        self._param_values: dict[str, np.ndarray] = {}
        self._by_hash: dict[int, list[Node]] = {}
        self._used: set[int] = set()
        self._scope: list[str] = []
        self._counts: dict[str, int] = {}

    # -- sources -------------------------------------------------------------------------------
    def input(self, name: str, shape: Sequence[int], dtype: str = "f32") -> Tensor:
        """A graph input, supplied by the caller at run time."""
        node = Node("input", (), {"name": name}, (TensorType(shape, dtype),), name)
        self._check_source_name(name)
        self._inputs.append(node.out)
        return Tensor(node.out, self)

    def param(self, name: str, shape: Sequence[int] | None = None, *, init: Any = "glorot",
              dtype: str = "f32", frozen: bool = False, fan_in: int | None = None,
              fan_out: int | None = None) -> Tensor:
        """A trainable parameter with an initial value from `init`.

        `init` is an array, a number, or one of 'glorot' (uniform, Glorot/Xavier), 'he'
        (normal, He/Kaiming, for ReLU layers), 'zeros', 'ones', 'normal' (std 0.01). Fans default
        to the usual dense (in, out) / conv (out, in, *kernel) conventions.
        """
        if isinstance(init, (np.ndarray, list, tuple)) or np.isscalar(init) and not isinstance(
                init, str):
            try:
                value = np.asarray(init, dtype=DTYPES[check_dtype(dtype)])
                ttype = TensorType(value.shape if shape is None else shape, dtype)
                value = np.broadcast_to(value, ttype.shape)
            except (ValueError, TypeError) as e:  # ragged, not numbers, or not broadcastable
                raise GraphError(f"param {name!r}: initial value does not fit "
                                 f"{dtype}{list(shape) if shape is not None else ''}: {e}"
                                 ) from None
        else:
            if shape is None:
                raise GraphError(f"param {name!r}: give a shape or an initial value")
            ttype = TensorType(shape, dtype)
            value = self._initial_value(name, ttype.shape, init, fan_in, fan_out)
        # (ascontiguousarray alone would turn a 0-d value into shape (1,))
        value = np.ascontiguousarray(round_to_dtype(value, dtype)).reshape(ttype.shape)
        attrs = {"name": name, "frozen": bool(frozen)}
        node = Node("param", (), attrs, (ttype,), name)
        self._check_source_name(name)
        self._params.append(node.out)
        self._param_values[name] = value
        return Tensor(node.out, self)

    def _initial_value(self, name, shape, init, fan_in, fan_out) -> np.ndarray:
        if init == "zeros":
            return np.zeros(shape, np.float32)
        if init == "ones":
            return np.ones(shape, np.float32)
        if init == "normal":
            return self.rng.normal(0.0, 0.01, shape).astype(np.float32)
        if len(shape) >= 2:
            receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
            if len(shape) == 2:
                f_in, f_out = shape[0], shape[1]
            else:  # conv weight (out, in, *kernel)
                f_in, f_out = shape[1] * receptive, shape[0] * receptive
        else:
            f_in = f_out = max(1, shape[0] if shape else 1)
        f_in = fan_in or f_in
        f_out = fan_out or f_out
        if init == "glorot":
            limit = np.sqrt(6.0 / (f_in + f_out))
            return self.rng.uniform(-limit, limit, shape).astype(np.float32)
        if init == "he":
            return self.rng.normal(0.0, np.sqrt(2.0 / f_in), shape).astype(np.float32)
        raise GraphError(f"param {name!r}: unknown initializer {init!r}")

    def _check_source_name(self, name: str) -> None:
        for v in self._inputs + self._params:
            if v.node.attrs["name"] == name:
                from .errors import DuplicateNameError

                raise DuplicateNameError(f"input/parameter name {name!r} is used twice")

    def const(self, value: Any, dtype: str | None = None, shape: Sequence[int] | None = None
              ) -> Tensor:
        """A constant: a scalar (splatted to `shape`) or an array literal."""
        try:
            arr = np.asarray(value)
        except ValueError as e:  # a ragged nested list
            raise GraphError(f"constant: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise GraphError(f"constant {value!r}: numbers and bools only (numpy dtype "
                             f"{arr.dtype})"[:300])
        if dtype is None:
            dtype = dtype_of_array(arr) if arr.dtype.kind in "biu" else "f32"
            if arr.dtype.kind in "iu":
                dtype = "i64" if arr.dtype.itemsize == 8 else "i32"
        if arr.ndim == 0:
            v = arr.item()
            v = float(v) if dtype in FLOAT_DTYPES else (bool(v) if dtype == "bool" else int(v))
            return self.op("constant", value=v, shape=tuple(shape or ()), dtype=dtype)
        if shape is not None and tuple(shape) != arr.shape:
            arr = np.broadcast_to(arr, tuple(shape))
        flat = arr.astype(DTYPES[dtype]).ravel().tolist()
        return self.op("constant", value=tuple(flat), shape=arr.shape, dtype=dtype)

    def lift(self, x: Any, like: Tensor | None = None) -> Tensor:
        """A Tensor as is; a Python/numpy number as a scalar constant of `like`'s dtype."""
        if isinstance(x, Tensor):
            if x.builder is not self:
                raise GraphError(f"{x!r} belongs to another builder")
            return x
        dtype = like.dtype if like is not None else None
        return self.const(x, dtype=dtype)

    # -- ops -----------------------------------------------------------------------------------
    def op(self, op: str, *inputs: Any, name: str | None = None, **attrs: Any
           ) -> Tensor | tuple[Tensor, ...]:
        """Apply a registered op; returns one Tensor, or a tuple for multi-output ops."""
        tensors = [self.lift(x) for x in inputs]
        hint = name or self._scoped_hint(op)
        full, types = check_node(op, [t.type for t in tensors], attrs, hint)
        opdef = get_op(op)
        if self.expand_composites and not opdef.primitive:
            with self.scope(name or op, numbered=name is None):
                result = opdef.decompose(self, tuple(tensors), full)
            outs = (result,) if isinstance(result, Tensor) else tuple(result)
            got = tuple(t.type for t in outs)
            if got != types:
                raise GraphError(f"decomposition of {op} produced types "
                                 f"{[str(t) for t in got]}, expected {[str(t) for t in types]}")
            return outs[0] if len(outs) == 1 else outs
        node = Node(op, [t.value for t in tensors], full, types, hint)
        node = self._add(node)
        outs = tuple(Tensor(v, self) for v in node.outputs)
        return outs[0] if len(outs) == 1 else outs

    def _add(self, node: Node) -> Node:
        if self.cse:
            for other in self._by_hash.get(node.shash, ()):
                if other.structurally_equal(node):
                    return other
            self._by_hash.setdefault(node.shash, []).append(node)
        self._nodes.append(node)
        for v in node.inputs:
            self._used.add(id(v.node))
        return node

    def add_node(self, node: Node) -> Node:
        """Append an existing node whose inputs are already in this builder (used by passes)."""
        return self._add(node)

    def __getattr__(self, op: str):
        # b.relu(x), b.conv(x, w, stride=(2, 2)), ... for every registered op.
        if op.startswith("_") or op not in OPS:
            raise AttributeError(f"Builder has no attribute or op {op!r}")
        return lambda *args, **attrs: self.op(op, *args, **attrs)

    # -- convenience wrappers whose arguments read better positionally -------------------------
    def reshape(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        shape = list(shape)
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1]))
            shape[shape.index(-1)] = x.type.size // max(known, 1)
        return self.op("reshape", x, shape=tuple(shape))

    def broadcast_to(self, x: Tensor, shape: Sequence[int]) -> Tensor:
        if tuple(shape) == x.shape:
            return x
        return self.op("broadcast", x, shape=tuple(shape))

    def zeros(self, shape: Sequence[int], dtype: str = "f32") -> Tensor:
        return self.const(0, dtype=dtype, shape=shape)

    def zeros_like(self, x: Tensor) -> Tensor:
        return self.zeros(x.shape, x.dtype)

    def ones_like(self, x: Tensor) -> Tensor:
        return self.const(1, dtype=x.dtype, shape=x.shape)

    # -- naming --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str, numbered: bool = False) -> Iterator[None]:
        """Prefix the name hints of nodes made inside (`lstm.t3.sigmoid`)."""
        if numbered:
            key = ".".join(self._scope + [name])
            k = self._counts.get(key, 0)
            self._counts[key] = k + 1
            name = f"{name}{k}"
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def _scoped_hint(self, op: str) -> str | None:
        return ".".join(self._scope + [op]) if self._scope else None

    def rename(self, t: Tensor, name: str) -> Tensor:
        node = t.node
        if node.op in ("input", "param"):
            raise GraphError(f"cannot rename {node.op} %{node.name}")
        if id(node) in self._used:
            raise GraphError(f"cannot rename %{node.name} ({node.op}) after it has been used")
        new = Node(node.op, node.inputs, node.attrs, node.types, name)
        idx = next(i for i, n in enumerate(self._nodes) if n is node)
        self._nodes[idx] = new
        bucket = self._by_hash.get(node.shash, [])
        for i, n in enumerate(bucket):
            if n is node:
                bucket[i] = new
        return Tensor(new.outputs[t.value.index], self)

    # -- assembly ------------------------------------------------------------------------------
    def output(self, name: str, t: Tensor) -> None:
        self._outputs.append((name, self.lift(t).value))

    def outputs(self, **named: Tensor) -> None:
        for k, v in named.items():
            self.output(k, v)

    def tensor(self, v: Value) -> Tensor:
        return Tensor(v, self)

    def build(self, name: str | None = None, outputs: Mapping[str, Tensor] | None = None
              ) -> Graph:
        outs = list(self._outputs)
        if outputs:
            outs += [(k, self.lift(v).value) for k, v in outputs.items()]
        return Graph(name or self.name, self._inputs, self._params, self._nodes, outs,
                     self._param_values)

    @classmethod
    def from_graph(cls, graph: Graph, **kwargs: Any) -> Builder:
        """A builder holding the sources of `graph` (not its body or outputs)."""
        b = cls(graph.name, **kwargs)
        b._inputs = list(graph.inputs)
        b._params = list(graph.params)
        b._param_values = dict(graph.param_values)
        return b

    def copy_body(self, graph: Graph) -> None:
        """Append every body node of `graph` unchanged, registering them for later CSE."""
        for n in graph.nodes:
            self._nodes.append(n)
            self._by_hash.setdefault(n.shash, []).append(n)
            for v in n.inputs:
                self._used.add(id(v.node))
