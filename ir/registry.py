"""The op registry: one `OpDef` per op, declaring its attribute schema, type rule, numpy
reference and either a VJP rule (primitives) or a decomposition into primitives (composites).

Each family module in `ir/ops/` builds its OpDefs beside the functions they name and adds them
with `register`; `ir/ops/__init__.py` calls every family once. Backends keep their own lowering
tables keyed by primitive name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import AttributeSchemaError, GraphError, UnknownOpError
from .graph import freeze_attr
from .types import DTYPES, TensorType

REQUIRED = object()

# kind -> (checker, description for error messages)
_ATTR_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "a bool"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "ints": (lambda v: isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool)
                                                    for x in v), "a tuple of ints"),
    "floats": (lambda v: isinstance(v, tuple) and all(isinstance(x, (int, float)) for x in v),
               "a tuple of numbers"),
    "axes": (lambda v: v is None or (isinstance(v, tuple) and all(isinstance(x, int) for x in v)),
             "None or a tuple of ints"),
    "dtype": (lambda v: v in DTYPES, f"a dtype name ({', '.join(DTYPES)})"),
    "scalar": (lambda v: isinstance(v, (int, float, bool)), "a number or bool"),
    "any": (lambda v: True, "plain data"),
}


@dataclass(frozen=True)
class Attr:
    """Schema of one attribute: its kind, default (REQUIRED if none) and allowed choices."""

    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None


# Rule signatures (Tensor is graphc.ir.builder.Tensor, b a Builder):
#   infer(input_types, attrs) -> TensorType | tuple[TensorType, ...]
#   reference(input_arrays, attrs) -> ndarray | tuple[ndarray, ...]
#   vjp(b, inputs, outputs, cotangents, attrs) -> sequence of Tensor | None, one per input
#   decompose(b, inputs, attrs) -> Tensor | tuple[Tensor, ...]
#   normalize(input_types, attrs) -> attrs   (canonical form stored in the node)
@dataclass(frozen=True)
class OpDef:
    name: str
    family: str
    arity: int | tuple[int, int | None]
    infer: Callable
    reference: Callable
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    vjp: Callable | None = None
    decompose: Callable | None = None
    normalize: Callable | None = None
    differentiable: bool = True
    doc: str = ""

    @property
    def primitive(self) -> bool:
        return self.decompose is None

    def arity_range(self) -> tuple[int, int | None]:
        if isinstance(self.arity, int):
            return self.arity, self.arity
        return self.arity


OPS: dict[str, OpDef] = {}


def register(*defs: OpDef) -> None:
    for d in defs:
        if d.name in OPS:
            raise GraphError(f"op {d.name!r} registered twice")
        if d.decompose is None and d.vjp is None and d.differentiable:
            raise GraphError(f"primitive {d.name!r} is differentiable but declares no VJP rule")
        OPS[d.name] = d


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise UnknownOpError(f"unknown op {name!r}") from None


def primitives() -> list[str]:
    return sorted(n for n, d in OPS.items() if d.primitive)


def composites() -> list[str]:
    return sorted(n for n, d in OPS.items() if not d.primitive)


def check_attrs(opdef: OpDef, attrs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Fill defaults and check every attribute against the op's schema."""
    out: dict[str, Any] = {}
    for key in attrs:
        if key not in opdef.attrs:
            known = ", ".join(opdef.attrs) or "none"
            raise AttributeSchemaError(f"{where}: unknown attribute {key!r} (known: {known})")
    for key, spec in opdef.attrs.items():
        if key in attrs:
            value = freeze_attr(attrs[key])
        elif spec.default is REQUIRED:
            raise AttributeSchemaError(f"{where}: missing required attribute {key!r}")
        else:
            value = spec.default
        check, desc = _ATTR_KINDS[spec.kind]
        if value is not spec.default or key in attrs:
            if not check(value) and not (spec.choices and value in spec.choices):
                raise AttributeSchemaError(f"{where}: attribute {key}={value!r} must be {desc}")
            if spec.choices is not None and spec.kind == "str" and value not in spec.choices:
                raise AttributeSchemaError(
                    f"{where}: attribute {key}={value!r} must be one of {spec.choices}")
        if spec.kind == "float" and isinstance(value, int):
            value = float(value)
        out[key] = value
    return out


def check_node(op: str, input_types: Sequence[TensorType], attrs: Mapping[str, Any],
               name: str | None = None) -> tuple[dict[str, Any], tuple[TensorType, ...]]:
    """Validate an op application; return its canonical attributes and output types.

    Every error names the op, the node (when it has a name) and the operand types.
    """
    opdef = get_op(op)
    operands = ", ".join(str(t) for t in input_types)
    where = f"{op}({operands})" if name is None else f"node %{name} = {op}({operands})"
    lo, hi = opdef.arity_range()
    n = len(input_types)
    if n < lo or (hi is not None and n > hi):
        want = str(lo) if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
        raise AttributeSchemaError(f"{where}: takes {want} operands, got {n}")
    full = check_attrs(opdef, attrs, where)
    try:
        if opdef.normalize is not None:
            full = {k: freeze_attr(v) for k, v in opdef.normalize(list(input_types), full).items()}
        result = opdef.infer(list(input_types), full)
    except GraphError as e:
        raise type(e)(f"{where}: {e}") from None
    types = (result,) if isinstance(result, TensorType) else tuple(result)
    return full, types
