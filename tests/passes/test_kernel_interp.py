"""The kernel IR by hand: index arithmetic against integer brute force, and hand-written kernels
run by the numpy interpreter against plain numpy expressions of the same computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.backends.reference.kernel_interp import run_schedule
from graphc.ir.errors import GraphError, InputError
from graphc.ir.kernel import (
    Acc,
    Bound,
    Buffer,
    Const,
    ConvKernel,
    InBounds,
    IndexValue,
    Ix,
    LibraryKernel,
    Load,
    LoopKernel,
    MatmulKernel,
    Op,
    Operand,
    RandomUniform,
    ReduceRef,
    Reduction,
    Schedule,
    Store,
    Sweep,
    delinearize,
    floordiv,
    ix,
    linearize,
    make_bound,
    mod,
)
from graphc.ir.kernel_text import print_kernel
from graphc.ir.ops.random import ref_random_uniform
from graphc.ir.types import TensorType

I0, I1, I2, R0, R1 = ix("i0"), ix("i1"), ix("i2"), ix("r0"), ix("r1")


def schedule(kernels, buffers: dict[str, tuple[tuple[int, ...], str, str]], outputs=None,
             constants=None) -> Schedule:
    bufs = {n: Buffer(n, TensorType(shape, dt), kind) for n, (shape, dt, kind) in
            buffers.items()}
    ins = tuple(n for n, b in bufs.items() if b.kind == "input")
    outs = outputs or tuple((n, n) for n, b in bufs.items() if b.kind == "output")
    return Schedule("t", tuple(kernels), bufs, ins, (), outs, constants or {}, {})


def load(buf, *index, mask=(), dtype="f32"):
    return Load(buf, tuple(index), tuple(mask), dtype)


# -- index arithmetic ------------------------------------------------------------------------------


def eval_ix(e: Ix, env: dict[str, int]) -> int:
    from graphc.ir.kernel import FloorDiv, Mod, Var

    total = e.const
    for a, c in e.terms:
        if isinstance(a, Var):
            val = env[a.name]
        elif isinstance(a, FloorDiv):
            val = eval_ix(a.arg, env) // a.d
        else:
            assert isinstance(a, Mod)
            val = eval_ix(a.arg, env) % a.d
        total += c * val
    return total


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3),
       st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(-5, 5),
       st.integers(1, 6))
def test_reshape_index_maps_and_division_match_brute_force(out_shape, mid, shift, d):
    """delinearize(linearize(i)) in any shape of the same size equals numpy's unravel_index,
    and simplified floordiv/mod of shifted expressions equal Python's // and %."""
    out_shape = tuple(out_shape)
    size = int(np.prod(out_shape))
    factors = [f for f in range(1, size + 1) if size % f == 0]
    in_shape = (factors[len(mid) % len(factors)], size // factors[len(mid) % len(factors)])
    ext = {f"i{k}": n for k, n in enumerate(out_shape)}
    idx = tuple(ix(f"i{k}") for k in range(len(out_shape)))
    lin = linearize(idx, out_shape)
    back = delinearize(lin, in_shape, ext)
    shifted = lin + shift
    q, r = floordiv(shifted, d, ext), mod(shifted, d, ext)
    for point in itertools.product(*(range(n) for n in out_shape)):
        env = {f"i{k}": v for k, v in enumerate(point)}
        flat = int(np.ravel_multi_index(point, out_shape))
        assert tuple(eval_ix(e, env) for e in back) == np.unravel_index(flat, in_shape)
        assert eval_ix(q, env) == (flat + shift) // d
        assert eval_ix(r, env) == (flat + shift) % d



@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(-48, 48), st.integers(1, 9)), min_size=1, max_size=3),
       st.integers(-20, 20), st.sampled_from([2, 4, 6, 8, 12, 16, 32, 64]))
def test_division_of_sums_matches_brute_force(terms, const, d):
    """floordiv/mod of c1*i0 + c2*i1 + ... + const against Python's // and %, for any mix of
    coefficients: the rules that split off a small remainder must only fire when exact."""
    ext = {f"i{k}": n for k, (_, n) in enumerate(terms)}
    e = Ix.of([(ix(f"i{k}").terms[0][0], c) for k, (c, _) in enumerate(terms) if c], const)
    q, r = floordiv(e, d, ext), mod(e, d, ext)
    for point in itertools.product(*(range(n) for _, n in terms)):
        env = {f"i{k}": v for k, v in enumerate(point)}
        value = eval_ix(e, env)
        assert eval_ix(q, env) == value // d, (str(e), d, str(q), env)
        assert eval_ix(r, env) == value % d, (str(e), d, str(r), env)


def test_a_small_remainder_splits_off_a_division():
    """(i + 1024 r) // 32768 with i < 1024 is r // 32: a column reduction over the rows of a
    [T*B, 4H] reshape of [T, B, 4H] reads time step r // B, uniform across a vector of i."""
    ext = {"i0": 1024, "r0": 2048}
    e = I0 + ix("r0") * 1024
    assert str(floordiv(e, 32768, ext)) == "r0 // 32"
    assert str(mod(e, 32768, ext)) == "i0 + (r0 % 32)*1024"

def test_a_split_index_joined_again_is_the_plain_index():
    """(X // d)·d + X % d is X: a flat plane index split into rows and columns (a 1x1
    convolution's output as a matmul's columns) and linearized back is affine again, scaled,
    shifted or nested; a split that does not join (coefficients that differ) stays split."""
    ext = {"n": 1024, "b": 8, "m": 32}
    n = ix("n")
    rows, cols = floordiv(n, 32, ext), mod(n, 32, ext)
    assert str(linearize((ix("b"), ix("m"), rows, cols), (8, 32, 32, 32))) \
        == "b*32768 + m*1024 + n"
    assert str(floordiv(n + 3, 32, ext) * 64 + mod(n + 3, 32, ext) * 2 + 1) == "n*2 + 7"
    h, w = delinearize(n, (4, 16, 16), ext)[1:]
    assert str(linearize((floordiv(n, 256, ext), h, w), (4, 16, 16))) == "n"
    assert "%" in str(rows * 31 + cols)
    for v in range(1024):
        assert eval_ix(rows * 31 + cols, {"n": v}) == (v // 32) * 31 + v % 32


def test_index_simplification_reads_like_the_layout():
    ext = {"i0": 4, "i1": 96}
    # flatten [4, 6, 4, 4] -> [4, 96] read back in the 4-d layout
    got = delinearize(I0 * 96 + I1, (4, 6, 4, 4), ext)
    assert [str(e) for e in got] == ["i0", "i1 // 16", "(i1 // 4) % 4", "i1 % 4"]
    ext4 = {"i0": 4, "i1": 6, "i2": 4, "i3": 4}
    lin = linearize(tuple(ix(f"i{k}") for k in range(4)), (4, 6, 4, 4))
    assert [str(e) for e in delinearize(lin, (4, 96), ext4)] == ["i0", "i1*16 + i2*4 + i3"]
    assert make_bound(I0 - 1, 0, 4, 1, {"i0": 5}) == Bound(I0 - 1, 0, 4, 1)
    assert make_bound(I0 + 1, 0, 9, 1, {"i0": 5}) is True
    assert make_bound(I0 + 7, 0, 5, 1, {"i0": 5}) is False
    assert str(I0 * -2 + 5) == "-i0*2 + 5"


# -- loop kernels ----------------------------------------------------------------------------------


def test_pointwise_kernel_with_transpose_broadcast_and_slice(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal((5,)).astype(np.float32)
    # y = exp(x.T[1:4:2, :]) + b[1:4:2, None]: transpose, strided slice and broadcast as indices
    value = Op("add", (Op("exp", (load("x", I1, I0 * 2 + 1),), "f32"),
                       load("b", I0 * 2 + 1)), "f32")
    k = LoopKernel("k0", (2, 3), (), (), (Store("y", (I0, I1), value),))
    s = schedule([k], {"x": ((3, 5), "f32", "input"), "b": ((5,), "f32", "input"),
                       "y": ((2, 3), "f32", "output")})
    got = run_schedule(s, {"x": x, "b": b})["y"]
    want = np.exp(x.T[1:4:2, :]) + b[1:4:2, None]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_masked_load_pads_with_interior_and_select_fill(rng):
    x = rng.standard_normal((3,)).astype(np.float32)
    # pad low=2 high=1 interior=1: [f, f, x0, f, x1, f, x2, f] with fill f = -1
    shifted = I0 - 2
    bound = Bound(shifted, 0, 5, 2)
    inner = load("x", floordiv(shifted, 2, {"i0": 8}), mask=(bound,))
    value = Op("select", (InBounds((bound,)), inner, Const(-1.0, "f32")), "f32")
    k = LoopKernel("k0", (8,), (), (), (Store("y", (I0,), value),))
    s = schedule([k], {"x": ((3,), "f32", "input"), "y": ((8,), "f32", "output")})
    got = run_schedule(s, {"x": x})["y"]
    want = np.full(8, -1.0, np.float32)
    want[2:7:2] = x
    np.testing.assert_array_equal(got, want)


def test_persistent_softmax_kernel_three_sweeps(rng):
    x = rng.standard_normal((4, 7)).astype(np.float32)
    xe = load("x", I0, R0)
    e = Op("exp", (Op("sub", (xe, ReduceRef("m", "f32")), "f32"),), "f32")
    k = LoopKernel("k0", (4,), (7,), (
        Sweep((Reduction("m", "max", xe, "f32"),)),
        Sweep((Reduction("s", "sum", e, "f32"),)),
        Sweep((), (Store("y", (I0, R0), Op("div", (e, ReduceRef("s", "f32")), "f32")),))),
        (Store("sums", (I0,), ReduceRef("s", "f32")),))
    s = schedule([k], {"x": ((4, 7), "f32", "input"), "y": ((4, 7), "f32", "output"),
                       "sums": ((4,), "f32", "output")})
    out = run_schedule(s, {"x": x})
    ex = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(out["y"], ex / ex.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(out["sums"], ex.sum(1), rtol=1e-6)
    text = print_kernel(k)
    assert "$m = max %x[i0, r0]" in text and "%y[i0, r0] = div(" in text


def test_argmax_over_columns_takes_the_first_maximum():
    x = np.array([[1, 3, 3], [2, 0, 2], [5, 5, 5]], np.float32).T  # reduce over axis 0
    k = LoopKernel("k0", (3,), (3,), (Sweep((Reduction("a", "argmax", load("x", R0, I0),
                                                        "i64"),)),),
                   (Store("y", (I0,), ReduceRef("a", "i64")),))
    s = schedule([k], {"x": ((3, 3), "f32", "input"), "y": ((3,), "i64", "output")})
    np.testing.assert_array_equal(run_schedule(s, {"x": x})["y"], np.argmax(x, axis=0))


def test_iota_and_random_uniform_match_the_graph_ops():
    seed = np.array(12345, np.int64)
    counter = linearize((I0, I1), (3, 4))
    value = Op("add", (RandomUniform(load("seed"), counter, 2),
                       Op("cast", (IndexValue(I1, "i64"),), "f32", (("dtype", "f32"),))),
               "f32")
    k = LoopKernel("k0", (3, 4), (), (), (Store("y", (I0, I1), value),))
    s = schedule([k], {"seed": ((), "i64", "input"), "y": ((3, 4), "f32", "output")})
    got = run_schedule(s, {"seed": seed})["y"]
    want = ref_random_uniform([seed], {"shape": (3, 4), "stream": 2}) + np.arange(4)
    np.testing.assert_array_equal(got, want.astype(np.float32))


# -- templates and library kernels -----------------------------------------------------------------


def test_matmul_template_with_transposed_operand_broadcast_batch_and_epilogue(rng):
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    w = rng.standard_normal((5, 4)).astype(np.float32)  # used transposed: [4, 5]
    bias = rng.standard_normal((5,)).astype(np.float32)
    m, n, k, b0 = ix("m"), ix("n"), ix("k"), ix("b0")
    kern = MatmulKernel(
        "k0", (2,), 3, 5, 4,
        Operand(("b0", "m", "k"), (2, 3, 4), load("a", b0, m, k)),
        Operand(("b0", "k", "n"), (2, 4, 5), load("w", n, k)),
        "f32", (Store("y", (b0, m, n), Op("relu", (Op("add", (Acc("f32"), load("bias", n)),
                                                       "f32"),), "f32")),
                Store("raw", (b0, m, n), Acc("f32"))))
    s = schedule([kern], {"a": ((2, 3, 4), "f32", "input"), "w": ((5, 4), "f32", "input"),
                          "bias": ((5,), "f32", "input"), "y": ((2, 3, 5), "f32", "output"),
                          "raw": ((2, 3, 5), "f32", "output")})
    out = run_schedule(s, {"a": a, "w": w, "bias": bias})
    np.testing.assert_allclose(out["raw"], a @ w.T, rtol=1e-5)
    np.testing.assert_allclose(out["y"], np.maximum(a @ w.T + bias, 0), rtol=1e-5)


def test_conv_template_runs_the_conv_op_with_an_epilogue(rng):
    import torch
    import torch.nn.functional as F

    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    xv, wv = ("x0", "x1", "x2", "x3"), ("w0", "w1", "w2", "w3")
    attrs = (("stride", (2, 1)), ("padding", (1, 1, 0, 2)), ("lhs_dilation", (1, 1)),
             ("rhs_dilation", (1, 1)), ("groups", 1))
    kern = ConvKernel("k0", Operand(xv, x.shape, load("x", *map(ix, xv))),
                      Operand(wv, w.shape, load("w", *map(ix, wv))), (2, 4, 3, 6), attrs,
                      "f32", (Store("y", tuple(map(ix, ("n", "o", "p0", "p1"))),
                                    Op("tanh", (Acc("f32"),), "f32")),))
    s = schedule([kern], {"x": (x.shape, "f32", "input"), "w": (w.shape, "f32", "input"),
                          "y": ((2, 4, 3, 6), "f32", "output")})
    got = run_schedule(s, {"x": x, "w": w})["y"]
    want = torch.tanh(F.conv2d(F.pad(torch.from_numpy(x), (0, 2, 1, 1)), torch.from_numpy(w),
                               stride=(2, 1))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_library_scatter_add_accumulates_duplicates():
    x = np.zeros((4, 2), np.float32)
    idx = np.array([1, 3, 1], np.int64)
    upd = np.arange(6, dtype=np.float32).reshape(3, 2)
    k = LibraryKernel("k0", "scatter_add", ("x", "idx", "upd"), "y", (("axis", 0),))
    s = schedule([k], {"x": ((4, 2), "f32", "input"), "idx": ((3,), "i64", "input"),
                       "upd": ((3, 2), "f32", "input"), "y": ((4, 2), "f32", "output")})
    want = np.zeros((4, 2), np.float32)
    np.add.at(want, idx, upd)
    np.testing.assert_array_equal(run_schedule(s, {"x": x, "idx": idx, "upd": upd})["y"], want)


# -- errors ----------------------------------------------------------------------------------------


def test_out_of_bounds_load_and_double_write_are_graph_errors():
    bufs = {"x": ((4,), "f32", "input"), "y": ((4,), "f32", "output")}
    bad_load = LoopKernel("k0", (4,), (), (), (Store("y", (I0,), load("x", I0 + 1)),))
    with pytest.raises(GraphError, match="k0: load of %x axis 0 reads index 1..4"):
        run_schedule(schedule([bad_load], bufs), {"x": np.zeros(4, np.float32)})
    twice = LoopKernel("k0", (4,), (), (), (Store("y", (floordiv(I0, 2, {"i0": 4}),),
                                                  load("x", I0)),))
    with pytest.raises(GraphError, match="writes %y\\[0\\] 2 times"):
        run_schedule(schedule([twice], bufs), {"x": np.zeros(4, np.float32)})
    with pytest.raises(InputError, match="missing input 'x'"):
        run_schedule(schedule([bad_load], bufs), {})
