"""LLVM templates: matmul (batched, broadcast batch, transposed operands, epilogues with bias,
activations and residuals, several outputs, f64 and integers) and convolution (1-D/2-D/3-D,
stride, padding including negative, both dilations, groups, fused epilogues), against the
reference backend."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.ir.builder import Builder

from .conftest import check_llvm

FUSE = [True, False]


def _normal(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("fuse", FUSE)
def test_matmul_shapes_and_epilogues(fuse, rng):
    b = Builder("matmul")
    a = b.input("a", (37, 70))
    w = b.input("w", (70, 45))
    bias = b.input("bias", (45,))
    a3 = b.input("a3", (3, 9, 16))
    w3 = b.input("w3", (16, 130))
    bt = b.input("bt", (2, 1, 8, 16))
    wt = b.input("wt", (5, 8))
    r = b.input("r", (37, 45))
    y = a @ w
    b.output("dense_relu", (y + bias).relu())
    b.output("residual_tanh", (y + r).tanh())
    b.output("pre", y * 2.0)  # two stores from one product
    b.output("batched_bcast", a3 @ w3)
    b.output("transposed", w.T @ a.T)
    b.output("batch4d", b.broadcast_to(bt, (2, 3, 8, 16)).transpose(0, 1, 3, 2).relu() @
             b.broadcast_to(wt, (2, 3, 5, 8)).transpose(0, 1, 3, 2))
    b.output("row", b.op("slice", a, start=(3, 0), stop=(4, 70), step=(1, 1)) @ w)
    ins = {"a": _normal(rng, (37, 70)), "w": _normal(rng, (70, 45)),
           "bias": _normal(rng, (45,)), "a3": _normal(rng, (3, 9, 16)),
           "w3": _normal(rng, (16, 130)), "bt": _normal(rng, (2, 1, 8, 16)),
           "wt": _normal(rng, (5, 8)), "r": _normal(rng, (37, 45))}
    check_llvm(b.build(), ins, fuse=fuse, tol=dict(rtol=1e-4, atol=1e-4))


@pytest.mark.parametrize("rows", [1, 5, 7])
@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_few_rows_with_a_large_weight(rows, threads, rng):
    """A dense layer for a handful of rows whose weight (1.6 MiB) is too large to read in
    place: fewer rows than a register tile once made the GEMM write past its output."""
    b = Builder("few_rows")
    x = b.input("x", (rows, 1024))
    w = b.input("w", (1024, 400))
    bias = b.input("bias", (400,))
    b.output("y", (x @ w + bias).relu())
    ins = {"x": _normal(rng, (rows, 1024)), "w": _normal(rng, (1024, 400)),
           "bias": _normal(rng, (400,))}
    check_llvm(b.build(), ins, threads=threads, tol=dict(rtol=1e-4, atol=1e-4))


@pytest.mark.parametrize("dtype", ["f64", "i32"])
def test_matmul_other_dtypes(dtype, rng):
    b = Builder("mm_dt")
    a = b.input("a", (7, 11), dtype)
    w = b.input("w", (11, 20), dtype)
    b.output("y", a @ w + a.sum((1,), keepdims=True))
    np_dt = np.float64 if dtype == "f64" else np.int32
    ins = {"a": (rng.standard_normal((7, 11)) * 5).astype(np_dt),
           "w": (rng.standard_normal((11, 20)) * 5).astype(np_dt)}
    check_llvm(b.build(), ins, tol=dict(rtol=1e-12, atol=1e-12))


CONV_CASES = [
    # name, x shape, w shape, attrs
    ("1d_stride_pad", (2, 3, 17), (4, 3, 5), dict(stride=(2,), padding=(2, 1))),
    ("2d_same", (2, 3, 9, 8), (5, 3, 3, 3), dict(padding=(1, 1, 1, 1))),
    ("2d_stride_dilation", (1, 4, 11, 12), (6, 4, 3, 2),
     dict(stride=(2, 3), padding=(2, 1, 0, 2), rhs_dilation=(2, 1))),
    ("2d_groups", (2, 6, 7, 7), (9, 2, 3, 3), dict(groups=3, padding=(1, 0, 0, 1))),
    ("2d_depthwise", (1, 4, 6, 6), (4, 1, 3, 3), dict(groups=4, padding=(1, 1, 1, 1))),
    ("2d_lhs_dilation", (1, 2, 5, 4), (3, 2, 3, 3),
     dict(lhs_dilation=(2, 3), padding=(2, 2, 1, 0))),
    ("2d_negative_padding", (1, 2, 8, 8), (2, 2, 2, 2), dict(padding=(-1, 0, 1, -2))),
    ("3d", (1, 2, 4, 5, 6), (3, 2, 2, 3, 2), dict(stride=(1, 2, 1), padding=(0, 1, 1, 0, 0, 1))),
    ("1x1", (2, 8, 5, 5), (16, 8, 1, 1), {}),
]


@pytest.mark.parametrize("fuse", FUSE)
def test_conv_geometries(fuse, rng):
    b = Builder("convs")
    ins = {}
    for name, xs, ws, attrs in CONV_CASES:
        x = b.input(f"{name}.x", xs)
        w = b.input(f"{name}.w", ws)
        ins[f"{name}.x"], ins[f"{name}.w"] = _normal(rng, xs), _normal(rng, ws)
        b.output(name, b.op("conv", x, w, **attrs))
    check_llvm(b.build(), ins, fuse=fuse, tol=dict(rtol=1e-4, atol=1e-4))


@pytest.mark.parametrize("fuse", FUSE)
def test_conv_epilogues(fuse, rng):
    b = Builder("conv_epi")
    x = b.input("x", (2, 4, 10, 10))
    w = b.param("w", (8, 4, 3, 3), init="he")
    bias = b.param("bias", (8,), init="normal")
    res = b.input("res", (2, 8, 10, 10))
    y = b.conv2d(x, w, bias, padding="same")
    b.output("bias_relu", y.relu())
    b.output("residual", (y + res).relu())
    b.output("sigmoid_f64", y.astype("f64").sigmoid())
    ins = {"x": _normal(rng, (2, 4, 10, 10)), "res": _normal(rng, (2, 8, 10, 10))}
    check_llvm(b.build(), ins, fuse=fuse, tol=dict(rtol=1e-4, atol=1e-5))


def test_conv_f64(rng):
    b = Builder("conv64")
    x = b.input("x", (2, 3, 7, 7), "f64")
    w = b.input("w", (4, 3, 3, 3), "f64")
    b.output("y", b.op("conv", x, w, stride=(2, 2), padding=(1, 1, 1, 1)).tanh())
    check_llvm(b.build(), {"x": _normal(rng, (2, 3, 7, 7), np.float64),
                           "w": _normal(rng, (4, 3, 3, 3), np.float64)})


def test_matmuls_through_the_gemm_generator(rng):
    """Products big enough for the BLIS-style GEMM: transposed and broadcast operands, batch
    axes flattened or looped, epilogues with vector loads, gathers, constants and a second
    stored output, f64, operands with a fused prologue (a cast, a recomputed relu) staged in
    scratch memory first; every one reports the gemm path."""
    b = Builder("gemm_paths")
    a = b.input("a", (64, 72))
    w = b.input("w", (72, 80))
    bias = b.input("bias", (80,))
    col = b.input("col", (64, 1))
    a3 = b.input("a3", (3, 64, 72))
    at = b.input("at", (2, 3, 72, 64))
    y = a @ w
    b.output("bias_relu", (y + bias).relu())
    b.output("pre", y + col)  # a second store of the same product (per-row operand)
    b.output("post", ((y + col) * b.const(np.linspace(-1, 1, 80).astype(np.float32))).tanh())
    b.output("t_bias", (w.T @ a.T + b.reshape(bias, (80, 1))).sigmoid())  # transposes
    b.output("bcast", a3 @ w)  # B broadcast over the batch: stride 0
    b.output("looped", at.transpose(1, 0, 3, 2) @ w)  # batch axes permuted: a loop around
    a64 = b.input("a64", (64, 72), "f64")
    b.output("f64", (a64 @ a64.T).exp())
    b.output("cast_prologue", a.astype("f64") @ w.astype("f64"))  # staged in scratch
    r = a.relu()
    b.output("relu_prologue", (r @ w) * 2.0)
    b.output("relu_sum", r.sum((1,)))
    ins = {"a64": _normal(rng, (64, 72), np.float64),
           "a": _normal(rng, (64, 72)), "w": _normal(rng, (72, 80)), "bias": _normal(rng, (80,)),
           "col": _normal(rng, (64, 1)), "a3": _normal(rng, (3, 64, 72)),
           "at": _normal(rng, (2, 3, 72, 64))}
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-4, atol=1e-4),
                     per_output={"f64": dict(rtol=1e-12), "cast_prologue": dict(rtol=1e-12)})
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "matmul"]
    assert plans and all(p["matmul"] == "gemm" for p in plans), plans
    assert any(p["outer_batch"] for p in plans)
    assert any(p["staged"] for p in plans)


def test_batch_sharing_b_folds_into_gemm_rows(rng):
    """[T, M, K] @ [K, N] with B shared by every batch item: one GEMM of T*M rows. M = 7 is not
    a multiple of the row tile, so tiles straddle batch items, and the epilogue reads operands
    indexed by batch item and row (K = 300 spans two K blocks)."""
    b = Builder("fold_rows")
    xs, w = b.input("xs", (5, 7, 300)), b.input("w", (300, 80))
    per_item = b.input("per_item", (5, 7, 1))
    bias = b.input("bias", (80,))
    b.output("y", ((xs @ w) * per_item + bias).tanh())
    ins = {"xs": _normal(rng, (5, 7, 300)), "w": _normal(rng, (300, 80)) * 0.1,
           "per_item": _normal(rng, (5, 7, 1)), "bias": _normal(rng, (80,))}
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-4, atol=1e-4))
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "matmul"]
    assert [(p["matmul"], p["fold_rows"]) for p in plans] == [("gemm", True)], plans


@pytest.mark.parametrize("rows", [6, 13, 48, 49])
def test_gemm_with_few_rows_reads_b_in_place(rows, rng):
    """Up to DIRECT_B_MAX_ROWS rows GEMM reads B unpacked: row edges, a column edge (N = 100)
    and two K blocks, with an epilogue; 49 rows packs B again."""
    b = Builder("few_rows")
    a, w, bias = b.input("a", (rows, 300)), b.input("w", (300, 100)), b.input("bias", (100,))
    b.output("y", (a @ w + bias).relu())
    ins = {"a": _normal(rng, (rows, 300)), "w": _normal(rng, (300, 100)) * 0.1,
           "bias": _normal(rng, (100,))}
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-4, atol=1e-4))
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "matmul"]
    assert [p["matmul"] for p in plans] == ["gemm"]


@pytest.mark.parametrize("rows, cols", [(64, 10), (61, 16), (64, 80), (40, 17)])
def test_gemm_narrow_column_panels(rows, cols, rng):
    """Panels of at most one vector of valid columns (N = 10, 16, the last 16 of 80) take the
    one-vector microkernels; 17 columns keep the full width. Two K blocks, an epilogue."""
    b = Builder("narrow")
    a, w, bias = b.input("a", (rows, 300)), b.input("w", (300, cols)), b.input("bias", (cols,))
    b.output("y", (a @ w + bias).sigmoid())
    ins = {"a": _normal(rng, (rows, 300)), "w": _normal(rng, (300, cols)) * 0.1,
           "bias": _normal(rng, (cols,))}
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-4, atol=1e-5))
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "matmul"]
    assert [p["matmul"] for p in plans] == ["gemm"]


@pytest.mark.parametrize("depth, copied", [(100, 0), (1000, 1)])
def test_in_place_residual_through_gemm(depth, copied, rng):
    """(z @ w2) + r where r dies here: the planner writes the sum over r. GEMM keeps partial
    sums of K blocks in its output, which would destroy r before the epilogue reads it, so a
    product deeper than one K block copies r into scratch first and the epilogue reads that."""
    b = Builder("inplace")
    x, w = b.input("x", (64, depth)), b.input("w", (depth, 64))
    z, w2 = b.input("z", (64, depth)), b.input("w2", (depth, 64))
    r = (x @ w).relu()
    b.output("y", (z @ w2 + r).sum((1,)))
    g = b.build()
    ins = {"x": _normal(rng, (64, depth)), "w": _normal(rng, (depth, 64)) * 0.1,
           "z": _normal(rng, (64, depth)) * 0.1, "w2": _normal(rng, (depth, 64))}
    exe = check_llvm(g, ins, tol=dict(rtol=1e-4, atol=1e-4))
    assert exe.schedule.memory.aliases, "the planner no longer writes in place here"
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "matmul"]
    assert [p["matmul"] for p in plans] == ["gemm", "gemm"]
    assert len(plans[1]["copied"]) == copied  # r, under the kernel function's own name


def _residual_after_layer_norm(dtype: str, k: int):
    """c = relu(h @ w1) @ w2 + h with h = layer_norm(x): the residual h dies at the second
    matmul, which the planner writes in its place (a transformer block's feed-forward)."""
    b = Builder("res")
    x = b.input("x", (64, 48), dtype)
    w1, w2 = b.input("w1", (48, k), dtype), b.input("w2", (k, 48), dtype)
    h = b.op("layer_norm", x)
    return b.build(outputs={"y": b.op("layer_norm", (h @ w1).relu() @ w2 + h)})


@pytest.mark.parametrize("dtype, k, copies", [("f64", 200, False), ("f64", 300, True),
                                              ("f32", 300, False), ("f32", 1000, True)])
def test_residual_in_c_storage_with_several_k_blocks(dtype, k, copies):
    """f64's K blocks are 256 long, f32's 384: once the guard compared K with f32's block for
    both, and an f64 product with K = 300 stored partial sums over the residual (wrong)."""
    graph = _residual_after_layer_norm(dtype, k)
    rng = np.random.default_rng(0)
    np_dtype = np.float64 if dtype == "f64" else np.float32
    ins = {"x": _normal(rng, (64, 48), np_dtype), "w1": _normal(rng, (48, k), np_dtype),
           "w2": _normal(rng, (k, 48), np_dtype) * 0.1}
    exe = check_llvm(graph, ins, tol=dict(rtol=1e-4, atol=1e-4))
    assert exe.schedule.memory.aliases
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "matmul"]
    assert [p["matmul"] for p in plans] == ["gemm", "gemm"]
    assert bool(plans[1]["copied"]) == copies


BLOCKED_CASES = [
    ("same_rem_channels", (2, 5, 9, 20), (20, 5, 3, 3), dict(padding=(1, 1, 1, 1))),
    ("wide_rows", (1, 3, 4, 70), (6, 3, 2, 3), dict(padding=(0, 1, 2, 0))),
    ("narrow_dilated", (2, 4, 9, 5), (7, 4, 3, 2),
     dict(padding=(2, 2, 1, 1), rhs_dilation=(2, 3), stride=(2, 1))),
    ("groups", (1, 6, 8, 17), (9, 2, 3, 3), dict(groups=3, padding=(1, 1, 1, 1))),
    ("crop", (1, 2, 8, 19), (3, 2, 3, 4), dict(padding=(-1, 0, -2, 1))),
    ("conv1d", (3, 4, 40), (5, 4, 7), dict(padding=(3, 3))),
    ("row_stride2", (2, 3, 9, 33), (8, 3, 3, 3), dict(stride=(2, 2), padding=(1, 1, 1, 1))),
    ("row_stride2_dilated", (1, 2, 4, 70), (4, 2, 2, 5),
     dict(stride=(1, 2), padding=(0, 1, 2, 2), rhs_dilation=(1, 2))),
    ("conv1d_stride2", (2, 3, 41), (5, 3, 4), dict(stride=(2,), padding=(1, 2))),
]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_register_blocked_convolution(dtype, rng):
    """Convolutions of stride 1 or 2 along the row take the register-blocked path: channel
    blocks with a remainder, several column blocks per row, masked borders, row dilation,
    groups, cropping, 1-D, stride 2 (two input vectors per output vector, even lanes kept);
    epilogue with bias, residual and a second output."""
    np_dt = np.float32 if dtype == "f32" else np.float64
    b = Builder("blocked")
    ins = {}
    for name, xs, ws, attrs in BLOCKED_CASES:
        x, w = b.input(f"{name}.x", xs, dtype), b.input(f"{name}.w", ws, dtype)
        ins[f"{name}.x"], ins[f"{name}.w"] = _normal(rng, xs, np_dt), _normal(rng, ws, np_dt)
        y = b.op("conv", x, w, **attrs)
        b.output(name, y)
    y = b.op("conv", b.input("e.x", (2, 4, 6, 18), dtype), b.input("e.w", (5, 4, 3, 3), dtype),
             padding=(1, 1, 1, 1))
    bias = b.input("e.b", (5,), dtype)
    res = b.input("e.r", (2, 5, 6, 18), dtype)
    pre = y + b.reshape(bias, (5, 1, 1))
    b.output("epi_pre", pre)
    b.output("epi_post", (pre + res).relu())
    for k, s in (("e.x", (2, 4, 6, 18)), ("e.w", (5, 4, 3, 3)), ("e.b", (5,)),
                 ("e.r", (2, 5, 6, 18))):
        ins[k] = _normal(rng, s, np_dt)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "f32" else dict(rtol=1e-11, atol=1e-11)
    exe = check_llvm(b.build(), ins, tol=tol)
    paths = [p.get("conv") for p in exe.info["kernel_plans"].values() if p["kind"] == "conv"]
    assert paths.count("blocked") == len(BLOCKED_CASES) + 1, paths


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_plane_tiles_for_short_rows(dtype, rng):
    """Output rows of at most half a vector: each vector spans several whole rows (plane
    tiles), masked per lane at the left and right borders and at the top and bottom rows,
    the last vector partly past the plane; channel blocks with a remainder, row dilation,
    groups, stride 2 along the row (two output rows per vector, from one load of an input
    row each) with any row stride, also from an input read in place through a slice, a
    residual and batch-norm-style epilogue. An epilogue that reads a value per
    column (not through the plane's flat position) keeps row tiles."""
    np_dt = np.float32 if dtype == "f32" else np.float64
    lanes = 16 if dtype == "f32" else 8
    b = Builder("plane")
    ins = {}
    cases = [("p8", (2, 12, 8, 8), (20, 12, 3, 3), dict(padding=(1, 1, 1, 1))),
             ("p5", (3, 5, 5, 5), (7, 5, 3, 3), dict(padding=(2, 2, 2, 2), rhs_dilation=(2, 2))),
             ("p4", (2, 4, 7, 4), (6, 4, 1, 3), dict(padding=(0, 0, 1, 1))),
             ("g", (2, 8, 6, 6), (8, 4, 3, 3), dict(padding=(1, 1, 1, 1), groups=2)),
             ("s2", (2, 5, 11, 9), (7, 5, 3, 3), dict(stride=(2, 2), padding=(1, 1, 1, 1))),
             ("s12", (3, 3, 9, 7), (5, 3, 3, 3), dict(stride=(1, 2), padding=(1, 1, 1, 1))),
             ("s2k1", (2, 4, 10, 8), (6, 4, 1, 1), dict(stride=(2, 2))),
             ("s2k5", (2, 3, 8, 10), (4, 3, 5, 5), dict(stride=(2, 2), padding=(2, 2, 2, 2)))]
    planes = 0
    for name, xs, ws, attrs in cases:
        x, w = b.input(f"{name}.x", xs, dtype), b.input(f"{name}.w", ws, dtype)
        ins[f"{name}.x"], ins[f"{name}.w"] = _normal(rng, xs, np_dt), _normal(rng, ws, np_dt)
        y = b.op("conv", x, w, **attrs)
        planes += 2 * y.shape[3] <= lanes
        scale = b.input(f"{name}.s", (ws[0], 1, 1), dtype)
        res = b.input(f"{name}.r", y.shape, dtype)
        ins[f"{name}.s"] = _normal(rng, (ws[0], 1, 1), np_dt)
        ins[f"{name}.r"] = _normal(rng, y.shape, np_dt)
        b.output(name, (y * scale + res).relu())
        b.output(f"{name}.raw", y)
    # an input read in place through a slice: its rows lie 16 elements apart, not 9
    view = b.op("slice", b.input("view.x", (2, 3, 10, 16), dtype), start=(0, 0, 0, 0),
                stop=(2, 3, 10, 9))
    y = b.op("conv", view, b.input("view.w", (4, 3, 3, 3), dtype), stride=(2, 2),
             padding=(1, 1, 1, 1))
    b.output("view", y)
    ins.update({"view.x": _normal(rng, (2, 3, 10, 16), np_dt),
                "view.w": _normal(rng, (4, 3, 3, 3), np_dt)})
    planes += 2 * y.shape[3] <= lanes
    x, w = b.input("col.x", (2, 3, 4, 4), dtype), b.input("col.w", (5, 3, 3, 3), dtype)
    per_col = b.input("col.c", (4,), dtype)
    b.output("col", b.op("conv", x, w, padding=(1, 1, 1, 1)) + per_col)
    ins.update({"col.x": _normal(rng, (2, 3, 4, 4), np_dt),
                "col.w": _normal(rng, (5, 3, 3, 3), np_dt), "col.c": _normal(rng, (4,), np_dt)})
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "f32" else dict(rtol=1e-11, atol=1e-11)
    exe = check_llvm(b.build(), ins, tol=tol)
    rows = sorted(p["plane_rows"] for p in exe.info["kernel_plans"].values()
                  if p.get("conv") == "blocked")
    assert len(rows) - rows.count(0) == planes and len(rows) == len(cases) + 2, rows


def test_transposed_convolution_phases_stage_their_weights_by_channel(rng):
    """A 4x4 stride-2 transposed convolution runs as four phase convolutions, each reading
    every other tap of the kernel: their weights are staged output channel innermost before
    the tiles (`_weights_by_channel`), and the result is the dilated-input convolution's."""
    b = Builder("up")
    x = b.input("x", (2, 8, 8, 8))
    w = b.input("w", (6, 8, 4, 4))
    b.output("y", b.op("conv", x, w, padding=(2, 2, 2, 2), lhs_dilation=(2, 2)).relu())
    ins = {"x": _normal(rng, (2, 8, 8, 8)), "w": _normal(rng, (6, 8, 4, 4))}
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-4, atol=1e-4))
    convs = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "conv"]
    assert len(convs) == 4 and all(p["staged"] == ["w"] for p in convs), convs


@pytest.mark.parametrize("threads", [1, 2])
def test_parameter_weights_staged_by_channel_follow_assignments(threads, rng):
    """A convolution over enough output points keeps its parameter weights staged output
    channel innermost from one call to the next; assigning new weights (or passing them for
    one call) restages them, and the results follow the reference every time."""
    from graphc.backends.reference import run_graph

    b = Builder("kept", seed=0)
    x = b.input("x", (8, 6, 16, 16))  # 2048 output points
    w = b.param("w", (10, 6, 3, 3), init="normal")
    b.output("y", b.op("conv", x, w, padding=(1, 1, 1, 1)).relu())
    g = b.build()
    exe = graphc.compile(g, target="llvm", threads=threads)
    convs = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "conv"]
    assert [p["weights_by_channel"] for p in convs] == [True]
    xs = _normal(rng, (8, 6, 16, 16))
    tol = dict(rtol=1e-4, atol=1e-4)
    for step in range(3):
        np.testing.assert_allclose(exe(x=xs)["y"], run_graph(g, {"x": xs},
                                   dict(exe.params))["y"], **tol)
        np.testing.assert_allclose(exe(x=xs)["y"], run_graph(g, {"x": xs},
                                   dict(exe.params))["y"], **tol)  # kept copy
        once = {"w": _normal(rng, (10, 6, 3, 3))}
        np.testing.assert_allclose(exe.run({"x": xs}, params=once)["y"],
                                   run_graph(g, {"x": xs}, once)["y"], **tol)
        exe.params["w"] = _normal(rng, (10, 6, 3, 3)) * (step + 1)


def test_templates_for_the_portable_avx2_target(rng):
    """The x86-64-v3 build: 256-bit vectors (8 lanes) in the GEMM and the blocked conv."""
    from graphc.backends.llvm.aot_loader import host_cpu_flags
    from graphc.backends.llvm.program import PORTABLE_FLAGS

    if not set(PORTABLE_FLAGS) <= host_cpu_flags():
        pytest.skip("this CPU cannot run x86-64-v3 code")
    b = Builder("portable")
    x = b.input("x", (2, 5, 9, 20))
    w = b.input("w", (20, 5, 3, 3))
    a = b.input("a", (64, 70))
    m = b.input("m", (70, 61))
    b.output("conv", b.op("conv", x, w, padding=(1, 1, 1, 1)).relu())
    b.output("mm", (a @ m).tanh())
    ins = {"x": _normal(rng, (2, 5, 9, 20)), "w": _normal(rng, (20, 5, 3, 3)),
           "a": _normal(rng, (64, 70)), "m": _normal(rng, (70, 61))}
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-4, atol=1e-4), portable=True)
    notes = list(exe.info["kernel_plans"].values())
    assert {n.get("conv") or n.get("matmul") for n in notes} == {"blocked", "gemm"}
    assert [n["tile"][1] for n in notes if n.get("conv")] == [24]  # 3 vectors of 8


def test_convolution_with_a_fused_prologue_stages_its_operand(rng):
    """relu(x) feeding a conv and a sum is recomputed inside the conv's operand: the operand
    is computed into scratch once, then the register-blocked tiles read it."""
    b = Builder("staged_conv")
    x = b.input("x", (2, 4, 9, 11))
    w = b.input("w", (6, 4, 3, 3))
    r = x.relu()
    b.output("y", b.op("conv", r, w, padding=(1, 1, 1, 1)))
    b.output("s", r.sum((1,)))
    ins = {"x": _normal(rng, (2, 4, 9, 11)), "w": _normal(rng, (6, 4, 3, 3))}
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-4, atol=1e-4))
    convs = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "conv"]
    assert [(p["conv"], p["staged"]) for p in convs] == [("blocked", ["x"])], convs


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("shape, order", [((2, 16, 32, 2), "axpy, B copied"),
                                          ((2, 32, 64, 2), "axpy, B copied"),
                                          ((1, 24, 48, 4), "dot"), ((1, 5, 6, 3), "dot")])
def test_small_attention_scores_read_keys_contiguously(dtype, shape, order, rng):
    """q @ k^T of heads sliced out of a fused qkv projection, below GEMM's size: the keys are
    strided along n, so the simple loops copy them per batch item into a contiguous array, or
    for short heads run k innermost as dot products."""
    bsz, t, d, h = shape
    b = Builder("scores")
    x = b.input("x", (bsz, t, 3 * d), dtype)
    bias = b.input("bias", (t,), dtype)

    def heads(i: int):
        part = b.op("slice", x, start=(0, 0, i * d), stop=(bsz, t, (i + 1) * d))
        return part.reshape(bsz, t, h, d // h).transpose(0, 2, 1, 3)

    b.output("s", (heads(0) @ heads(1).transpose(0, 1, 3, 2) + bias).tanh())
    np_dtype = np.float64 if dtype == "f64" else np.float32
    ins = {"x": _normal(rng, (bsz, t, 3 * d), np_dtype), "bias": _normal(rng, (t,), np_dtype)}
    exe = check_llvm(b.build(), ins, tol=dict(rtol=1e-5, atol=1e-5))
    (plan,) = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "matmul"]
    assert (plan["matmul"], plan["order"]) == ("simple", order)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("n, k", [(1, 7), (10, 128), (16, 3), (23, 33), (64, 5), (40, 1)])
def test_narrow_matmuls_use_vector_accumulators(dtype, n, k, rng):
    """Products too small for the GEMM with two columns to four vectors of them: explicit vector
    accumulators, four chains along k (k not a multiple of four: the rest into the first),
    the last vector masked; with a relu prologue on A, a bias epilogue, B read in place and B
    read transposed (copied first)."""
    np_dt = np.float32 if dtype == "f32" else np.float64
    b = Builder("narrow")
    a = b.input("a", (5, k), dtype)
    w = b.input("w", (k, n), dtype)
    wt = b.input("wt", (n, k), dtype)
    bias = b.input("bias", (n,), dtype)
    b.output("y", a.relu() @ w + bias)
    b.output("yt", a @ wt.T)
    ins = {"a": _normal(rng, (5, k), np_dt), "w": _normal(rng, (k, n), np_dt),
           "wt": _normal(rng, (n, k), np_dt), "bias": _normal(rng, (n,), np_dt)}
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "f32" else dict(rtol=1e-12, atol=1e-12)
    exe = check_llvm(b.build(), ins, tol=tol)
    plans = [p for p in exe.info["kernel_plans"].values() if p["kind"] == "matmul"]
    assert plans and all(p["matmul"] == "simple" for p in plans), plans
    lanes = 16 if dtype == "f32" else 8
    if 2 <= n <= 4 * lanes:  # wider rows keep the scalar loops
        assert any(p["vector_accumulators"] for p in plans), plans
