"""The simplify pass: golden text tests (input IR -> expected IR, written by hand), semantics
preserved on random graphs (hypothesis), and node counts shrinking on a real backward graph."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.text import parse_graph, print_graph
from graphc.ir.verify import verify
from graphc.passes import PassContext, SimplifyPass, autodiff, simplify

GOLDEN = {
    "identities": ("""
graph g(%x: f32[3], %y: f32[2, 3]) {
  %zero = constant() {value=0.0} : f32[]
  %one = constant() {value=1.0} : f32[]
  %a = add(%x, %zero) : f32[3]
  %m = mul(%one, %a) : f32[3]
  %d = div(%m, %one) : f32[3]
  %n1 = neg(%d) : f32[3]
  %n2 = neg(%n1) : f32[3]
  %s = sub(%n2, %zero) : f32[3]
  %z = add(%zero, %s) : f32[3]
  %out = mul(%z, %y) : f32[2, 3]
  return out=%out
}
""", """
graph g(%x: f32[3], %y: f32[2, 3]) {
  %out = mul(%x, %y) : f32[2, 3]
  return out=%out
}
"""),
    "fold_then_identity": ("""
graph g(%x: f32[2]) {
  %two = constant() {value=2.0} : f32[]
  %half = constant() {value=0.5} : f32[]
  %p = mul(%two, %half) : f32[]
  %y = mul(%x, %p) : f32[2]
  %v = constant() {shape=(2,), value=(1.0, 4.0)} : f32[2]
  %r = sqrt(%v) : f32[2]
  %out = add(%y, %r) : f32[2]
  return out=%out
}
""", """
graph g(%x: f32[2]) {
  %r = constant() {shape=(2,), value=(1.0, 2.0)} : f32[2]
  %out = add(%x, %r) : f32[2]
  return out=%out
}
"""),
    "movement": ("""
graph g(%x: f32[2, 3, 4]) {
  %t1 = transpose(%x) {perm=(1, 0, 2)} : f32[3, 2, 4]
  %t2 = transpose(%t1) {perm=(2, 1, 0)} : f32[4, 2, 3]
  %u1 = transpose(%x) {perm=(2, 0, 1)} : f32[4, 2, 3]
  %u2 = transpose(%u1) {perm=(1, 2, 0)} : f32[2, 3, 4]
  %r1 = reshape(%u2) {shape=(6, 4)} : f32[6, 4]
  %r2 = reshape(%r1) {shape=(24,)} : f32[24]
  %r3 = reshape(%x) {shape=(2, 3, 4)} : f32[2, 3, 4]
  %b = broadcast(%r3) {shape=(2, 3, 4)} : f32[2, 3, 4]
  %c = cast(%b) {dtype="f32"} : f32[2, 3, 4]
  return t=%t2, r=%r2, c=%c
}
""", """
graph g(%x: f32[2, 3, 4]) {
  %t2 = transpose(%x) {perm=(2, 0, 1)} : f32[4, 2, 3]
  %r2 = reshape(%x) {shape=(24,)} : f32[24]
  return t=%t2, r=%r2, c=%x
}
"""),
    "cse_and_dce": ("""
graph g(%x: f32[3]) {
  %a = exp(%x) : f32[3]
  %b = exp(%x) : f32[3]
  %dead = log(%x) : f32[3]
  %c = add(%a, %b) : f32[3]
  %d = add(%a, %b) : f32[3]
  %e = mul(%c, %d) : f32[3]
  return e=%e
}
""", """
graph g(%x: f32[3]) {
  %a = exp(%x) : f32[3]
  %c = add(%a, %a) : f32[3]
  %e = mul(%c, %c) : f32[3]
  return e=%e
}
"""),
    "zero_times_x_only_for_integers": ("""
graph g(%i: i32[3], %f: f32[3]) {
  %zi = constant() {dtype="i32", value=0} : i32[]
  %a = mul(%i, %zi) : i32[3]
  %zf = constant() {value=0.0} : f32[]
  %b = mul(%f, %zf) : f32[3]
  return a=%a, b=%b
}
""", """
graph g(%i: i32[3], %f: f32[3]) {
  %a = constant() {dtype="i32", shape=(3,), value=0} : i32[3]
  %zf = constant() {value=0.0} : f32[]
  %b = mul(%f, %zf) : f32[3]
  return a=%a, b=%b
}
"""),
    "select_and_broadcast_up": ("""
graph g(%x: f32[3], %y: f32[2, 3], %c: bool[2, 3]) {
  %t = constant() {dtype="bool", value=true} : bool[]
  %s = select(%t, %x, %y) : f32[2, 3]
  %f = constant() {dtype="bool", shape=(2, 3), value=false} : bool[2, 3]
  %s2 = select(%f, %x, %y) : f32[2, 3]
  %same = select(%c, %y, %y) : f32[2, 3]
  %zeros = constant() {shape=(2, 3), value=0.0} : f32[2, 3]
  %a = add(%x, %zeros) : f32[2, 3]
  return s=%s, s2=%s2, same=%same, a=%a
}
""", """
graph g(%x: f32[3], %y: f32[2, 3], %c: bool[2, 3]) {
  %s = broadcast(%x) {shape=(2, 3)} : f32[2, 3]
  return s=%s, s2=%y, same=%y, a=%s
}
"""),
    "pow_by_one_and_two": ("""
graph g(%x: f32[2, 3], %v: f32[3]) {
  %two = constant() {value=2.0} : f32[]
  %sq = pow(%x, %two) : f32[2, 3]
  %one = constant() {shape=(3,), value=1.0} : f32[3]
  %id = pow(%x, %one) : f32[2, 3]
  %up = pow(%v, %two) : f32[3]
  %three = constant() {value=3.0} : f32[]
  %cube = pow(%x, %three) : f32[2, 3]
  return sq=%sq, id=%id, up=%up, cube=%cube
}
""", """
graph g(%x: f32[2, 3], %v: f32[3]) {
  %sq = mul(%x, %x) : f32[2, 3]
  %up = mul(%v, %v) : f32[3]
  %three = constant() {value=3.0} : f32[]
  %cube = pow(%x, %three) : f32[2, 3]
  return sq=%sq, id=%x, up=%up, cube=%cube
}
"""),
    # rows: the unrolled steps x_t of xs, concatenated back, are xs itself (a reshape); tail:
    # a slice and a reshape would outgrow the concat while its pieces stay used; gap: out of
    # order; cols: one slice along axis 1; whole and all: m itself
    "concat_of_consecutive_slices": ("""
graph g(%xs: f32[3, 2, 3], %m: f32[6, 5]) {
  %s0 = slice(%xs) {start=(0, 0, 0), stop=(1, 2, 3), step=(1, 1, 1)} : f32[1, 2, 3]
  %x0 = reshape(%s0) {shape=(2, 3)} : f32[2, 3]
  %s1 = slice(%xs) {start=(1, 0, 0), stop=(2, 2, 3), step=(1, 1, 1)} : f32[1, 2, 3]
  %x1 = reshape(%s1) {shape=(2, 3)} : f32[2, 3]
  %s2 = slice(%xs) {start=(2, 0, 0), stop=(3, 2, 3), step=(1, 1, 1)} : f32[1, 2, 3]
  %x2 = reshape(%s2) {shape=(2, 3)} : f32[2, 3]
  %rows = concat(%x0, %x1, %x2) {axis=0} : f32[6, 3]
  %tail = concat(%x1, %x2) {axis=0} : f32[4, 3]
  %gap = concat(%x2, %x0) {axis=0} : f32[4, 3]
  %c0 = slice(%m) {start=(0, 1), stop=(6, 3), step=(1, 1)} : f32[6, 2]
  %c1 = slice(%m) {start=(0, 3), stop=(6, 4), step=(1, 1)} : f32[6, 1]
  %cols = concat(%c0, %c1) {axis=1} : f32[6, 3]
  %r0 = slice(%m) {start=(0, 0), stop=(2, 5), step=(1, 1)} : f32[2, 5]
  %r1 = slice(%m) {start=(2, 0), stop=(6, 5), step=(1, 1)} : f32[4, 5]
  %whole = concat(%r0, %r1) {axis=0} : f32[6, 5]
  %all = slice(%m) {start=(0, 0), stop=(6, 5), step=(1, 1)} : f32[6, 5]
  return rows=%rows, tail=%tail, gap=%gap, cols=%cols, whole=%whole, all=%all
}
""", """
graph g(%xs: f32[3, 2, 3], %m: f32[6, 5]) {
  %s0 = slice(%xs) {start=(0, 0, 0), step=(1, 1, 1), stop=(1, 2, 3)} : f32[1, 2, 3]
  %x0 = reshape(%s0) {shape=(2, 3)} : f32[2, 3]
  %s1 = slice(%xs) {start=(1, 0, 0), step=(1, 1, 1), stop=(2, 2, 3)} : f32[1, 2, 3]
  %x1 = reshape(%s1) {shape=(2, 3)} : f32[2, 3]
  %s2 = slice(%xs) {start=(2, 0, 0), step=(1, 1, 1), stop=(3, 2, 3)} : f32[1, 2, 3]
  %x2 = reshape(%s2) {shape=(2, 3)} : f32[2, 3]
  %rows = reshape(%xs) {shape=(6, 3)} : f32[6, 3]
  %tail = concat(%x1, %x2) {axis=0} : f32[4, 3]
  %gap = concat(%x2, %x0) {axis=0} : f32[4, 3]
  %cols = slice(%m) {start=(0, 1), step=(1, 1), stop=(6, 4)} : f32[6, 3]
  return rows=%rows, tail=%tail, gap=%gap, cols=%cols, whole=%m, all=%m
}
"""),
    "fold_limit_keeps_big_constants": ("""
graph g(%x: f32[100]) {
  %i = iota() {axis=0, dtype="f32", shape=(100,)} : f32[100]
  %e = exp(%i) : f32[100]
  %k = constant() {shape=(100,), value=3.0} : f32[100]
  %n = neg(%k) : f32[100]
  %y = mul(%x, %e) : f32[100]
  %z = add(%y, %n) : f32[100]
  return z=%z
}
""", """
graph g(%x: f32[100]) {
  %i = iota() {axis=0, dtype="f32", shape=(100,)} : f32[100]
  %e = exp(%i) : f32[100]
  %n = constant() {shape=(100,), value=-3.0} : f32[100]
  %y = mul(%x, %e) : f32[100]
  %z = add(%y, %n) : f32[100]
  return z=%z
}
"""),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden(case):
    before, after = GOLDEN[case]
    got = verify(simplify(verify(parse_graph(before.lstrip()))))
    assert print_graph(got) == after.lstrip()


def test_constants_differing_in_the_sign_of_zero_stay_apart():
    """0.0 == -0.0 in Python, but x / -0.0 is -inf: neither the builder's CSE nor simplify
    merges the two constants."""
    b = Builder("zeros")
    x = b.input("x", (3,))
    pos, neg = b.const(0.0), b.const(-0.0)
    assert pos.value is not neg.value
    g = b.build(outputs={"p": x / pos, "n": x / neg, "m": b.maximum(x * 0.0, neg)})
    feed = {"x": np.array([1.0, -2.0, 0.5], np.float32)}
    with np.errstate(divide="ignore"):
        for graph in (g, simplify(g)):
            got = run_graph(graph, feed)
            np.testing.assert_array_equal(got["p"], [np.inf, -np.inf, np.inf])
            np.testing.assert_array_equal(got["n"], [-np.inf, np.inf, -np.inf])


def test_simplify_is_idempotent_on_golden_outputs():
    for _, after in GOLDEN.values():
        g = parse_graph(after.lstrip())
        assert print_graph(simplify(g)) == after.lstrip()


# -- semantics on random graphs ------------------------------------------------------------------

SHAPE = (2, 3)
BINARY = ("add", "sub", "mul", "maximum")
UNARY = ("neg", "tanh", "sigmoid", "abs")


def _random_graph(data) -> tuple:
    b = Builder("random")
    pool = [b.input("x", SHAPE), b.input("y", SHAPE), b.input("v", SHAPE[1:])]
    consts = [0.0, 1.0, -1.0, 2.0]
    for _ in range(data.draw(st.integers(3, 14), label="n_ops")):
        kind = data.draw(st.sampled_from(["unary", "binary", "const", "move", "select"]))
        a = data.draw(st.sampled_from(pool))
        if kind == "unary":
            pool.append(b.op(data.draw(st.sampled_from(UNARY)), a))
        elif kind == "binary":
            other = data.draw(st.sampled_from(pool))
            pool.append(b.op(data.draw(st.sampled_from(BINARY)), a, other))
        elif kind == "const":
            c = b.const(data.draw(st.sampled_from(consts)),
                        shape=data.draw(st.sampled_from([(), SHAPE[1:], SHAPE])))
            op = data.draw(st.sampled_from(["add", "sub", "mul", "div"]))
            pool.append(b.op(op, a, c) if data.draw(st.booleans()) or op == "div"
                        else b.op(op, c, a))
        elif kind == "move":
            if a.shape == SHAPE:
                t = a.transpose(1, 0).transpose(1, 0) if data.draw(st.booleans()) else \
                    a.reshape(6).reshape(3, 2).reshape(SHAPE)
            else:
                t = b.broadcast_to(b.broadcast_to(a, (1, 3)), SHAPE)
            pool.append(t)
        else:
            cond = b.const(data.draw(st.booleans()), dtype="bool")
            pool.append(b.select(cond, a, data.draw(st.sampled_from(pool))))
    outs = {f"o{i}": t for i, t in enumerate(pool[-3:])}
    return b.build(outputs=outs)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_simplify_preserves_values_on_random_graphs(data):
    g = verify(_random_graph(data))
    s = verify(simplify(g))
    assert len(s.nodes) <= len(g.nodes)
    assert [v.type for _, v in s.outputs] == [v.type for _, v in g.outputs]
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=SHAPE).astype(np.float32),
            "y": rng.normal(size=SHAPE).astype(np.float32),
            "v": rng.normal(size=SHAPE[1:]).astype(np.float32)}
    want, got = run_graph(g, feed), run_graph(s, feed)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, equal_nan=True, err_msg=k)
    assert print_graph(simplify(s)) == print_graph(s)  # a fixed point


# -- a real backward graph -------------------------------------------------------------------------


def _mlp_gradient():
    b = Builder("mlp", seed=0)
    x = b.input("x", (8, 4))
    y = b.input("y", (8, 3))
    h = b.dense(x, b.param("w1", (4, 16)), b.param("b1", (16,), init="zeros"), activation="relu")
    out = b.dense(h, b.param("w2", (16, 3)), b.param("b2", (3,), init="zeros"))
    loss = b.mse(out, y) + b.weight_decay(b.param("w3", (3, 3)), lam=1e-3)
    return autodiff(b.build(outputs={"loss": loss}), "loss")


def test_node_count_shrinks_on_a_backward_graph_and_values_stay():
    g = verify(_mlp_gradient())
    ctx = PassContext()
    s = verify(SimplifyPass().run(g, ctx))
    record = ctx.log[-1]
    assert record["pass"] == "simplify"
    assert record["nodes_before"] == len(g.nodes) and record["nodes_after"] == len(s.nodes)
    assert len(s.nodes) < len(g.nodes)
    rng = np.random.default_rng(1)
    feed = {"x": rng.normal(size=(8, 4)).astype(np.float32),
            "y": rng.normal(size=(8, 3)).astype(np.float32)}
    want, got = run_graph(g, feed), run_graph(s, feed)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=k)
    # the seed cotangent 1.0 multiplies nothing any more
    assert not any(n.op == "mul" and any(
        v.node.op == "constant" and v.node.attrs["value"] == 1.0 for v in n.inputs)
        for n in s.nodes)


def test_training_step_graph_keeps_its_values():
    from graphc.optim import Adam
    from graphc.train import train_step

    b = Builder("reg", seed=2)
    x = b.input("x", (5, 3))
    w = b.param("w", (3, 2))
    loss = b.mse(b.tanh(x @ w), b.const(0.25, shape=(5, 2)))
    step = train_step(b.build(outputs={"loss": loss}), "loss", Adam(lr=0.1, weight_decay=0.01))
    s = verify(simplify(step))
    assert len(s.nodes) < len(step.nodes) and s.output_names == step.output_names
    feed = {"x": np.random.default_rng(3).normal(size=(5, 3)).astype(np.float32),
            "step": np.int64(3)}
    want, got = run_graph(step, feed), run_graph(s, feed)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)


def test_empty_values_fold_and_keep_their_values(rng):
    """No node is left reading or computing an empty value, and every output (empty or
    computed from nothing) keeps the reference's value and shape."""
    b = Builder("empty")
    x, w, k = b.input("x", (3, 0)), b.input("w", (3, 4)), b.input("k", (0, 2))
    none = b.op("slice", w, start=(0, 4), stop=(3, 4), step=(1, 1))
    g = b.build(outputs={
        "e": (x + none).exp(), "s": x.sum(1), "m": x @ k, "x": x,
        "c": b.op("concat", none, w, x, axis=1),
        "p": b.op("pad", x, low=(1, 0), high=(0, 2), interior=(1, 0), value=-1.5),
        "pool": b.op("reduce_window", x, kind="max", window=(1, 1), padding=(0, 0, 1, 1)),
        "sc": b.op("scatter_add", w, b.input("i", (0,), "i64"), x, axis=1)})
    out = simplify(g)
    for n in out.nodes:
        if n.op not in ("constant", "input", "param"):
            assert all(v.type.size for v in n.inputs + n.outputs), n
    feeds = {"x": np.zeros((3, 0), np.float32), "w": rng.standard_normal((3, 4), np.float32),
             "k": np.zeros((0, 2), np.float32), "i": np.zeros((0,), np.int64)}
    want, got = run_graph(g, feeds), run_graph(out, feeds)
    for name, v in want.items():
        assert got[name].shape == v.shape
        np.testing.assert_array_equal(got[name], v, err_msg=name)


def test_fuse_refuses_a_gather_from_nothing():
    from graphc.ir.errors import GraphError
    from graphc.passes.fuse import fuse

    b = Builder("g")
    t = b.op("take", b.input("x", (0, 3)), b.input("i", (2,), "i64"), axis=0)
    with pytest.raises(GraphError, match=r"take\(f32\[0, 3\], i64\[2\]\) reads the empty "
                                         r"value f32\[0, 3\] into a non-empty result f32\[2, 3\]"):
        fuse(b.build(outputs={"t": t}))


def test_fuse_refuses_constant_positions_outside_the_axis():
    from graphc.ir.errors import GraphError
    from graphc.passes.fuse import fuse

    b = Builder("g")
    x = b.input("x", (3, 4))
    inside = b.const(np.array([0, 3, -4]), dtype="i64")
    fuse(b.build(outputs={"t": b.op("take", x, inside, axis=1)}))  # [-4, 4) is fine
    outside = b.const(np.array([[0, 1], [5, -1]]), dtype="i64")
    with pytest.raises(GraphError, match=r"take\(f32\[3, 4\], i64\[2, 2\]\): constant take: "
                                         r"index 5 \(at index position \(1, 0\)\) is out of "
                                         r"range \[-4, 4\) for axis 1"):
        fuse(b.build(outputs={"t": b.op("take", x, outside, axis=1)}))
    upd = b.input("u", (3, 2, 2))
    with pytest.raises(GraphError, match=r"constant scatter_add: index 5"):
        fuse(b.build(outputs={"s": b.op("scatter_add", x, outside, upd, axis=1)}))
