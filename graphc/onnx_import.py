"""Import an ONNX model as a graphc Graph: `graphc.from_onnx(path_or_model)`, and `.onnx`
files wherever the CLI takes a model.

Note: what an import makes
--------------------------
Graph inputs become graph inputs with static shapes: a symbolic dimension is bound by name with
`dims=` ({"batch": 8}: every input that names it) or per input with `shapes=`, float
initializers become parameters with their values (trainable, except a BatchNormalization's
running mean and variance, which are frozen), and every node becomes the graphc ops it means,
so the result is an ordinary graph: it prints as text, trains through `train_step`, compiles
for every target. Integer tensors that only describe shapes and axes (a Reshape's shape, the
Shape -> Gather -> Concat chains exporters write around a flatten) are evaluated at import
time with numpy: with static shapes they are constants, as they are to any ahead-of-time
compiler.

The README lists the supported ops; the handlers live here (arithmetic, shapes, constants),
in `onnx_layers` (convolutions, pooling, normalization, recurrent ops), `onnx_more` (further
activations, reductions, resizing), `onnx_tensor` (Einsum, scans, one-hot, layout) and
`onnx_control` (If, Loop, Scan, sequences and optionals, resolved at import), `onnx_static`
(value-shaped ops of constants), `onnx_quant` (quantization) and `onnx_random`. Anything else
is a GraphError naming the node and its op. `onnx` is imported only here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from graphc.ir.builder import Builder, Tensor
from graphc.ir.errors import GraphError
from graphc.ir.registry import get_op
from graphc.ir.types import FLOAT_DTYPES, round_to_dtype

from . import (
    onnx_attention,
    onnx_control,
    onnx_index,
    onnx_math,
    onnx_more,
    onnx_quant,
    onnx_random,
    onnx_signal,
    onnx_spatial,
    onnx_static,
    onnx_tensor,
)
from . import onnx_layers as layers

_NAME = re.compile(r"[^A-Za-z0-9_.]")
_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log",
          "Neg": "neg", "Sqrt": "sqrt", "Abs": "abs", "Reciprocal": "reciprocal",
          "Softplus": "softplus", "Erf": "erf", "Floor": "floor", "Ceil": "ceil", "Round": "round"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow",
           "Max": "maximum", "Min": "minimum", "Greater": "gt", "Less": "lt", "Equal": "eq",
           "GreaterOrEqual": "ge", "LessOrEqual": "le"}
# Attributes the ONNX spec defines as 0 or 1. Other values are malformed, and runtimes read them
# differently (keepdims=-1 drops the axis in ONNX Runtime, an `is_causal` of 2 is not causal),
# so the importer refuses them rather than guess.
_FLAGS = frozenset({
    "allowzero", "antialias", "align_corners", "ceil_mode", "count_include_pad",
    "detect_negative", "detect_positive", "exclude_outside", "exclusive", "fmod",
    "input_forget", "interleaved", "inverse", "is_causal", "keepdims", "largest", "layout",
    "linear_before_reset", "new_axis", "noop_with_empty_axes", "onesided", "periodic",
    "reverse", "select_last_index", "sorted", "storage_order", "training_mode", "transA",
    "transB", "upper"})
_NUMPY_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
                 "Max": np.maximum, "Min": np.minimum}


class OnnxImportError(GraphError):
    """An ONNX model graphc cannot import: unreadable, dynamic shapes, an unsupported op."""


def from_onnx(model: Any, *, shapes: Mapping[str, Sequence[int]] | None = None,
              dims: Mapping[str, int] | None = None, name: str | None = None,
              frozen: bool | Iterable[str] = ()) -> Any:
    """A Graph from an ONNX ModelProto, its serialized bytes or the path of a `.onnx` file.

    Symbolic input dimensions (an exporter's dynamic batch axis) are fixed at import: `dims`
    binds them by name (`{"batch": 8}` for every input whose shape names "batch"), `shapes`
    gives whole input shapes (needed for unnamed dimensions and inputs of unknown rank). A
    name bound by `shapes` binds it for the other inputs too; a shape that contradicts the
    model's fixed dimensions, or two bindings of one name that disagree, are errors naming
    the input. `frozen` marks imported parameters that training leaves alone: True for all of
    them (a pretrained backbone under a new head), or the ONNX names of some."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:  # pragma: no cover - onnx is a test and bench dependency
        raise OnnxImportError(f"importing ONNX models needs the onnx package: {e}") from None
    where = "model"
    if isinstance(model, (str, os.PathLike)):
        where = str(model)
        try:
            model = onnx.load(str(model))
        except Exception as e:  # noqa: BLE001 - protobuf raises many kinds
            raise OnnxImportError(f"{where!r} is not a readable ONNX model "
                                  f"({type(e).__name__}: {e})") from None
    elif isinstance(model, (bytes, bytearray, memoryview)):
        try:
            model = onnx.load_model_from_string(bytes(model))
        except Exception as e:  # noqa: BLE001 - protobuf raises many kinds
            raise OnnxImportError(f"the bytes given are not a readable ONNX model "
                                  f"({type(e).__name__}: {e})") from None
    elif not isinstance(model, onnx.ModelProto):
        raise OnnxImportError(f"from_onnx takes an ONNX ModelProto, its bytes or a file path, "
                              f"not {type(model).__name__}")
    imp = _Importer(model, numpy_helper, dict(shapes or {}), where)
    imp.bind_dims(dict(dims or {}))
    if frozen is True:
        imp.frozen |= {t.name for t in model.graph.initializer}
    elif frozen:
        names = set(frozen)
        missing = names - {t.name for t in model.graph.initializer}
        if missing:
            raise OnnxImportError(f"{where}: frozen names {sorted(missing)} are not initializers "
                                  f"of the model")
        imp.frozen |= names
    return imp.run(name)


def _all_nodes(graph):
    """The nodes of `graph` and of the subgraphs in their attributes (If, Loop, Scan bodies)."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _all_nodes(g)


def _unique(base: str, taken) -> str:
    """`base`, or `base_1`, `base_2`, ... the first not in `taken`."""
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _clean(name: str) -> str:
    out = _NAME.sub("_", name).strip("._") or "v"
    return out if not out[0].isdigit() else "v" + out


class _Importer:
    def __init__(self, model, numpy_helper, shapes: dict, where: str) -> None:
        self.model, self.nh, self.shapes, self.where = model, numpy_helper, shapes, where
        self.graph = model.graph
        self.b = Builder(_clean(self.graph.name or "onnx"))
        self.env: dict[str, Tensor | np.ndarray] = {}
        nodes = list(_all_nodes(self.graph))  # with those of If/Loop/Scan bodies
        self.frozen = {n.input[k] for n in nodes if n.op_type == "BatchNormalization"
                       for k in (3, 4) if len(n.input) > k}
        # Weights that become parameters in graphc's layout when their node is imported (an
        # LSTM's, GRU's or RNN's W, R and B, a ConvTranspose's W), and float initializers a
        # node reads as numbers at import (Resize's roi and scales, Upsample's scales)
        relayout = {"LSTM": (1, 2, 3), "GRU": (1, 2, 3), "RNN": (1, 2, 3), "ConvTranspose": (1,),
                    "Resize": (1, 2), "Upsample": (1,), "OneHot": (1, 2), "Range": (0, 1, 2),
                    "MelWeightMatrix": (3, 4)}
        self.relayout = {n.input[k] for n in nodes if n.op_type in relayout
                         for k in relayout[n.op_type] if len(n.input) > k and n.input[k]}
        self.taken: set[str] = set()
        self.inits: dict[str, np.ndarray] = {}
        self.skipped: dict[str, object] = {}  # optional outputs left uncomputed -> their node
        self.named_nodes: set[int] = set()  # ids of graph nodes named after an ONNX value
        # id of a node computed from constants -> (the node, kept alive so that its id stays
        # its own; its output values)
        self.folded: dict[int, tuple[Any, tuple[np.ndarray, ...]]] = {}

    def fresh(self, raw: str) -> str:
        name = _unique(_clean(raw), self.taken)
        self.taken.add(name)
        return name

    def skipped_output(self, raw: str) -> OnnxImportError:
        node = self.skipped[raw]
        k = list(node.output).index(raw)
        return self.fail(node, f"output {k} ({raw!r}) is not supported by the importer, and "
                               "the model uses it")

    def fail(self, node, msg: str) -> OnnxImportError:
        label = node.name or (node.output[0] if node.output else "?")
        return OnnxImportError(f"{self.where}: node {label!r} ({node.op_type}): {msg}")

    # -- sources --------------------------------------------------------------------------------
    def run(self, name: str | None):
        inits = self.inits = {t.name: self.nh.to_array(t) for t in self.graph.initializer}
        for raw, arr in inits.items():
            if arr.dtype.kind == "f" and raw not in self.relayout:
                self.env[raw] = self.b.param(self.fresh(raw), arr.shape,
                                             init=arr.astype(np.float32),
                                             frozen=raw in self.frozen)
            else:
                self.env[raw] = arr
        for vi in self.graph.input:
            if vi.name in inits:
                continue
            self.env[vi.name] = self.b.input(self.fresh(vi.name), self._input_shape(vi),
                                             self._dtype(vi))
        self.import_nodes(self.graph.node)
        outputs = {}
        for vi in self.graph.output:
            v = self.env.get(vi.name)
            if vi.name in self.skipped:
                raise self.skipped_output(vi.name)
            if isinstance(v, onnx_control.Optional) and v.value is not None:
                v = v.value
            if v is None:
                raise OnnxImportError(f"{self.where}: output {vi.name!r} is not computed")
            if isinstance(v, (onnx_control.Sequence, onnx_control.Optional)):
                raise OnnxImportError(f"{self.where}: output {vi.name!r} is a "
                                      f"{type(v).__name__.lower()}; graph outputs are tensors")
            # outputs have a namespace of their own
            outputs[_unique(_clean(vi.name), outputs)] = self._tensor(v)
        return self.b.build(name, outputs=outputs)

    def import_nodes(self, nodes) -> None:
        """Import `nodes` in order, each output into `env` under its ONNX name."""
        for node in nodes:
            for raw, v in zip(node.output, self._node(node), strict=False):
                if raw and v is None:  # an optional output the importer does not compute
                    self.skipped[raw] = node
                elif raw:
                    self.env[raw] = self._named(v, raw)

    def _named(self, v, raw: str):
        """A node made for ONNX value `raw` prints under its name (`%conv_Conv_output_0`)."""
        if not isinstance(v, Tensor) or v.node.op in ("input", "param", "constant"):
            return v
        if id(v.node) in self.named_nodes:
            # Two ONNX nodes computing the same value share one graph node (the builder
            # merges equal nodes): it keeps the first one's name, so the tensor the first
            # value holds stays valid.
            return v
        try:
            v = v.named(self.fresh(raw))
        except GraphError:  # already used (an op returned an existing tensor): keep its name
            return v
        self.named_nodes.add(id(v.node))
        return v

    # -- input shapes: symbolic dimensions bound by name or by whole shapes ------------------

    def _declared(self, vi) -> list[int | str | None] | None:
        """The input's dimensions as the model declares them (an int, a symbolic name, None
        for an unnamed one), or None when the model gives no shape at all."""
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tt.shape.dim]

    def bind_dims(self, dims: dict[str, int]) -> None:
        """Check `dims` and the `shapes` against the model's inputs; then bind every symbolic
        name the given shapes fix, so that other inputs naming it agree with them."""
        inits = {t.name for t in self.graph.initializer}
        inputs = {vi.name: vi for vi in self.graph.input if vi.name not in inits}
        unknown = sorted(set(self.shapes) - set(inputs))
        if unknown:
            raise OnnxImportError(f"{self.where}: shapes given for {unknown}, which are not "
                                  f"inputs of the model (inputs: {sorted(inputs)})")
        named = {d for vi in inputs.values() for d in (self._declared(vi) or [])
                 if isinstance(d, str)}
        unknown = sorted(set(dims) - named)
        if unknown:
            raise OnnxImportError(f"{self.where}: dims given for {unknown}, which no input's "
                                  f"shape names (symbolic dimensions: {sorted(named) or 'none'})")
        for dim, value in dims.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise OnnxImportError(f"{self.where}: dimension {dim!r} must be bound to a "
                                      f"non-negative integer, got {value!r}")
        self.dims: dict[str, int] = {k: int(v) for k, v in dims.items()}
        self.dim_source = {k: "dims=" for k in dims}
        for raw, shape in self.shapes.items():
            self.shapes[raw] = self._given_shape(inputs[raw], shape)

    def _given_shape(self, vi, shape) -> tuple[int, ...]:
        try:
            given = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            given = None
        if given is None or any(d < 0 for d in given):
            raise OnnxImportError(f"{self.where}: shapes[{vi.name!r}] must be a sequence of "
                                  f"non-negative integers, got {shape!r}")
        declared = self._declared(vi)
        if declared is None:
            return given
        if len(given) != len(declared):
            raise OnnxImportError(f"{self.where}: shapes[{vi.name!r}] = {list(given)} has rank "
                                  f"{len(given)}; the model declares {self._shown(declared)}")
        for axis, (want, got) in enumerate(zip(declared, given, strict=True)):
            if isinstance(want, int) and want != got:
                raise OnnxImportError(f"{self.where}: shapes[{vi.name!r}] = {list(given)} "
                                      f"contradicts the model's {self._shown(declared)} at "
                                      f"axis {axis}")
            if isinstance(want, str):
                bound = self.dims.setdefault(want, got)
                source = self.dim_source.setdefault(want, f"shapes[{vi.name!r}]")
                if bound != got:
                    raise OnnxImportError(f"{self.where}: shapes[{vi.name!r}] gives dimension "
                                          f"{want!r} = {got}, but {source} gives {bound}")
        return given

    @staticmethod
    def _shown(declared: list) -> list:
        return [d if d is not None else "?" for d in declared]

    def _input_shape(self, vi) -> tuple[int, ...]:
        if vi.name in self.shapes:
            return self.shapes[vi.name]
        declared = self._declared(vi)
        hint = f"give shapes={{{vi.name!r}: (...)}} (command line: --shape {vi.name}=AxB...)"
        if declared is None:
            raise OnnxImportError(f"{self.where}: input {vi.name!r} has no declared shape; "
                                  + hint)
        free = [d for d in declared if d is None or (isinstance(d, str) and d not in self.dims)]
        if free:
            names = sorted({d for d in free if d is not None})
            bind = (f"bind {names} with dims={{{names[0]!r}: N}} (command line: --dim "
                    f"{names[0]}=N), or " if names else "")
            raise OnnxImportError(f"{self.where}: input {vi.name!r} has shape "
                                  f"{self._shown(declared)} with symbolic dimensions; "
                                  f"{bind}{hint}")
        return tuple(self.dims[d] if isinstance(d, str) else d for d in declared)

    def _dtype(self, vi) -> str:
        from onnx import TensorProto

        kinds = {TensorProto.FLOAT: "f32", TensorProto.DOUBLE: "f64", TensorProto.INT64: "i64",
                 TensorProto.INT32: "i32", TensorProto.BOOL: "bool"}
        et = vi.type.tensor_type.elem_type
        if et not in kinds:
            raise OnnxImportError(f"{self.where}: input {vi.name!r} has an element type "
                                  f"({et}) graphc does not import")
        return kinds[et]

    def _tensor(self, v) -> Tensor:
        return v if isinstance(v, Tensor) else self.b.const(np.asarray(v, np.float32))

    # -- nodes ----------------------------------------------------------------------------------
    def _node(self, node) -> list:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for key in _FLAGS.intersection(attrs):
            if attrs[key] not in (0, 1):
                raise self.fail(node, f"attribute {key}={attrs[key]!r} must be 0 or 1")
        ins = [self.env.get(x) if x else None for x in node.input]
        for raw, v in zip(node.input, ins, strict=True):
            if raw in self.skipped:
                raise self.skipped_output(raw)
            if raw and v is None:
                raise self.fail(node, f"input {raw!r} is not defined before it")
        op = node.op_type
        if op in _CONST_OPS and any(isinstance(v, Tensor) for v in ins):
            ins = self._fold_integers(ins)
        folding = all(isinstance(v, np.ndarray) or v is None for v in ins) and op in _CONST_OPS
        handler = _CONST_OPS[op] if folding else _HANDLERS.get(op)
        if handler is None:
            raise self.fail(node, "op not supported by the importer")
        try:
            out = handler(self, node, ins, attrs)
        except OnnxImportError:
            raise
        except GraphError as e:
            raise self.fail(node, str(e)) from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError,
                ArithmeticError) as e:
            # a missing attribute or input (None), or numbers numpy cannot fold (its AxisError
            # is a ValueError and an IndexError)
            raise self.fail(node, f"malformed node ({type(e).__name__}: {e})") from None
        if folding:  # one value, or a list of them (Unique's four outputs)
            return [o if isinstance(o, Tensor) else np.asarray(o)
                    for o in (out if isinstance(out, list) else [out])]
        return out if isinstance(out, list) else [out]

    def t(self, v) -> Tensor:
        return self._tensor(v)

    def numbers(self, v) -> np.ndarray | None:
        """The values of a constant input: an initializer or integer result kept as numpy, or
        a graph tensor computed from constants alone (a float Constant node, or a shape
        calculation through ops the numpy folding above does not cover, such as Mod or Where);
        None when it depends on a graph input or parameter."""
        if isinstance(v, np.ndarray):
            return v
        if isinstance(v, Tensor):
            return self._fold(v)
        return None

    def _fold_integers(self, ins: list) -> list:
        """`ins` with every integer or bool graph tensor computed from constants alone as
        numbers, when that leaves no graph tensor: shape arithmetic that went through graph ops
        (a Cast back from a float division) joins the numpy folding again."""
        folded = [self._fold(v) if isinstance(v, Tensor) and v.dtype not in FLOAT_DTYPES
                  else v for v in ins]
        if any(isinstance(v, Tensor) or (v is None and x is not None)
               for v, x in zip(folded, ins, strict=True)):
            return ins  # a graph tensor stays (a float, or one that depends on an input)
        return folded

    def _fold(self, v: Tensor) -> np.ndarray | None:
        """Evaluate the constant-only subgraph under `v` with each op's numpy reference."""
        order: list = []
        seen: set[int] = set()
        stack = [(v.node, False)]
        while stack:  # post-order walk without recursion (exported chains can be long)
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen or id(node) in self.folded:
                continue
            if node.op in ("input", "param"):
                return None
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((x.node, False) for x in node.inputs)
        for node in order:
            args = [self.folded[id(x.node)][1][x.index] for x in node.inputs]
            result = get_op(node.op).reference(args, dict(node.attrs))
            results = result if isinstance(result, tuple) else (result,)
            self.folded[id(node)] = (node, tuple(
                round_to_dtype(np.asarray(r), out.dtype).reshape(out.shape)
                for r, out in zip(results, node.outputs, strict=True)))
        return self.folded[id(v.node)][1][v.value.index]

    def ints(self, node, v, what: str) -> list[int]:
        values = self.numbers(v)
        if values is None:
            raise self.fail(node, f"{what} must be a constant (computed from static shapes)")
        return [int(x) for x in values.reshape(-1)]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# -- constant folding on shape tensors -----------------------------------------------------------
def _shape_of(imp: _Importer, node, ins, attrs):
    (x,) = ins[:1]
    shape = np.asarray(x.shape if isinstance(x, (Tensor, np.ndarray)) else (), np.int64)
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return shape[start:end]


def _gather_const(imp, node, ins, attrs):
    return np.take(ins[0], ins[1].astype(np.int64), axis=attrs.get("axis", 0))


def _gather(imp, node, ins, attrs):
    """Gather of a tensor (an embedding lookup: a weight initializer indexed by token ids) as
    `take`; constant indices become a constant."""
    idx = ins[1]
    if isinstance(idx, np.ndarray):
        if idx.dtype.kind not in "iu":
            raise imp.fail(node, f"indices must be integers, got {idx.dtype}")
        idx = imp.b.const(idx.astype(np.int64), "i64")
    return imp.b.take(imp.t(ins[0]), idx, axis=int(attrs.get("axis", 0)))


def _unsqueeze_const(imp, node, ins, attrs):
    axes = attrs.get("axes") or imp.ints(node, ins[1], "axes")
    out = ins[0]
    for a in sorted(_axis(a, out.ndim + len(axes)) for a in axes):
        out = np.expand_dims(out, a)
    return out


def _squeeze_const(imp, node, ins, attrs):
    axes = attrs.get("axes") or (imp.ints(node, ins[1], "axes") if len(ins) > 1 else None)
    return np.squeeze(ins[0], axis=None if axes is None else tuple(axes))


def _concat_const(imp, node, ins, attrs):
    return np.concatenate([np.atleast_1d(v) for v in ins], axis=attrs["axis"])


def _cast_const(imp, node, ins, attrs):
    from onnx import helper

    return ins[0].astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))


def _binary_const(imp, node, ins, attrs):
    a, c = ins
    if node.op_type == "Div" and a.dtype.kind in "iu" and c.dtype.kind in "iu":
        q = np.floor_divide(a, c)  # ONNX's integer division truncates toward zero
        return q + ((q < 0) & (q * c != a))
    return _NUMPY_BINARY[node.op_type](a, c)


def _logic_const(imp, node, ins, attrs):
    """Comparisons and logic on numbers known at import (a condition on a shape)."""
    return np.asarray(_NUMPY_LOGIC[node.op_type](*ins))


_NUMPY_LOGIC = {"Equal": np.equal, "Greater": np.greater, "GreaterOrEqual": np.greater_equal,
                "Less": np.less, "LessOrEqual": np.less_equal, "And": np.logical_and,
                "Or": np.logical_or, "Xor": np.logical_xor, "Not": np.logical_not}


def _constant(imp: _Importer, node, ins, attrs):
    if "value" not in attrs:
        raise imp.fail(node, "only a Constant given by `value` is supported")
    arr = imp.nh.to_array(attrs["value"])
    return imp.b.const(arr.astype(np.float32)) if arr.dtype.kind == "f" else arr


_CONST_OPS: dict[str, Callable] = {
    "Gather": _gather_const, "Unsqueeze": _unsqueeze_const, "Squeeze": _squeeze_const,
    "Concat": _concat_const, "Cast": _cast_const, "Constant": _constant,
    **{op: _binary_const for op in _NUMPY_BINARY}, **{op: _logic_const for op in _NUMPY_LOGIC},
    **onnx_tensor.CONST_HANDLERS, **onnx_static.CONST_HANDLERS,
}


# -- tensor ops ------------------------------------------------------------------------------------
def _unary(imp, node, ins, attrs):
    return imp.b.op(_UNARY[node.op_type], imp.t(ins[0]))


def _binary(imp, node, ins, attrs):
    a, c = ins
    if not isinstance(a, Tensor) and not isinstance(c, Tensor):  # numbers numpy did not fold
        a = imp.b.const(a) if np.asarray(a).dtype.kind in "biu" else imp.t(a)
    like = a if isinstance(a, Tensor) else c
    lift = (lambda v: v if isinstance(v, Tensor) else imp.b.const(
        np.asarray(v, np.float32), dtype=like.dtype))
    return imp.b.op(_BINARY[node.op_type], lift(a), lift(c))


def _leaky_relu(imp, node, ins, attrs):
    x = imp.t(ins[0])
    alpha = float(attrs.get("alpha", 0.01))
    return imp.b.op("maximum", x, x * alpha) if alpha <= 1 else imp.b.op("minimum", x, x * alpha)


def _matmul(imp, node, ins, attrs):
    return imp.b.op("matmul", imp.t(ins[0]), imp.t(ins[1]))


def _gemm(imp, node, ins, attrs):
    a, w = imp.t(ins[0]), imp.t(ins[1])
    if attrs.get("transA", 0):
        a = a.transpose(1, 0)
    if attrs.get("transB", 0):
        w = w.transpose(1, 0)
    y = imp.b.op("matmul", a, w)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if alpha != 1.0:
        y = y * alpha
    if len(ins) > 2 and ins[2] is not None:
        c = imp.t(ins[2])
        y = y + (c * beta if beta != 1.0 else c)
    return y


def _softmax(imp, node, ins, attrs):
    op = "softmax" if node.op_type == "Softmax" else "log_softmax"
    return imp.b.op(op, imp.t(ins[0]), axis=int(attrs.get("axis", -1)))


def _reshape(imp, node, ins, attrs):
    x = imp.t(ins[0])
    shape = imp.ints(node, ins[1], "shape")
    if attrs.get("allowzero", 0):
        out = shape
    else:
        out = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if out.count(-1) == 1:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(x.shape) // max(known, 1)
    return x.reshape(*out)


def _flatten(imp, node, ins, attrs):
    x = imp.t(ins[0])
    axis = _axis(int(attrs.get("axis", 1)), x.ndim)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _transpose(imp, node, ins, attrs):
    x = imp.t(ins[0])
    perm = attrs.get("perm") or list(reversed(range(x.ndim)))
    return x.transpose(*perm)


def _concat(imp, node, ins, attrs):
    parts = [imp.t(v) for v in ins]
    return imp.b.op("concat", *parts, axis=_axis(int(attrs["axis"]), parts[0].ndim))


def _squeeze(imp, node, ins, attrs):
    x = imp.t(ins[0])
    axes = attrs.get("axes") or (imp.ints(node, ins[1], "axes") if len(ins) > 1 else None)
    drop = ({_axis(a, x.ndim) for a in axes} if axes is not None
            else {i for i, d in enumerate(x.shape) if d == 1})
    return x.reshape(*[d for i, d in enumerate(x.shape) if i not in drop])


def _unsqueeze(imp, node, ins, attrs):
    x = imp.t(ins[0])
    axes = attrs.get("axes") or imp.ints(node, ins[1], "axes")
    shape = list(x.shape)
    for a in sorted(_axis(a, x.ndim + len(axes)) for a in axes):
        shape.insert(a, 1)
    return x.reshape(*shape)


def _identity(imp, node, ins, attrs):
    out = imp.t(ins[0])
    return [out] if len(node.output) == 1 else [out, None]


def _cast(imp, node, ins, attrs):
    from onnx import TensorProto

    to = {TensorProto.FLOAT: "f32", TensorProto.DOUBLE: "f64", TensorProto.FLOAT16: "f16",
          TensorProto.BFLOAT16: "bf16", TensorProto.INT32: "i32", TensorProto.INT64: "i64",
          TensorProto.BOOL: "bool"}.get(attrs["to"])
    if to is None:
        raise imp.fail(node, f"a cast to element type {attrs['to']} of a computed tensor")
    x = imp.t(ins[0])
    return x if x.dtype == to else x.astype(to)


def _slice_params(imp, node, ins, attrs, shape) -> tuple[list, list, list, tuple]:
    """ONNX Slice's starts/ends/axes/steps (inputs from opset 10, attributes before) as
    graphc's per-axis start, stop and step, clamped as ONNX clamps them, and the axes to reverse
    first: a negative step walks the reversed axis forwards (torch exports flip so)."""
    if len(ins) > 1:
        starts = imp.ints(node, ins[1], "starts")
        ends = imp.ints(node, ins[2], "ends")
        axes = imp.ints(node, ins[3], "axes") if len(ins) > 3 and ins[3] is not None else None
        steps = imp.ints(node, ins[4], "steps") if len(ins) > 4 and ins[4] is not None else None
    else:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else [_axis(a, len(shape)) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if len(set(axes)) != len(axes):
        raise imp.fail(node, f"axes {list(axes)} repeat an axis")
    start, stop, step = [0] * len(shape), list(shape), [1] * len(shape)
    flip = []
    for a, b0, e0, st in zip(axes, starts, ends, steps, strict=True):
        if st == 0:
            raise imp.fail(node, "step 0")
        d = shape[a]
        b0, e0 = (b0 + d if b0 < 0 else b0), (e0 + d if e0 < 0 else e0)
        if st > 0:
            start[a], stop[a], step[a] = min(max(b0, 0), d), min(max(e0, 0), d), st
        else:  # from b0 down to e0 (exclusive): on the reversed axis, from d-1-b0 up to d-1-e0
            b0, e0 = min(max(b0, 0), d - 1), min(max(e0, -1), d - 1)
            start[a], stop[a], step[a] = d - 1 - b0, d - 1 - e0, -st
            flip.append(a)
        stop[a] = max(stop[a], start[a])
    return start, stop, step, tuple(sorted(flip))


def _slice(imp, node, ins, attrs):
    x = imp.t(ins[0])
    start, stop, step, flip = _slice_params(imp, node, ins, attrs, x.shape)
    if flip:
        x = imp.b.op("reverse", x, axes=flip)
    return imp.b.op("slice", x, start=tuple(start), stop=tuple(stop), step=tuple(step))


def _slice_const(imp, node, ins, attrs):
    start, stop, step, flip = _slice_params(imp, node, ins, attrs, ins[0].shape)
    x = np.flip(ins[0], flip) if flip else ins[0]
    return x[tuple(slice(a, b, c) for a, b, c in zip(start, stop, step, strict=True))]


_CONST_OPS["Slice"] = _slice_const


def _split(imp, node, ins, attrs):
    x = imp.t(ins[0])
    axis = _axis(int(attrs.get("axis", 0)), x.ndim)
    n_out = len(node.output)
    if len(ins) > 1 and ins[1] is not None:
        sizes = imp.ints(node, ins[1], "split")
    elif "split" in attrs:
        sizes = list(attrs["split"])
    else:  # equal parts, the last one smaller (opset 18's num_outputs rule)
        part = -(-x.shape[axis] // n_out)
        sizes = [min(part, x.shape[axis] - k * part) for k in range(n_out)]
    if sum(sizes) != x.shape[axis] or len(sizes) != n_out:
        raise imp.fail(node, f"split sizes {sizes} do not cover axis {axis} of {x.shape}")
    outs, lo = [], 0
    for size in sizes:
        start = [0] * x.ndim
        stop = list(x.shape)
        start[axis], stop[axis] = lo, lo + size
        outs.append(imp.b.op("slice", x, start=tuple(start), stop=tuple(stop)))
        lo += size
    return outs


def _expand(imp, node, ins, attrs):
    x = imp.t(ins[0])
    shape = tuple(np.broadcast_shapes(x.shape, tuple(imp.ints(node, ins[1], "shape"))))
    return imp.b.broadcast_to(x, shape)


def _where(imp, node, ins, attrs):
    # constants keep their element type (a condition folded from a shape calculation is bool)
    cond, a, c = (imp.b.const(v) if isinstance(v, np.ndarray) and v.dtype.kind in "biu"
                  else imp.t(v) for v in ins)
    return imp.b.op("select", cond, a, c)


def _clip(imp, node, ins, attrs):
    x = imp.t(ins[0])
    lo = ins[1] if len(ins) > 1 else attrs.get("min")
    hi = ins[2] if len(ins) > 2 else attrs.get("max")
    for bound, op in ((lo, "maximum"), (hi, "minimum")):
        if bound is None:
            continue
        if isinstance(bound, Tensor):
            x = imp.b.op(op, x, bound)
        else:
            x = imp.b.op(op, x, imp.b.const(float(np.asarray(bound).reshape(-1)[0]),
                                            dtype=x.dtype))
    return x


def _hard_sigmoid(imp, node, ins, attrs):
    x = imp.t(ins[0])
    y = x * float(attrs.get("alpha", 0.2)) + float(attrs.get("beta", 0.5))
    return imp.b.op("maximum", imp.b.op("minimum", y, 1.0), 0.0)


def _gelu(imp, node, ins, attrs):
    approximate = layers.text(attrs, "approximate", "none")
    if approximate not in ("none", "tanh"):
        raise imp.fail(node, f"approximate={approximate!r} (none or tanh)")
    return imp.b.gelu(imp.t(ins[0]), approximate=approximate)


def _elu(imp, node, ins, attrs):
    x = imp.t(ins[0])
    neg = (x.exp() - 1.0) * float(attrs.get("alpha", 1.0))
    return imp.b.op("select", imp.b.op("gt", x, 0.0), x, neg)


def _sum_mean(imp, node, ins, attrs):
    terms = [imp.t(v) for v in ins]
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out * (1.0 / len(terms)) if node.op_type == "Mean" else out


_HANDLERS: dict[str, Callable] = {
    **{op: _unary for op in _UNARY}, **{op: _binary for op in _BINARY},
    "LeakyRelu": _leaky_relu, "MatMul": _matmul, "Gemm": _gemm, "Softmax": _softmax,
    "LogSoftmax": _softmax, "Conv": layers.conv, "MaxPool": layers.pool, "AveragePool": layers.pool,
    "GlobalAveragePool": layers.global_avg_pool, "MaxUnpool": layers.max_unpool,
    "Col2Im": layers.col2im,
    "BatchNormalization": layers.batch_norm,
    "LayerNormalization": layers.layer_norm,
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose, "Concat": _concat,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Identity": _identity, "Dropout": _identity,
    "Constant": _constant,
    "Shape": _shape_of, "Cast": _cast, "LSTM": layers.recurrent, "RNN": layers.recurrent,
    "GRU": layers.recurrent,
    "Slice": _slice, "Split": _split, "Expand": _expand,
    "ConvTranspose": layers.conv_transpose, "Where": _where, "Clip": _clip,
    "HardSigmoid": _hard_sigmoid, "Elu": _elu, "Gelu": _gelu, "Gather": _gather,
    "Sum": _sum_mean, "Mean": _sum_mean, **onnx_more.HANDLERS, **onnx_tensor.HANDLERS,
    **onnx_math.HANDLERS, **onnx_index.HANDLERS, **onnx_attention.HANDLERS,
    **onnx_spatial.HANDLERS, **onnx_quant.HANDLERS, **onnx_signal.HANDLERS,
    **onnx_control.HANDLERS, **onnx_static.HANDLERS, **onnx_random.HANDLERS,
}


__all__ = ["OnnxImportError", "from_onnx"]
