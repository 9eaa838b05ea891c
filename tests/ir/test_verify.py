"""Verifier and builder errors: each GraphError class, with a message naming the culprit."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference import run_graph
from graphc.ir import (
    Builder,
    DanglingValueError,
    DTypeError,
    DuplicateNameError,
    GraphError,
    Node,
    ShapeError,
    TensorType,
    UnknownOpError,
    verify,
)
from graphc.ir.errors import AttributeSchemaError, InputError
from graphc.ir.graph import Graph


def small():
    b = Builder("g")
    x = b.input("x", (3, 2))
    w = b.param("w", (2,))
    return b, x, w


def test_builder_rejects_shape_mismatch_naming_op_and_shapes():
    b, x, _ = small()
    y = b.input("y", (4, 2))
    with pytest.raises(ShapeError, match=r"add\(f32\[3, 2\], f32\[4, 2\]\).*do not broadcast"):
        x + y


def test_builder_rejects_dtype_mismatch():
    b, x, _ = small()
    i = b.input("i", (3, 2), "i32")
    with pytest.raises(DTypeError, match=r"mul\(f32\[3, 2\], i32\[3, 2\]\).*dtypes differ"):
        b.mul(x, i)
    with pytest.raises(DTypeError, match="floating-point"):
        b.exp(i)


def test_builder_rejects_unknown_op_and_bad_attributes():
    b, x, _ = small()
    with pytest.raises(UnknownOpError, match="'conv9d'"):
        b.op("conv9d", x)
    with pytest.raises(AttributeSchemaError, match="missing required attribute 'dtype'"):
        b.op("cast", x)
    with pytest.raises(AttributeSchemaError, match="unknown attribute 'scale'"):
        b.op("exp", x, scale=2)


def test_duplicate_names():
    b, x, _ = small()
    with pytest.raises(DuplicateNameError, match="'x'"):
        b.input("x", (1,))
    with pytest.raises(DuplicateNameError, match="output name 'o'"):
        Graph("g", [x.value], [], [], [("o", x.value), ("o", x.value)])


@pytest.mark.parametrize("make, err, match", [
    (lambda b: b.input("x", (2.5, 3)), ShapeError, r"dimension 2.5 in shape \(2.5, 3\)"),
    (lambda b: b.input("x", 5), ShapeError, "a shape is a sequence of integers, got 5"),
    (lambda b: b.input("x", (2, -1)), ShapeError, r"negative dimension in shape \(2, -1\)"),
    (lambda b: b.input("x", (2 ** 40, 2 ** 40)), ShapeError, r"elements; at most 2\*\*56"),
    (lambda b: b.param("w", (2,), init=np.ones(3)), GraphError,
     r"param 'w': initial value does not fit f32\[2\]"),
    (lambda b: b.param("w", init=[[1.0, 2.0], [3.0]]), GraphError,
     "param 'w': initial value does not fit f32"),
    (lambda b: b.const([[1, 2], [3]]), GraphError, "constant: setting an array element"),
    (lambda b: b.const("abc"), GraphError, "constant 'abc': numbers and bools only"),
])
def test_bad_shapes_and_values_are_clear_errors(make, err, match):
    with pytest.raises(err, match=match):
        make(Builder("g"))


def test_verifier_catches_dangling_value_from_another_graph():
    b, x, _ = small()
    other = Builder("other")
    z = other.input("z", (3, 2))
    bad = Node("exp", [z.value], {}, [TensorType((3, 2))], "e")
    g = Graph("g", [x.value], [], [bad], [("o", bad.out)])
    with pytest.raises(DanglingValueError, match=r"node %e \(exp\) reads %z"):
        verify(g)


def test_verifier_catches_wrong_declared_type():
    b, x, _ = small()
    bad = Node("exp", [x.value], {}, [TensorType((2, 3))], "e")
    g = Graph("g", [x.value], [], [bad], [("o", bad.out)])
    with pytest.raises(ShapeError, match=r"node %e = exp: declared types \['f32\[2, 3\]'\]"):
        verify(g)


def test_verifier_catches_out_of_order_nodes_as_dangling():
    b, x, _ = small()
    e = b.exp(x)
    t = b.tanh(e)
    g = Graph("g", [x.value], [], [t.node, e.node], [("o", t.value)])
    with pytest.raises(DanglingValueError, match="not defined before it"):
        verify(g)


def test_verifier_checks_parameter_values():
    b, x, w = small()
    g = b.build(outputs={"o": x * w})
    verify(g)
    bad = g.with_param_values({"w": np.zeros((3,), np.float32)})
    with pytest.raises(ShapeError, match="parameter 'w' is declared f32\\[2\\]"):
        verify(bad)


def test_reference_runner_checks_inputs():
    b, x, w = small()
    g = b.build(outputs={"o": x * w})
    with pytest.raises(InputError, match=r"input 'x': expected shape \(3, 2\)"):
        run_graph(g, {"x": np.zeros((2, 3), np.float32)})
    with pytest.raises(InputError, match="missing input 'x'"):
        run_graph(g, {})
    with pytest.raises(InputError, match="no input"):
        run_graph(g, {"x": np.zeros((3, 2), np.float32), "q": 1})
    with pytest.raises(InputError, match="expected dtype f32"):
        run_graph(g, {"x": np.zeros((3, 2), np.int32)})


def test_errors_form_one_family():
    for cls in (ShapeError, DTypeError, UnknownOpError, AttributeSchemaError, DanglingValueError,
                DuplicateNameError, InputError):
        assert issubclass(cls, GraphError)


def test_cse_in_builder_and_immutability():
    b, x, _ = small()
    a1 = b.exp(x)
    a2 = b.exp(x)
    assert a1.node is a2.node  # hash-consed
    with pytest.raises(AttributeError, match="immutable"):
        a1.node.op = "log"
    with pytest.raises(TypeError):
        a1.node.attrs["x"] = 1
