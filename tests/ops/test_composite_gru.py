"""GRU composites: `gru_cell` and `gru` references vs torch.nn.GRUCell/GRU with copied weights,
the `linear_before_reset=False` form (ONNX's default) vs its formula written out here,
decompositions vs references, the unrolled structure, gradients (torch autograd; float64 finite
differences for the ONNX form) and shape errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphc.backends.reference import run_graph
from graphc.gradcheck import gradcheck
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphError, ShapeError
from graphc.ir.verify import verify
from graphc.passes.autodiff import autodiff
from graphc.passes.decompose import decompose

from .harness import op_graph, run_op
from .test_composite_rnn import DTYPES, SIZES, TOL, _np, _tt


def torch_weights(module: torch.nn.Module, dtype, bias: bool) -> list[np.ndarray]:
    """graphc operands from a torch GRU(Cell): W_x, W_z[, b_x, b_z]."""
    sfx = "_l0" if isinstance(module, torch.nn.GRU) else ""
    ws = [_np(getattr(module, f"weight_ih{sfx}").T, dtype),
          _np(getattr(module, f"weight_hh{sfx}").T, dtype)]
    if bias:
        ws += [_np(getattr(module, f"bias_ih{sfx}"), dtype),
               _np(getattr(module, f"bias_hh{sfx}"), dtype)]
    return ws


def _operands(size, n_bias: int, rng, cell: bool, dtype=np.float64) -> list[np.ndarray]:
    steps, batch, d, h = size
    x_shape = (batch, d) if cell else (steps, batch, d)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal((batch, h)),
              0.5 * rng.standard_normal((d, 3 * h)), 0.5 * rng.standard_normal((h, 3 * h))]
    arrays += [rng.standard_normal(3 * h) for _ in range(n_bias)]
    return [a.astype(dtype) for a in arrays]


# -- references vs torch ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_reference_matches_torch(size, bias, rng):
    _, batch, d, h = size
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(d, h, bias=bias).double()
    for dtype in DTYPES:
        x = rng.standard_normal((batch, d)).astype(dtype)
        h0 = rng.standard_normal((batch, h)).astype(dtype)
        (got,) = run_op("gru_cell", [x, h0, *torch_weights(cell, dtype, bias)])
        assert got.dtype == dtype and got.shape == (batch, h)
        want = cell(_tt(x).double(), _tt(h0).double())
        np.testing.assert_allclose(got, _np(want, dtype), **TOL[dtype])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bias", [True, False])
def test_gru_reference_matches_torch(size, bias, rng):
    steps, batch, d, h = size
    torch.manual_seed(1)
    net = torch.nn.GRU(d, h, bias=bias).double()
    for dtype in DTYPES:
        xs = rng.standard_normal((steps, batch, d)).astype(dtype)
        h0 = rng.standard_normal((batch, h)).astype(dtype)
        hs, h_last = run_op("gru", [xs, h0, *torch_weights(net, dtype, bias)])
        want_hs, want_h = net(_tt(xs).double(), _tt(h0).double()[None])
        np.testing.assert_allclose(hs, _np(want_hs, dtype), **TOL[dtype])
        np.testing.assert_allclose(h_last, _np(want_h[0], dtype), **TOL[dtype])


def test_gru_cell_reset_before_linear_follows_its_formula(rng):
    # ONNX's default GRU: h~ = tanh(x W_h + b_Wh + (r * h) R_h + b_Rh); each gate written with
    # its own weights here, stacked (r, z, n) for graphc
    d, h, batch = 3, 4, 2
    w = {k: rng.standard_normal((d, h)) for k in "rzn"}
    u = {k: rng.standard_normal((h, h)) for k in "rzn"}
    bw = {k: rng.standard_normal(h) for k in "rzn"}
    bu = {k: rng.standard_normal(h) for k in "rzn"}
    x, z0 = rng.standard_normal((batch, d)), rng.standard_normal((batch, h))
    sig = lambda v: 1 / (1 + np.exp(-v))
    r, z = (sig(x @ w[k] + bw[k] + z0 @ u[k] + bu[k]) for k in "rz")
    n = np.tanh(x @ w["n"] + bw["n"] + (r * z0) @ u["n"] + bu["n"])
    want = (1 - z) * n + z * z0
    stack = lambda p, axis: np.concatenate([p[k] for k in "rzn"], axis=axis)
    (got,) = run_op("gru_cell", [x, z0, stack(w, 1), stack(u, 1), stack(bw, 0), stack(bu, 0)],
                    linear_before_reset=False)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    (torch_form,) = run_op("gru_cell", [x, z0, stack(w, 1), stack(u, 1), stack(bw, 0),
                                        stack(bu, 0)])
    assert np.abs(torch_form - want).max() > 1e-3  # the two forms really differ


def test_one_bias_is_the_input_bias(rng):
    arrays = _operands((1, 2, 3, 4), 2, rng, cell=True)
    arrays[5][:] = 0.0
    want = run_op("gru_cell", arrays)
    got = run_op("gru_cell", arrays[:5])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-14)


# -- decompositions vs references -----------------------------------------------------------------


def _check_decomposition(op: str, arrays, attrs: dict, tol: dict) -> None:
    g = op_graph(op, arrays, attrs)
    d = verify(decompose(g))
    assert all(not n.op.startswith("gru") for n in d.nodes)
    feed = {f"x{i}": a for i, a in enumerate(arrays)}
    want, got = run_graph(g, feed), run_graph(d, feed)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], err_msg=f"{op} output {k}", **tol)


@pytest.mark.parametrize("op", ["gru_cell", "gru"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("n_bias", [0, 1, 2])
@pytest.mark.parametrize("lbr", [True, False])
def test_decomposition_matches_reference(op, size, n_bias, lbr, rng):
    arrays = _operands(size, n_bias, rng, cell=op == "gru_cell")
    _check_decomposition(op, arrays, {"linear_before_reset": lbr}, TOL[np.float64])


@pytest.mark.parametrize("lbr", [True, False])
def test_decomposition_matches_reference_f32(lbr, rng):
    arrays = _operands((3, 2, 4, 5), 2, rng, cell=False, dtype=np.float32)
    _check_decomposition("gru", arrays, {"linear_before_reset": lbr}, dict(rtol=1e-5, atol=1e-6))


def _gru_graph(steps: int, lbr: bool = True, batch: int = 2, d: int = 3, h: int = 4,
               loss: bool = False):
    b = Builder("seq")
    xs, h0 = b.input("xs", (steps, batch, d)), b.input("h0", (batch, h))
    ws = [b.param("W_x", (d, 3 * h)), b.param("W_z", (h, 3 * h)),
          b.param("b_x", (3 * h,), init="normal"), b.param("b_z", (3 * h,), init="normal")]
    hs, h_last = b.gru(xs, h0, *ws, linear_before_reset=lbr)
    if loss:  # weights every step's outputs differently
        return b.build(outputs={"loss": (hs * hs).sum() + h_last.sum()})
    return b.build(outputs={"hs": hs, "h": h_last})


@pytest.mark.parametrize("lbr,matmuls", [(True, 2), (False, 3)])
def test_decomposed_gru_has_one_cell_per_step(lbr, matmuls):
    steps = 12
    d = verify(decompose(_gru_graph(steps, lbr)))
    count = lambda op: sum(n.op == op for n in d.nodes)
    assert count("matmul") == matmuls * steps  # products cover all gates at once
    assert count("sigmoid") == 2 * steps
    assert count("tanh") == steps
    assert count("concat") == 1


# -- gradients -------------------------------------------------------------------------------------


def test_gradients_match_torch_autograd(rng):
    steps, batch, d, h = 4, 2, 3, 5
    arrays = _operands((steps, batch, d, h), 2, rng, cell=False)
    b = Builder("gru")
    xs, h0 = (b.input(f"x{i}", a.shape, "f64") for i, a in enumerate(arrays[:2]))
    names = ["W_x", "W_z", "b_x", "b_z"]
    ps = [b.param(n, init=a, dtype="f64") for n, a in zip(names, arrays[2:], strict=True)]
    hs, h_last = b.gru(xs, h0, *ps)
    g = b.build(outputs={"loss": (hs * hs).sum() + h_last.sum()})
    got = run_graph(verify(autodiff(g, "loss", ["x0", "x1", *names])),
                    {"x0": arrays[0], "x1": arrays[1]})
    net = torch.nn.GRU(d, h).double()
    with torch.no_grad():
        for p, a in zip((net.weight_ih_l0, net.weight_hh_l0), arrays[2:4], strict=True):
            p.copy_(_tt(a.T.copy()))
        net.bias_ih_l0.copy_(_tt(arrays[4]))
        net.bias_hh_l0.copy_(_tt(arrays[5]))
    leaves = [_tt(a.copy()).requires_grad_() for a in arrays[:2]]
    t_hs, t_h = net(leaves[0], leaves[1][None])
    ((t_hs * t_hs).sum() + t_h.sum()).backward()
    want = {"grad.x0": leaves[0].grad, "grad.x1": leaves[1].grad,
            "grad.W_x": net.weight_ih_l0.grad.T, "grad.W_z": net.weight_hh_l0.grad.T,
            "grad.b_x": net.bias_ih_l0.grad, "grad.b_z": net.bias_hh_l0.grad}
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_reset_before_linear_gradients_match_finite_differences():
    wrt = ["xs", "h0", "W_x", "W_z", "b_x", "b_z"]
    report = gradcheck(_gru_graph(3, lbr=False, loss=True), "loss", wrt, seed=3)
    assert report.ok, report


# -- errors ---------------------------------------------------------------------------------------


def _types_graph(op: str, shapes, **attrs):
    b = Builder("bad")
    ins = [b.input(f"x{i}", s) for i, s in enumerate(shapes)]
    return b.op(op, *ins, **attrs)


@pytest.mark.parametrize("op,shapes,pattern", [
    ("gru_cell", [(2, 3), (2, 4), (3, 16), (4, 12)],
     r"gru_cell\(.*W_x must be \[D, 3H\] = \[3, 12\] \(D=3, H=4\), got f32\[3, 16\]"),
    ("gru_cell", [(2, 3), (2, 4), (3, 12), (4, 12), (12,), (4,)],
     r"gru_cell\(.*b_z must be \[3H\] = \[12\].*got f32\[4\]"),
    ("gru", [(5, 2, 3), (3, 4), (3, 12), (4, 12)],
     r"gru\(.*batch sizes differ: xs is f32\[5, 2, 3\] \(B=2\), h0 is f32\[3, 4\]"),
])
def test_shape_errors_name_op_and_shapes(op, shapes, pattern):
    with pytest.raises(ShapeError, match=pattern):
        _types_graph(op, shapes)


def test_arity_is_checked():
    with pytest.raises(GraphError, match=r"gru_cell\(.*takes 4..6 operands, got 3"):
        _types_graph("gru_cell", [(2, 3), (2, 4), (3, 12)])
