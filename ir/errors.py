"""The GraphError family: every error a user can cause names the node, op, shape or file at
fault."""

from __future__ import annotations


class GraphError(Exception):
    """Base class of every error graphc raises for bad input."""


class ShapeError(GraphError):
    """Operand shapes are incompatible with an op's type rule."""


class DTypeError(GraphError):
    """Operand dtypes are incompatible with an op's type rule."""


class UnknownOpError(GraphError):
    """An op name that no registry entry declares."""


class AttributeSchemaError(GraphError):
    """A missing, unknown or ill-typed node attribute."""


class CycleError(GraphError):
    """The graph's def-use relation has a cycle."""


class DanglingValueError(GraphError):
    """A value is used where it is not defined (wrong graph, or used before definition)."""


class DuplicateNameError(GraphError):
    """Two inputs, parameters, outputs or values share a name."""


class ParseError(GraphError):
    """Textual IR that does not follow the grammar; the message carries file:line:column."""

    def __init__(self, message: str, line: int, col: int, source: str = "<text>") -> None:
        super().__init__(f"{source}:{line}:{col}: {message}")
        self.line = line
        self.col = col
        self.source = source


class InputError(GraphError):
    """A runtime argument whose name, shape or dtype does not match the graph signature."""


class GradientError(GraphError):
    """Autodiff was asked for something it cannot differentiate, or a gradient check failed."""


def describe_node(node) -> str:
    """One-line description of a node for error messages: op, name and operand types."""
    ins = ", ".join(str(v.type) for v in node.inputs)
    name = node.name or "?"
    return f"node %{name} = {node.op}({ins})"
