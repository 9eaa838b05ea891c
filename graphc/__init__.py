"""graphc: an ahead-of-time graph compiler for neural networks.

    import graphc
    b = graphc.Builder("net", seed=0)
    x = b.input("x", (8, 2))
    h = b.dense(x, b.param("w", (2, 4)), b.param("bias", (4,), init="zeros"), activation="relu")
    g = b.build(outputs={"h": h})
    print(g)                               # the textual IR
    graphc.run_reference(g, {"x": ...})    # the numpy oracle

Importing graphc stays light: numpy, networkx and the IR only (no torch, no triton, no llvmlite).
"""

from graphc.backends.reference import run_graph as run_reference
from graphc.ir import (
    Builder,
    Graph,
    GraphError,
    Node,
    Tensor,
    TensorType,
    Value,
    parse_graph,
    print_graph,
    verify,
)
from graphc.ir.errors import (
    AttributeSchemaError,
    CycleError,
    DanglingValueError,
    DTypeError,
    DuplicateNameError,
    GradientError,
    InputError,
    ParseError,
    ShapeError,
    UnknownOpError,
)
from graphc.passes import autodiff, decompose, simplify

from .compiler import Executable, compile
from .gradcheck import gradcheck, to_float64
from .io import load_graph, save_graph
from .optim import SGD, Adam, AdamW
from .train import ParamGroup, Trainer, train_step

parse = parse_graph


def from_onnx(model, *, shapes=None, dims=None, name=None, frozen=()) -> Graph:
    """A Graph from an ONNX model (a ModelProto, its bytes or a `.onnx` path); `dims` binds symbolic
    dimensions by name, `shapes` gives whole input shapes (see `graphc.onnx_import`)."""
    from .onnx_import import from_onnx as _from_onnx

    return _from_onnx(model, shapes=shapes, dims=dims, name=name, frozen=frozen)


def load(path) -> Executable:
    """Load an AOT package folder written by `Executable.save` / `graphc compile -o`."""
    from .package import load_package

    return load_package(path)


__all__ = [
    "AttributeSchemaError", "Builder", "CycleError", "DTypeError", "DanglingValueError",
    "DuplicateNameError", "GradientError", "Graph", "GraphError", "InputError", "Node",
    "ParseError", "ShapeError", "Tensor", "TensorType", "UnknownOpError", "Value", "decompose",
    "load_graph", "parse", "parse_graph", "print_graph", "run_reference", "save_graph", "verify",
    "SGD", "Adam", "AdamW", "ParamGroup", "Trainer", "autodiff", "gradcheck", "simplify",
    "to_float64", "train_step", "Executable", "compile", "load", "from_onnx",
]
