"""Recurrent composites: `rnn_cell`, `lstm_cell`, `gru_cell`, and the sequence ops `rnn`, `lstm`
and `gru`.

Conventions (chosen so torch weights copy over by a transpose):
- weights multiply from the right, `x @ W`, with W of shape [in, out];
- the LSTM's four gates are stacked along the last weight axis in torch's order (i, f, g, o), so
  `W_x = weight_ih.T` [D, 4H], `W_z = weight_hh.T` [H, 4H], `b = bias_ih + bias_hh` [4H];
- the GRU's three gates are stacked in torch's order (r, z, n), and it keeps its two biases
  apart (`b_x = bias_ih`, `b_z = bias_hh`): the hidden bias of n sits inside the reset product,
  n = tanh(x W_xn + b_xn + r * (h W_zn + b_zn)) (`linear_before_reset`, torch's form); with
  `linear_before_reset=False` (ONNX's default) n = tanh(x W_xn + b_xn + (r * h) W_zn + b_zn);
  then h' = (1 - z) * n + z * h;
- sequences are time-major: xs [T, B, D], hs [T, B, H].

The seed's basic RNN `z_t = g_z(W_zz z_{t-1} + W_xz x_t)` is `rnn_cell` with W_z = W_zz^T, W_x =
W_xz^T; its LSTM (forget gate f, input gate i, output gate o, memory cell c) is `lstm_cell`, with
the biases the seed omits as an optional last operand.

Each op has its own direct numpy reference (plain loops and per-gate weight blocks), written
independently of its decomposition so that the decomposition can be tested against it:
- a cell becomes ONE matmul per operand for all gates at once ([B, 4H]), then a `slice` per gate;
- a sequence op is unrolled over T: per step, slice x_t and reshape away the time axis, apply the
  cell, reshape its output back to [1, B, H]; the T outputs are `concat`enated. Every step's nodes
  are made inside `b.scope(f"t{t}")`, so the decomposed text shows T scoped cells
  (`%lstm0.t3.lstm_cell0.f.sigmoid`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DTypeError, ShapeError
from ..registry import Attr, OpDef, register
from ..types import FLOAT_DTYPES, TensorType

ACTIVATIONS = ("tanh", "relu", "sigmoid")
LSTM_GATES = ("i", "f", "g", "o")  # torch's order of the stacked gate blocks
GRU_GATES = ("r", "z", "n")

# -- type rules ----------------------------------------------------------------------------------


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_floats(types: Sequence[TensorType], names: Sequence[str]) -> str:
    dtype = types[0].dtype
    for t, name in zip(types, names, strict=False):
        if t.dtype not in FLOAT_DTYPES:
            raise DTypeError(f"{name} must be floating-point, got {t}")
        if t.dtype != dtype:
            raise DTypeError(f"operand dtypes differ: {names[0]} is {types[0]}, {name} is {t}")
    return dtype


def _check_rank(t: TensorType, rank: int, name: str, layout: str) -> None:
    if len(t.shape) != rank:
        raise ShapeError(f"{name} must be {layout} (rank {rank}), got {t}")


def _check_weights(types: Sequence[TensorType], names: Sequence[str], d: int, h: int,
                   gates: int) -> None:
    """W_x [D, G*H], W_z [H, G*H] and optional biases [G*H] (two for a GRU), with G the number
    of gate blocks."""
    g = f"{gates}H" if gates > 1 else "H"
    wants = [((d, gates * h), f"[D, {g}]"), ((h, gates * h), f"[H, {g}]"),
             ((gates * h,), f"[{g}]"), ((gates * h,), f"[{g}]")]
    for t, name, (want, layout) in zip(types, names, wants, strict=False):
        if t.shape != want:
            raise ShapeError(f"{name} must be {layout} = {_fmt(want)} (D={d}, H={h}), got {t}")


def _infer_cell(types: list[TensorType], names: tuple[str, ...], n_state: int,
                gates: int) -> TensorType:
    """Shared rule of rnn_cell/lstm_cell: x [B, D], n_state states [B, H], then the weights."""
    _check_floats(types, names)
    x, h = types[0], types[1]
    _check_rank(x, 2, names[0], "[B, D]")
    _check_rank(h, 2, names[1], "[B, H]")
    if h.shape[0] != x.shape[0]:
        raise ShapeError(f"batch sizes differ: {names[0]} is {x}, {names[1]} is {h}")
    for t, name in zip(types[2:1 + n_state], names[2:1 + n_state], strict=True):
        if t.shape != h.shape:
            raise ShapeError(f"{name} must have {names[1]}'s shape {_fmt(h.shape)}, got {t}")
    k = 1 + n_state
    _check_weights(types[k:], names[k:], x.shape[1], h.shape[1], gates)
    return h


def _infer_seq(types: list[TensorType], names: tuple[str, ...], n_state: int,
               gates: int) -> tuple[TensorType, ...]:
    """Shared rule of rnn/lstm: xs [T, B, D], then n_state states [B, H], then the weights."""
    _check_floats(types, names)
    xs = types[0]
    _check_rank(xs, 3, names[0], "[T, B, D] (time-major)")
    if xs.shape[0] < 1:
        raise ShapeError(f"{names[0]} has no time steps: {xs}")
    t_steps, batch, d = xs.shape
    h0 = types[1]
    if len(h0.shape) == 2 and h0.shape[0] != batch:
        raise ShapeError(f"batch sizes differ: {names[0]} is {xs} (B={batch}), "
                         f"{names[1]} is {h0}")
    step_types = [TensorType((batch, d), xs.dtype)] + list(types[1:])
    h = _infer_cell(step_types, names, n_state, gates)
    hs = TensorType((t_steps,) + h.shape, h.dtype)
    return (hs,) + (h,) * n_state


RNN_CELL_NAMES = ("x", "h", "W_x", "W_z", "b")
LSTM_CELL_NAMES = ("x", "h", "c", "W_x", "W_z", "b")
RNN_NAMES = ("xs", "h0", "W_x", "W_z", "b")
LSTM_NAMES = ("xs", "h0", "c0", "W_x", "W_z", "b")
GRU_CELL_NAMES = ("x", "h", "W_x", "W_z", "b_x", "b_z")
GRU_NAMES = ("xs", "h0", "W_x", "W_z", "b_x", "b_z")


def infer_rnn_cell(types, attrs):
    return _infer_cell(types, RNN_CELL_NAMES, 1, 1)


def infer_lstm_cell(types, attrs):
    h = _infer_cell(types, LSTM_CELL_NAMES, 2, 4)
    return h, h


def infer_rnn(types, attrs):
    return _infer_seq(types, RNN_NAMES, 1, 1)


def infer_lstm(types, attrs):
    return _infer_seq(types, LSTM_NAMES, 2, 4)


def infer_gru_cell(types, attrs):
    return _infer_cell(types, GRU_CELL_NAMES, 1, 3)


def infer_gru(types, attrs):
    return _infer_seq(types, GRU_NAMES, 1, 3)


# -- references (direct numpy, independent of the decompositions) ------------------------------


def _work_dtype(a: np.ndarray) -> type:
    # f64 stays f64 (the precision gradient checks need); narrower floats compute in f32
    return np.float64 if a.dtype == np.float64 else np.float32


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    # 1/(1+e^-x) without overflow: exp of a non-positive number only
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


NP_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0), "sigmoid": _np_sigmoid}


def _np_rnn_step(x, h, w_x, w_z, bias, activation: str) -> np.ndarray:
    pre = x @ w_x + h @ w_z
    if bias is not None:
        pre = pre + bias
    return NP_ACTIVATIONS[activation](pre)


def _np_lstm_step(x, h, c, w_x, w_z, bias) -> tuple[np.ndarray, np.ndarray]:
    hidden = h.shape[1]

    def gate(k: int) -> np.ndarray:
        cols = slice(k * hidden, (k + 1) * hidden)
        pre = x @ w_x[:, cols] + h @ w_z[:, cols]
        return pre if bias is None else pre + bias[cols]

    i, f, g, o = (gate(k) for k in range(4))
    c_new = c * _np_sigmoid(f) + _np_sigmoid(i) * np.tanh(g)
    h_new = np.tanh(c_new) * _np_sigmoid(o)
    return h_new, c_new


def _np_gru_step(x, h, w_x, w_z, b_x, b_z, linear_before_reset: bool) -> np.ndarray:
    hidden = h.shape[1]

    def block(w, b, k: int, v):
        cols = slice(k * hidden, (k + 1) * hidden)
        out = v @ w[:, cols]
        return out if b is None else out + b[cols]

    r = _np_sigmoid(block(w_x, b_x, 0, x) + block(w_z, b_z, 0, h))
    z = _np_sigmoid(block(w_x, b_x, 1, x) + block(w_z, b_z, 1, h))
    hn = r * block(w_z, b_z, 2, h) if linear_before_reset else block(w_z, b_z, 2, r * h)
    n = np.tanh(block(w_x, b_x, 2, x) + hn)
    return (1.0 - z) * n + z * h


def _gru_operands(inputs, n_fixed: int) -> tuple[list[np.ndarray], tuple]:
    """Fixed operands and (b_x, b_z), each None when absent, in the working dtype."""
    wt = _work_dtype(np.asarray(inputs[0]))
    cast = [np.asarray(a, dtype=wt) for a in inputs]
    biases = cast[n_fixed:] + [None] * (n_fixed + 2 - len(cast))
    return cast[:n_fixed], tuple(biases)


def _split(arrays: Sequence[np.ndarray], n_fixed: int
           ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Cast operands to the working dtype; return (fixed operands, bias or None)."""
    wt = _work_dtype(np.asarray(arrays[0]))
    cast = [np.asarray(a, dtype=wt) for a in arrays]
    return cast[:n_fixed], (cast[n_fixed] if len(cast) > n_fixed else None)


def ref_rnn_cell(inputs, attrs):
    (x, h, w_x, w_z), bias = _split(inputs, 4)
    return _np_rnn_step(x, h, w_x, w_z, bias, attrs["activation"]).astype(inputs[0].dtype)


def ref_lstm_cell(inputs, attrs):
    (x, h, c, w_x, w_z), bias = _split(inputs, 5)
    dt = inputs[0].dtype
    h_new, c_new = _np_lstm_step(x, h, c, w_x, w_z, bias)
    return h_new.astype(dt), c_new.astype(dt)


def ref_rnn(inputs, attrs):
    (xs, h, w_x, w_z), bias = _split(inputs, 4)
    hs = []
    for t in range(xs.shape[0]):
        h = _np_rnn_step(xs[t], h, w_x, w_z, bias, attrs["activation"])
        hs.append(h)
    dt = inputs[0].dtype
    return np.stack(hs).astype(dt), h.astype(dt)


def ref_lstm(inputs, attrs):
    (xs, h, c, w_x, w_z), bias = _split(inputs, 5)
    hs = []
    for t in range(xs.shape[0]):
        h, c = _np_lstm_step(xs[t], h, c, w_x, w_z, bias)
        hs.append(h)
    dt = inputs[0].dtype
    return np.stack(hs).astype(dt), h.astype(dt), c.astype(dt)


def ref_gru_cell(inputs, attrs):
    (x, h, w_x, w_z), (b_x, b_z) = _gru_operands(inputs, 4)
    out = _np_gru_step(x, h, w_x, w_z, b_x, b_z, attrs["linear_before_reset"])
    return out.astype(inputs[0].dtype)


def ref_gru(inputs, attrs):
    (xs, h, w_x, w_z), (b_x, b_z) = _gru_operands(inputs, 4)
    hs = []
    for t in range(xs.shape[0]):
        h = _np_gru_step(xs[t], h, w_x, w_z, b_x, b_z, attrs["linear_before_reset"])
        hs.append(h)
    dt = inputs[0].dtype
    return np.stack(hs).astype(dt), h.astype(dt)


# -- decompositions (b: Builder; operands are Tensors) --------------------------------------------


def preactivation(b, x, h, w_x, w_z, bias):
    """x @ W_x + h @ W_z (+ b): one matmul per operand, covering every gate at once."""
    pre = b.matmul(x, w_x) + b.matmul(h, w_z)
    return pre + bias[0] if bias else pre


def gate_block(b, pre, k: int, hidden: int):
    """Columns [k*H, (k+1)*H) of the stacked pre-activation [B, G*H]."""
    batch = pre.shape[0]
    return b.slice(pre, start=(0, k * hidden), stop=(batch, (k + 1) * hidden), step=(1, 1))


def decompose_rnn_cell(b, inputs, attrs):
    x, h, w_x, w_z, *bias = inputs
    return b.op(attrs["activation"], preactivation(b, x, h, w_x, w_z, bias))


def decompose_lstm_cell(b, inputs, attrs):
    x, h, c, w_x, w_z, *bias = inputs
    hidden = h.shape[1]
    pre = preactivation(b, x, h, w_x, w_z, bias)
    gates = {}
    for k, gate in enumerate(LSTM_GATES):
        with b.scope(gate):
            block = gate_block(b, pre, k, hidden)
            gates[gate] = b.tanh(block) if gate == "g" else b.sigmoid(block)
    with b.scope("c"):
        c_new = c * gates["f"] + gates["i"] * gates["g"]
    with b.scope("h"):
        h_new = b.tanh(c_new) * gates["o"]
    return h_new, c_new


def decompose_gru_cell(b, inputs, attrs):
    x, h, w_x, w_z, *biases = inputs
    b_x, b_z = (biases + [None, None])[:2]
    hidden = h.shape[1]
    px = b.matmul(x, w_x)
    px = px + b_x if b_x is not None else px
    if attrs["linear_before_reset"]:
        # one product per operand for all three gates; n's hidden part is multiplied by r
        ph = b.matmul(h, w_z)
        ph = ph + b_z if b_z is not None else ph
    else:
        # n's hidden product takes r * h, so only the r and z columns multiply h directly
        w_rz = b.slice(w_z, start=(0, 0), stop=(hidden, 2 * hidden), step=(1, 1))
        ph = b.matmul(h, w_rz)
        if b_z is not None:
            ph = ph + b.slice(b_z, start=(0,), stop=(2 * hidden,), step=(1,))
    gates = {}
    for k, gate in enumerate(GRU_GATES[:2]):
        with b.scope(gate):
            gates[gate] = b.sigmoid(gate_block(b, px, k, hidden) + gate_block(b, ph, k, hidden))
    with b.scope("n"):
        if attrs["linear_before_reset"]:
            hn = gates["r"] * gate_block(b, ph, 2, hidden)
        else:
            w_n = b.slice(w_z, start=(0, 2 * hidden), stop=(hidden, 3 * hidden), step=(1, 1))
            hn = b.matmul(gates["r"] * h, w_n)
            if b_z is not None:
                hn = hn + b.slice(b_z, start=(2 * hidden,), stop=(3 * hidden,), step=(1,))
        n = b.tanh(gate_block(b, px, 2, hidden) + hn)
    with b.scope("h"):
        return n + gates["z"] * (h - n)


def time_step(b, xs, t: int):
    """xs[t] as [B, D]: slice one step, then reshape the time axis away."""
    steps, batch, d = xs.shape
    x_t = b.slice(xs, start=(t, 0, 0), stop=(t + 1, batch, d), step=(1, 1, 1))
    return b.reshape(x_t, (batch, d))


def _unroll(b, xs, states: tuple, cell: str, weights: tuple, attrs: dict) -> tuple:
    """Apply `cell` T times; returns (hs [T, B, H], *final states)."""
    outs = []
    for t in range(xs.shape[0]):
        with b.scope(f"t{t}"):
            res = b.op(cell, time_step(b, xs, t), *states, *weights, **attrs)
            states = res if isinstance(res, tuple) else (res,)
            outs.append(b.reshape(states[0], (1,) + states[0].shape))
    hs = b.concat(*outs, axis=0)
    return (hs,) + tuple(states)


def decompose_rnn(b, inputs, attrs):
    xs, h0, *weights = inputs
    return _unroll(b, xs, (h0,), "rnn_cell", tuple(weights), attrs)


def decompose_lstm(b, inputs, attrs):
    xs, h0, c0, *weights = inputs
    return _unroll(b, xs, (h0, c0), "lstm_cell", tuple(weights), {})


def decompose_gru(b, inputs, attrs):
    xs, h0, *weights = inputs
    return _unroll(b, xs, (h0,), "gru_cell", tuple(weights), dict(attrs))


def register_ops() -> None:
    activation = {"activation": Attr("str", "tanh", choices=ACTIVATIONS)}
    reset = {"linear_before_reset": Attr("bool", True)}
    register(
        OpDef("rnn_cell", "composite_rnn", (4, 5), infer_rnn_cell, ref_rnn_cell,
              attrs=activation, decompose=decompose_rnn_cell,
              doc="rnn_cell(x [B, D], h [B, H], W_x [D, H], W_z [H, H][, b [H]]) -> "
                  "g(x W_x + h W_z + b), g the `activation`."),
        OpDef("lstm_cell", "composite_rnn", (5, 6), infer_lstm_cell, ref_lstm_cell,
              decompose=decompose_lstm_cell,
              doc="lstm_cell(x [B, D], h [B, H], c [B, H], W_x [D, 4H], W_z [H, 4H][, b [4H]]) "
                  "-> (h', c'); gate blocks in torch order (i, f, g, o)."),
        OpDef("rnn", "composite_rnn", (4, 5), infer_rnn, ref_rnn, attrs=activation,
              decompose=decompose_rnn,
              doc="rnn(xs [T, B, D], h0 [B, H], W_x, W_z[, b]) -> (hs [T, B, H], h_T); "
                  "unrolled into T rnn_cells."),
        OpDef("lstm", "composite_rnn", (5, 6), infer_lstm, ref_lstm, decompose=decompose_lstm,
              doc="lstm(xs [T, B, D], h0 [B, H], c0 [B, H], W_x, W_z[, b]) -> "
                  "(hs [T, B, H], h_T, c_T); unrolled into T lstm_cells."),
        OpDef("gru_cell", "composite_rnn", (4, 6), infer_gru_cell, ref_gru_cell, attrs=reset,
              decompose=decompose_gru_cell,
              doc="gru_cell(x [B, D], h [B, H], W_x [D, 3H], W_z [H, 3H][, b_x [3H][, b_z [3H]]]) "
                  "-> h'; gate blocks in torch order (r, z, n), the biases kept apart."),
        OpDef("gru", "composite_rnn", (4, 6), infer_gru, ref_gru, attrs=reset,
              decompose=decompose_gru,
              doc="gru(xs [T, B, D], h0 [B, H], W_x, W_z[, b_x[, b_z]]) -> (hs [T, B, H], h_T); "
                  "unrolled into T gru_cells."),
    )
