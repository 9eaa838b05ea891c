"""A sequence regressor built on the seed's LSTM (section 9):

    (hs, h_T, c_T) = lstm(xs, h_0 = 0, c_0 = 0)     xs [T, B, D], time-major
    pred = h_T W_y + b_y                             a linear output layer for regression
    loss = mean((pred - y)^2)

The LSTM weights follow torch's layout transposed: W_x [D, 4H], W_z [H, 4H], b [4H] with the gate
blocks in the order (i, f, g, o). The forget-gate block of the bias starts at 1, the usual
choice that lets the cell remember from the first step on.

    graphc show examples/lstm.py
    graphc show examples/lstm.py --decompose    # T scoped lstm_cells: %lstm0.t3.lstm_cell0...
    graphc run examples/lstm.py --inputs inputs.npz    # arrays xs [16, 4, 8], y [4, 1]

`example_inputs()` gives random inputs for the default sizes.
"""

from __future__ import annotations

import numpy as np

from graphc.ir.builder import Builder
from graphc.ir.graph import Graph


def build(steps: int = 16, batch: int = 4, features: int = 8, hidden: int = 16,
          outputs: int = 1, seed: int = 0) -> Graph:
    """The LSTM regressor; parameters drawn from the builder's `seed`."""
    b = Builder("lstm_regressor", seed=seed)
    xs = b.input("xs", (steps, batch, features))
    y = b.input("y", (batch, outputs))

    w_x = b.param("lstm.W_x", (features, 4 * hidden), init="glorot")
    w_z = b.param("lstm.W_z", (hidden, 4 * hidden), init="glorot")
    gate_bias = np.zeros((4, hidden), np.float32)
    gate_bias[1] = 1.0  # forget gate (blocks i, f, g, o)
    bias = b.param("lstm.b", init=gate_bias.reshape(4 * hidden))
    h0 = b.zeros((batch, hidden))
    c0 = b.zeros((batch, hidden))
    _, h_last, _ = b.lstm(xs, h0, c0, w_x, w_z, bias)

    w_y = b.param("head.w", (hidden, outputs), init="glorot")
    b_y = b.param("head.b", (outputs,), init="zeros")
    pred = b.dense(h_last, w_y, b_y).named("pred")
    loss = b.mse(pred, y).named("loss")
    return b.build(outputs={"loss": loss, "pred": pred})


def example_inputs(steps: int = 16, batch: int = 4, features: int = 8, outputs: int = 1,
                   seed: int = 1) -> dict[str, np.ndarray]:
    """Standard-normal sequences and targets."""
    rng = np.random.default_rng(seed)
    return {"xs": rng.standard_normal((steps, batch, features)).astype(np.float32),
            "y": rng.standard_normal((batch, outputs)).astype(np.float32)}
