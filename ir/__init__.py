"""graphc.ir: both IR levels (graph IR and kernel IR), op definitions, text form, verifier."""

from . import ops as ops
from .builder import Builder, Tensor
from .errors import (
    AttributeSchemaError,
    CycleError,
    DanglingValueError,
    DTypeError,
    DuplicateNameError,
    GradientError,
    GraphError,
    InputError,
    ParseError,
    ShapeError,
    UnknownOpError,
)
from .graph import Graph, Node, Value
from .registry import OPS, Attr, OpDef, get_op
from .text import parse_graph, print_graph
from .types import TensorType
from .verify import verify

__all__ = [
    "OPS", "Attr", "AttributeSchemaError", "Builder", "CycleError", "DTypeError",
    "DanglingValueError", "DuplicateNameError", "GradientError", "Graph", "GraphError",
    "InputError", "Node", "OpDef", "ParseError", "ShapeError", "Tensor", "TensorType",
    "UnknownOpError", "Value", "get_op", "ops", "parse_graph", "print_graph", "verify",
]
