"""Textual IR: lossless round trip (property test on random graphs), golden form, parse errors
with line:column."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.backends.reference import run_graph
from graphc.ir import (
    Builder,
    CycleError,
    DanglingValueError,
    DuplicateNameError,
    ParseError,
    ShapeError,
    UnknownOpError,
    parse_graph,
    print_graph,
)
from graphc.ir.errors import AttributeSchemaError
from graphc.ir.text import format_attr

UNARY = ["neg", "abs", "exp", "tanh", "sigmoid", "relu", "softplus", "erf"]
BINARY = ["add", "sub", "mul", "maximum", "minimum"]


@st.composite
def random_graphs(draw):
    """Random valid graphs of elementwise ops, broadcasting, constants, casts and selects."""
    b = Builder(draw(st.sampled_from(["g", "net", "model_1"])), seed=draw(st.integers(0, 9)))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
    pool = [b.input("x", shape)]
    if draw(st.booleans()):
        pool.append(b.param("w", shape[-1:] or (1,), frozen=draw(st.booleans())))
    for i in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["unary", "binary", "const", "select", "cast"]))
        a = draw(st.sampled_from(pool))
        name = draw(st.sampled_from([None, None, f"h{i}", "h", "x.y"]))
        if kind == "unary":
            t = b.op(draw(st.sampled_from(UNARY)), a, name=name)
        elif kind == "binary":
            t = b.op(draw(st.sampled_from(BINARY)), a, draw(st.sampled_from(pool)), name=name)
        elif kind == "const":
            v = draw(st.floats(-1e6, 1e6, allow_nan=False, width=32))
            t = a * v
        elif kind == "select":
            t = b.select(a > 0.5, a, draw(st.sampled_from(pool)))
        else:
            t = b.cast(b.cast(a, dtype="f16"), dtype="f32")
        pool.append(t)
    n_out = draw(st.integers(1, 3))
    outs = {f"out{k}": draw(st.sampled_from(pool[1:] or pool)) for k in range(n_out)}
    return b.build(outputs=outs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_print_parse_roundtrip_is_lossless(graph):
    text = print_graph(graph)
    again = parse_graph(text)
    assert print_graph(again) == text
    assert again.output_names == graph.output_names
    assert [v.type for v in again.inputs] == [v.type for v in graph.inputs]
    assert again.frozen_params() == graph.frozen_params()
    # Same structure means same values.
    x = np.random.default_rng(0).standard_normal(graph.inputs[0].shape).astype(np.float32)
    p = {k: v for k, v in graph.param_values.items()}
    r1 = run_graph(graph, {"x": x}, p)
    r2 = run_graph(again, {"x": x}, p)
    for k in r1:
        np.testing.assert_array_equal(r1[k], r2[k])


def test_golden_text_of_the_seed_unit():
    b = Builder("unit")
    x = b.input("x", (4, 2))
    b.param("w", (2, 1))
    h3 = b.sigmoid(x * 2.0 + 1.0, name="h3")
    g = b.build(outputs={"h": h3})
    text = print_graph(g)
    assert text == (
        "graph unit(%x: f32[4, 2]) params(%w: f32[2, 1]) {\n"
        "  %0 = constant() {value=2.0} : f32[]\n"
        "  %1 = mul(%x, %0) : f32[4, 2]\n"
        "  %2 = constant() {value=1.0} : f32[]\n"
        "  %3 = add(%1, %2) : f32[4, 2]\n"
        "  %h3 = sigmoid(%3) : f32[4, 2]\n"
        "  return h=%h3\n"
        "}\n")


def test_attribute_values_roundtrip():
    for v in [1, -3, 0.1, 1e-5, 1e30, -2.5, math.inf, -math.inf, True, False, None, "same",
              'q"uote', (1, 2), (1,), (), ((1, 2), (3, 4)), (0.5, "a", None)]:
        text = ("graph g(%x: f32[2]) {\n  %c = cast(%x) {dtype=\"f32\"} : f32[2]\n"
                "  return y=%c\n}\n")
        assert format_attr(v)  # printable
        from graphc.ir.text import _Parser

        p = _Parser("(" + format_attr(v) + ",)", "<attr>")
        assert p.attr() == (v,) or (isinstance(v, float) and math.isnan(v))
        assert parse_graph(text)  # sanity
    nan = _Parser(format_attr(math.nan), "<attr>").attr()
    assert math.isnan(nan)


def test_multi_output_nodes_use_hash_syntax():
    text = ("graph g(%x: f32[3]) {\n"
            "  %p:2 = fake2(%x) : f32[3], f32[3]\n"
            "  return a=%p#0, b=%p#1\n}\n")
    with pytest.raises(UnknownOpError, match="fake2"):
        parse_graph(text)


def test_comments_and_whitespace_are_ignored():
    text = ("// a comment\ngraph g( %x : f32[ 2 ] ) {   // another\n"
            "  %y = exp( %x ) : f32[2]\n  return out = %y\n}\n")
    g = parse_graph(text)
    assert print_graph(g) == "graph g(%x: f32[2]) {\n  %y = exp(%x) : f32[2]\n  return out=%y\n}\n"


@pytest.mark.parametrize("text, err, match", [
    ("graph g(%x: f32[2]) {\n  %y = exp(%x) f32[2]\n  return o=%y\n}", ParseError,
     r"<text>:2:\d+: expected ':'"),
    ("graph g(%x: f33[2]) {\n  return o=%x\n}", ParseError, r"1:13: expected a dtype"),
    ("graph g(%x: f32[2]) {\n  %y = exp(%x) : f32[2]\n", ParseError, r"expected 'return'"),
    ("graph g(%x: f32[2]) {\n  %y = exp(%z) : f32[2]\n  return o=%y\n}", DanglingValueError,
     r"2:12: %z is not defined"),
    ("graph g(%x: f32[2]) {\n  %a = exp(%b) : f32[2]\n  %b = exp(%a) : f32[2]\n"
     "  return o=%b\n}", CycleError, r"cycle through %\w -> %\w -> %\w"),
    ("graph g(%x: f32[2]) {\n  %a = exp(%x) : f32[2]\n  %c = add(%a, %later) : f32[2]\n"
     "  %later = exp(%x) : f32[2]\n  return o=%c\n}", DanglingValueError,
     r"%later is used before its definition"),
    ("graph g(%x: f32[2]) {\n  %y = frobnicate(%x) : f32[2]\n  return o=%y\n}",
     UnknownOpError, r"2:8: .*unknown op 'frobnicate'"),
    ("graph g(%x: f32[2], %w: f32[3]) {\n  %y = add(%x, %w) : f32[2]\n  return o=%y\n}",
     ShapeError, r"2:8: .*%y = add\(f32\[2\], f32\[3\]\).*do not broadcast"),
    ("graph g(%x: f32[2]) {\n  %y = exp(%x) : f32[3]\n  return o=%y\n}", ShapeError,
     r"declared f32\[3\] but the op gives f32\[2\]"),
    ("graph g(%x: f32[2]) {\n  %y = cast(%x) {dtype=\"f99\"} : f32[2]\n  return o=%y\n}",
     AttributeSchemaError, r"attribute dtype='f99' must be a dtype name"),
    ("graph g(%x: f32[2]) {\n  %y = cast(%x) {colour=1, dtype=\"f32\"} : f32[2]\n"
     "  return o=%y\n}", AttributeSchemaError, r"unknown attribute 'colour'"),
    ("graph g(%x: f32[2]) {\n  %y = exp(%x) : f32[2]\n  %y = exp(%y) : f32[2]\n"
     "  return o=%y\n}", DuplicateNameError, r"3:3: value %y is defined twice"),
    ("graph g(%x: f32[2], %x: f32[2]) {\n  return o=%x\n}", DuplicateNameError, r"%x"),
    ("graph g(%x: f32[2]) {\n  return o=%x, o=%x\n}", DuplicateNameError, r"output name 'o'"),
    ("graph g(%x: f32[2]) {\n  %y = exp(%x, %x) : f32[2]\n  return o=%y\n}",
     AttributeSchemaError, r"takes 1 operands, got 2"),
    ("graph g(%x: f32[2]) { ? }", ParseError, r"1:23: unexpected character '\?'"),
    ("graph g(%x: f32[2.]) {\n  return o=%x\n}", ParseError,
     r"1:17: expected a non-negative integer dimension, got '2\.'"),
    ("graph g(%x: f32[2]) {\n  %a:2. = exp(%x) : f32[2]\n  return o=%a\n}", ParseError,
     r"2:6: expected a non-negative integer output count"),
    ("graph g(%x: f32[2]) {\n  %a = exp(%x) : f32[2]\n  return o=%a#1.\n}", ParseError,
     r"3:15: expected a non-negative integer output index, got '1\.'"),
])
def test_parse_errors_name_the_culprit(text, err, match):
    with pytest.raises(err, match=match):
        parse_graph(text)
