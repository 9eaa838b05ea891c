"""Recurrent composites: references vs torch.nn.RNNCell/LSTMCell/RNN/LSTM with copied weights,
decompositions vs references, the unrolled structure of a decomposed lstm (node counts, scoped
names in the text and in `graphc show --decompose`), gradients through the unrolled graph (vs torch
autograd and the seed's backprop-through-time recursion), and shape/dtype errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from graphc.backends.reference import run_graph
from graphc.cli import main
from graphc.ir.builder import Builder
from graphc.ir.errors import DTypeError, GraphError, ShapeError
from graphc.ir.graph import Graph
from graphc.ir.text import print_graph
from graphc.ir.verify import verify
from graphc.passes.autodiff import autodiff
from graphc.passes.decompose import decompose

from ..conftest import roundtrip
from .harness import op_graph, run_op

# (T, B, D, H): one step, batch of one, D != H both ways, D == H
SIZES = [(1, 1, 3, 5), (1, 3, 4, 2), (4, 1, 5, 3), (5, 3, 2, 6), (3, 2, 4, 4)]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-12)}


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    return t.detach().numpy().astype(dtype)


def torch_weights(module: torch.nn.Module, dtype, bias: bool) -> list[np.ndarray]:
    """graphc operands from a torch (single-layer) recurrent module: W_x, W_z[, b]."""
    sfx = "_l0" if isinstance(module, (torch.nn.RNN, torch.nn.LSTM)) else ""
    w_ih = getattr(module, f"weight_ih{sfx}")
    w_hh = getattr(module, f"weight_hh{sfx}")
    ws = [_np(w_ih.T, dtype), _np(w_hh.T, dtype)]
    if bias:
        ws.append(_np(getattr(module, f"bias_ih{sfx}") + getattr(module, f"bias_hh{sfx}"), dtype))
    return ws


def _rand(rng, shape, dtype) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _tt(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


# -- references vs torch ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_rnn_cell_reference_matches_torch(size, bias, activation, rng):
    _, batch, d, h = size
    torch.manual_seed(0)
    cell = torch.nn.RNNCell(d, h, bias=bias, nonlinearity=activation).double()
    for dtype in DTYPES:
        x, h0 = _rand(rng, (batch, d), dtype), _rand(rng, (batch, h), dtype)
        (got,) = run_op("rnn_cell", [x, h0, *torch_weights(cell, dtype, bias)],
                        activation=activation)
        assert got.dtype == dtype and got.shape == (batch, h)
        want = cell.to(torch.float64)(_tt(x).double(), _tt(h0).double())
        np.testing.assert_allclose(got, _np(want, dtype), **TOL[dtype])


def test_rnn_cell_sigmoid_is_the_seeds_basic_rnn(rng):
    # z_t = g_z(W_zz z_{t-1} + W_xz x_t) with g_z = sigmoid, in the seed's column-vector form
    w_zz, w_xz = rng.standard_normal((4, 4)), rng.standard_normal((4, 3))
    z, x, b = rng.standard_normal((2, 4)), rng.standard_normal((2, 3)), rng.standard_normal(4)
    (got,) = run_op("rnn_cell", [x, z, w_xz.T.copy(), w_zz.T.copy(), b], activation="sigmoid")
    want = torch.sigmoid(_tt(w_zz) @ _tt(z).T + _tt(w_xz) @ _tt(x).T + _tt(b)[:, None]).T
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_reference_matches_torch(size, bias, rng):
    _, batch, d, h = size
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(d, h, bias=bias).double()
    for dtype in DTYPES:
        x = _rand(rng, (batch, d), dtype)
        h0, c0 = _rand(rng, (batch, h), dtype), _rand(rng, (batch, h), dtype)
        got_h, got_c = run_op("lstm_cell", [x, h0, c0, *torch_weights(cell, dtype, bias)])
        want_h, want_c = cell(_tt(x).double(), (_tt(h0).double(), _tt(c0).double()))
        np.testing.assert_allclose(got_h, _np(want_h, dtype), **TOL[dtype])
        np.testing.assert_allclose(got_c, _np(want_c, dtype), **TOL[dtype])


def test_lstm_cell_follows_the_seed_gate_formulas(rng):
    # f, i, o = sigmoid(...), c' = c*f + i*tanh(...), h' = tanh(c')*o: biases omitted as in
    # the seed; each gate written with its own weight pair (W_x*, W_z*), then stacked (i, f, g, o)
    d, h, batch = 3, 2, 2
    w_x = {k: rng.standard_normal((d, h)) for k in "ifco"}
    w_z = {k: rng.standard_normal((h, h)) for k in "ifco"}
    x, z, c = (rng.standard_normal(s) for s in ((batch, d), (batch, h), (batch, h)))
    sig = lambda v: 1 / (1 + np.exp(-v))
    f, i, o = (sig(x @ w_x[k] + z @ w_z[k]) for k in "fio")
    c_want = c * f + i * np.tanh(x @ w_x["c"] + z @ w_z["c"])
    h_want = np.tanh(c_want) * o
    stack = lambda w: np.concatenate([w["i"], w["f"], w["c"], w["o"]], axis=1)
    got_h, got_c = run_op("lstm_cell", [x, z, c, stack(w_x), stack(w_z)])
    np.testing.assert_allclose(got_c, c_want, rtol=1e-12)
    np.testing.assert_allclose(got_h, h_want, rtol=1e-12)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_rnn_reference_matches_torch(size, bias, activation, rng):
    steps, batch, d, h = size
    torch.manual_seed(2)
    net = torch.nn.RNN(d, h, nonlinearity=activation, bias=bias).double()
    for dtype in DTYPES:
        xs, h0 = _rand(rng, (steps, batch, d), dtype), _rand(rng, (batch, h), dtype)
        hs, h_last = run_op("rnn", [xs, h0, *torch_weights(net, dtype, bias)],
                            activation=activation)
        want_hs, want_h = net(_tt(xs).double(), _tt(h0).double()[None])
        np.testing.assert_allclose(hs, _np(want_hs, dtype), **TOL[dtype])
        np.testing.assert_allclose(h_last, _np(want_h[0], dtype), **TOL[dtype])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_reference_matches_torch(size, bias, rng):
    steps, batch, d, h = size
    torch.manual_seed(3)
    net = torch.nn.LSTM(d, h, bias=bias).double()
    for dtype in DTYPES:
        xs = _rand(rng, (steps, batch, d), dtype)
        h0, c0 = _rand(rng, (batch, h), dtype), _rand(rng, (batch, h), dtype)
        hs, h_last, c_last = run_op("lstm", [xs, h0, c0, *torch_weights(net, dtype, bias)])
        assert hs.shape == (steps, batch, h) and hs.dtype == dtype
        want_hs, (want_h, want_c) = net(_tt(xs).double(),
                                        (_tt(h0).double()[None], _tt(c0).double()[None]))
        np.testing.assert_allclose(hs, _np(want_hs, dtype), **TOL[dtype])
        np.testing.assert_allclose(h_last, _np(want_h[0], dtype), **TOL[dtype])
        np.testing.assert_allclose(c_last, _np(want_c[0], dtype), **TOL[dtype])


# -- decompositions vs references -----------------------------------------------------------------


def _operands(op: str, size, bias: bool, rng, dtype=np.float64) -> list[np.ndarray]:
    steps, batch, d, h = size
    gates = 4 if op.startswith("lstm") else 1
    x_shape = (batch, d) if op.endswith("_cell") else (steps, batch, d)
    states = 2 if op.startswith("lstm") else 1
    arrays = [_rand(rng, x_shape, dtype)] + [_rand(rng, (batch, h), dtype)
                                            for _ in range(states)]
    arrays += [_rand(rng, (d, gates * h), dtype) * 0.5, _rand(rng, (h, gates * h), dtype) * 0.5]
    if bias:
        arrays.append(_rand(rng, (gates * h,), dtype))
    return arrays


def _check_decomposition(op: str, arrays, attrs: dict, tol: dict) -> None:
    g = op_graph(op, arrays, attrs)
    d = verify(decompose(g))
    assert all(not n.op.endswith(("rnn", "lstm", "_cell")) for n in d.nodes)
    feed = {f"x{i}": a for i, a in enumerate(arrays)}
    want, got = run_graph(g, feed), run_graph(d, feed)
    assert want.keys() == got.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], err_msg=f"{op} output {k}", **tol)


OPS_ATTRS = [("rnn_cell", {}), ("rnn_cell", {"activation": "relu"}),
             ("rnn_cell", {"activation": "sigmoid"}), ("lstm_cell", {}), ("rnn", {}),
             ("rnn", {"activation": "relu"}), ("rnn", {"activation": "sigmoid"}), ("lstm", {})]


@pytest.mark.parametrize("op,attrs", OPS_ATTRS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bias", [True, False])
def test_decomposition_matches_reference(op, attrs, size, bias, rng):
    _check_decomposition(op, _operands(op, size, bias, rng), attrs, TOL[np.float64])


@pytest.mark.parametrize("op", ["rnn_cell", "lstm_cell", "rnn", "lstm"])
def test_decomposition_matches_reference_f32(op, rng):
    arrays = _operands(op, (3, 2, 4, 5), True, rng, np.float32)
    _check_decomposition(op, arrays, {}, dict(rtol=1e-5, atol=1e-6))


def _lstm_graph(steps: int, batch: int = 2, d: int = 3, h: int = 4, bias: bool = True):
    b = Builder("seq")
    xs = b.input("xs", (steps, batch, d))
    h0, c0 = b.input("h0", (batch, h)), b.input("c0", (batch, h))
    ws = [b.param("W_x", (d, 4 * h)), b.param("W_z", (h, 4 * h))]
    if bias:
        ws.append(b.param("b", (4 * h,), init="zeros"))
    hs, h_last, c_last = b.lstm(xs, h0, c0, *ws)
    return b.build(outputs={"hs": hs, "h": h_last, "c": c_last})


def test_decomposed_lstm_has_one_cell_per_step():
    steps = 16
    d = verify(decompose(_lstm_graph(steps)))
    count = lambda op: sum(n.op == op for n in d.nodes)
    assert count("matmul") == 2 * steps  # one per operand per step, all four gates at once
    assert count("sigmoid") == 3 * steps
    assert count("tanh") == 2 * steps
    cell_tanh = [n for n in d.nodes if n.op == "tanh" and n.inputs[0].node.op == "add"]
    assert len(cell_tanh) == steps  # tanh(c_t), one per step
    assert count("slice") == 4 * steps + steps  # four gate blocks + x_t, per step
    assert count("concat") == 1
    assert {n.op for n in d.nodes} <= {"matmul", "add", "mul", "sigmoid", "tanh", "slice",
                                       "reshape", "concat"}


def test_decomposed_lstm_text_shows_scoped_steps():
    text = print_graph(roundtrip(decompose(_lstm_graph(16))))
    for t in range(16):
        assert re.search(rf"%lstm0\.t{t}\.lstm_cell0\.h\.tanh = tanh\(", text), f"step {t}"
        assert re.search(rf"%lstm0\.t{t}\.lstm_cell0\.f\.sigmoid = sigmoid\(", text)
        assert re.search(rf"%lstm0\.t{t}\.lstm_cell0\.matmul(_\d+)? = matmul\(", text)
    assert "%lstm0.t16." not in text


def test_cli_show_decompose_prints_one_cell_per_step(tmp_path, capsys):
    model = tmp_path / "seq.py"
    model.write_text("from graphc.ir.builder import Builder\n\n\n"
                     "def build():\n"
                     "    b = Builder('seq')\n"
                     "    xs, h0 = b.input('xs', (7, 2, 3)), b.input('h0', (2, 4))\n"
                     "    hs, h = b.rnn(xs, h0, b.param('W_x', (3, 4)), b.param('W_z', (4, 4)))\n"
                     "    return b.build(outputs={'hs': hs})\n")
    assert main(["show", "--decompose", str(model)]) == 0
    out = capsys.readouterr().out
    cells = re.findall(r"%rnn0\.t(\d+)\.rnn_cell0\.tanh = tanh\(", out)
    assert cells == [str(t) for t in range(7)]


def test_undecomposed_lstm_unrolls_into_lstm_cells():
    # one level of decomposition (a builder that keeps composites) gives T lstm_cell nodes
    from graphc.ir.registry import get_op

    g = _lstm_graph(5)
    b = Builder.from_graph(g)
    ins = [b.tensor(v) for v in g.nodes[0].inputs]
    hs, h_last, c_last = get_op("lstm").decompose(b, tuple(ins), {})
    one_level = b.build(outputs={"hs": hs, "h": h_last, "c": c_last})
    cells = [n for n in one_level.nodes if n.op == "lstm_cell"]
    assert [n.name for n in cells] == [f"t{t}.lstm_cell" for t in range(5)]


def test_rnn_decomposition_with_one_step_is_one_cell(rng):
    g = op_graph("rnn", _operands("rnn", (1, 2, 3, 4), True, rng))
    d = decompose(g)
    assert sum(n.op == "matmul" for n in d.nodes) == 2
    assert sum(n.op == "tanh" for n in d.nodes) == 1


# -- gradients through the unrolled graph ------------------------------------------------------


def _seq_graph(op: str, arrays) -> Graph:
    """xs and the initial states as inputs, the weights as parameters; loss = sum of hs."""
    b = Builder(op)
    n_in = 3 if op == "lstm" else 2
    ins = [b.input(f"x{i}", a.shape, "f64") for i, a in enumerate(arrays[:n_in])]
    names = ["W_x", "W_z", "b"]
    ps = [b.param(names[i], init=a, dtype="f64") for i, a in enumerate(arrays[n_in:])]
    hs = b.op(op, *ins, *ps)[0]
    return b.build(outputs={"loss": hs.sum()})


@pytest.mark.parametrize("op", ["rnn", "lstm"])
def test_gradients_of_unrolled_ops_match_torch_autograd(op, rng):
    steps, batch, d, h = 4, 2, 3, 5
    arrays = _operands(op, (steps, batch, d, h), True, rng)
    g = _seq_graph(op, arrays)
    n_in = 3 if op == "lstm" else 2
    wrt = [f"x{i}" for i in range(n_in)] + ["W_x", "W_z", "b"]
    got = run_graph(verify(autodiff(g, "loss", wrt)), {f"x{i}": a for i, a in
                                                     enumerate(arrays[:n_in])})
    net = (torch.nn.LSTM if op == "lstm" else torch.nn.RNN)(d, h).double()
    with torch.no_grad():
        net.weight_ih_l0.copy_(_tt(arrays[n_in].T.copy()))
        net.weight_hh_l0.copy_(_tt(arrays[n_in + 1].T.copy()))
        net.bias_ih_l0.copy_(_tt(arrays[n_in + 2]))
        net.bias_hh_l0.zero_()
    leaves = [_tt(a.copy()).requires_grad_() for a in arrays[:n_in]]
    state = tuple(s[None] for s in leaves[1:])
    hs, _ = net(leaves[0], state if op == "lstm" else state[0])
    hs.sum().backward()
    want = {f"grad.x{i}": t.grad for i, t in enumerate(leaves)}
    want.update({"grad.W_x": net.weight_ih_l0.grad.T, "grad.W_z": net.weight_hh_l0.grad.T,
                 "grad.b": net.bias_ih_l0.grad})
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("w_zz", [0.5, 1.5])
def test_scalar_rnn_gradient_vanishes_or_explodes_with_depth(w_zz):
    # Seed, backprop through time: dz_T/dx_0 = w_xz g'(in_0) prod_{t=1..T-1} w_zz g'(in_t), so
    # it shrinks like w_zz^T for |w_zz| < 1 and grows for |w_zz| > 1 (tiny inputs keep tanh
    # in its linear range, g' ~ 1).
    w_xz = 0.8
    grads = []
    for steps in range(1, 9):
        b = Builder("scalar_rnn")
        xs = b.input("xs", (steps, 1, 1), "f64")
        weights = [b.param(n, init=np.array([[w]]), dtype="f64")
                   for n, w in (("w_xz", w_xz), ("w_zz", w_zz))]
        _, z_last = b.rnn(xs, b.zeros((1, 1), "f64"), *weights)
        g = b.build(outputs={"loss": z_last.sum()})
        x = np.zeros((steps, 1, 1))
        x[0] = 1e-4
        got = run_graph(verify(autodiff(g, "loss", ["xs"])), {"xs": x})["grad.xs"]
        zs, _ = run_op("rnn", [x, np.zeros((1, 1)), np.array([[w_xz]]), np.array([[w_zz]])])
        pre = w_xz * x[:, 0, 0] + w_zz * np.concatenate([[0.0], zs[:-1, 0, 0]])
        dg = 1 - np.tanh(pre) ** 2
        # dz_T/dx_t = w_xz g'(in_t) prod_{s=t+1..T-1} w_zz g'(in_s), for every t
        closed = [w_xz * dg[t] * np.prod(w_zz * dg[t + 1:]) for t in range(steps)]
        np.testing.assert_allclose(got[:, 0, 0], closed, rtol=1e-9)
        grads.append(abs(closed[0]))
    ratios = np.array(grads[1:]) / np.array(grads[:-1])
    np.testing.assert_allclose(ratios, w_zz, rtol=1e-3)


# -- errors ---------------------------------------------------------------------------------------


def _types_graph(op: str, shapes, dtype: str = "f32", **attrs):
    b = Builder("bad")
    ins = [b.input(f"x{i}", s, dtype) for i, s in enumerate(shapes)]
    return b.op(op, *ins, **attrs)


@pytest.mark.parametrize("op,shapes,pattern", [
    ("lstm_cell", [(2, 3), (2, 4), (2, 4), (3, 12), (4, 16)],
     r"lstm_cell\(.*W_x must be \[D, 4H\] = \[3, 16\] \(D=3, H=4\), got f32\[3, 12\]"),
    ("lstm_cell", [(2, 3), (2, 4), (2, 4), (3, 16), (16, 4)],
     r"lstm_cell\(.*W_z must be \[H, 4H\] = \[4, 16\].*got f32\[16, 4\]"),
    ("lstm_cell", [(2, 3), (2, 4), (2, 4), (3, 16), (4, 16), (4,)],
     r"lstm_cell\(.*b must be \[4H\] = \[16\].*got f32\[4\]"),
    ("lstm_cell", [(2, 3), (2, 4), (2, 5), (3, 16), (4, 16)],
     r"lstm_cell\(.*c must have h's shape \[2, 4\], got f32\[2, 5\]"),
    ("rnn_cell", [(2, 3), (2, 4), (4, 4), (4, 4)],
     r"rnn_cell\(.*W_x must be \[D, H\] = \[3, 4\].*got f32\[4, 4\]"),
    ("rnn_cell", [(2, 3), (5, 4), (3, 4), (4, 4)],
     r"rnn_cell\(.*batch sizes differ: x is f32\[2, 3\], h is f32\[5, 4\]"),
    ("rnn_cell", [(3,), (4,), (3, 4), (4, 4)], r"rnn_cell\(.*x must be \[B, D\] \(rank 2\)"),
    ("rnn", [(5, 2, 3), (2, 4), (3, 4), (4, 5)],
     r"rnn\(.*W_z must be \[H, H\] = \[4, 4\].*got f32\[4, 5\]"),
    ("rnn", [(2, 3), (2, 4), (3, 4), (4, 4)],
     r"rnn\(.*xs must be \[T, B, D\] \(time-major\) \(rank 3\), got f32\[2, 3\]"),
    ("lstm", [(5, 2, 3), (3, 4), (3, 4), (3, 16), (4, 16)],
     r"lstm\(.*batch sizes differ: xs is f32\[5, 2, 3\] \(B=2\), h0 is f32\[3, 4\]"),
    ("lstm", [(5, 2, 3), (2, 4), (2, 4), (3, 8), (4, 16)],
     r"lstm\(.*W_x must be \[D, 4H\] = \[3, 16\].*got f32\[3, 8\]"),
    ("lstm", [(0, 2, 3), (2, 4), (2, 4), (3, 16), (4, 16)], r"lstm\(.*xs has no time steps"),
])
def test_shape_errors_name_op_and_shapes(op, shapes, pattern):
    with pytest.raises(ShapeError, match=pattern):
        _types_graph(op, shapes)


def test_integer_operands_are_rejected():
    with pytest.raises(DTypeError, match=r"rnn_cell\(.*x must be floating-point, got i32"):
        _types_graph("rnn_cell", [(2, 3), (2, 4), (3, 4), (4, 4)], "i32")


def test_mixed_dtypes_are_rejected():
    b = Builder("bad")
    x = b.input("x", (2, 3), "f64")
    ws = [b.input("h", (2, 4)), b.input("wx", (3, 4)), b.input("wz", (4, 4))]
    with pytest.raises(DTypeError, match=r"rnn_cell\(.*dtypes differ: x is f64\[2, 3\], "
                                         r"h is f32\[2, 4\]"):
        b.rnn_cell(x, *ws)


def test_bad_activation_and_arity():
    shapes = [(2, 3), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(GraphError, match=r"activation='gelu' must be one of"):
        _types_graph("rnn_cell", shapes, activation="gelu")
    with pytest.raises(GraphError, match=r"lstm_cell\(.*takes 5..6 operands, got 4"):
        _types_graph("lstm_cell", shapes)
    with pytest.raises(GraphError, match=r"unknown attribute 'activation'"):
        _types_graph("lstm", [(1, 2, 3), (2, 4), (2, 4), (3, 16), (4, 16)], activation="tanh")
