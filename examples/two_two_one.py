"""The 2-2-1 sigmoid network of the seed notes (section 2), written like its formula:

    ŷ = g5(w05 + w35·g3(w03 + w13·x1 + w23·x2) + w45·g4(w04 + w14·x1 + w24·x2))
    L = (y - ŷ)²

Every weight w_ij (from unit i to unit j; i = 0 is the bias input) is its own scalar parameter,
so the graph, its gradient and `graphc viz` show the chapter's computation graph node for node:
the named values in3, in4, h3, h4, in5, yhat and loss.

    graphc show examples/two_two_one.py
    graphc run examples/two_two_one.py --inputs inputs.npz    # arrays x1, x2, y of shape (batch,)

`example_inputs()` gives a small set of inputs for the default batch.
"""

from __future__ import annotations

import numpy as np

from graphc.ir.builder import Builder
from graphc.ir.graph import Graph

WEIGHTS = ("w03", "w13", "w23", "w04", "w14", "w24", "w05", "w35", "w45")


def build(batch: int = 4, seed: int = 0, dtype: str = "f32",
          weights: dict[str, float] | None = None) -> Graph:
    """The 2-2-1 net on `batch` examples; weights drawn from N(0, 1) by `seed` unless given."""
    b = Builder("two_two_one", seed=seed)
    rng = np.random.default_rng(seed)
    init = {name: float(rng.standard_normal()) for name in WEIGHTS}
    init.update(weights or {})
    w = {name: b.param(name, (), init=init[name], dtype=dtype) for name in WEIGHTS}
    w03, w13, w23, w04, w14, w24, w05, w35, w45 = (w[name] for name in WEIGHTS)

    x1 = b.input("x1", (batch,), dtype)
    x2 = b.input("x2", (batch,), dtype)
    y = b.input("y", (batch,), dtype)

    def g3(t): return t.sigmoid()
    def g4(t): return t.sigmoid()
    def g5(t): return t.sigmoid()

    in3 = (w03 + w13 * x1 + w23 * x2).named("in3")
    in4 = (w04 + w14 * x1 + w24 * x2).named("in4")
    h3 = g3(in3).named("h3")
    h4 = g4(in4).named("h4")
    in5 = (w05 + w35 * h3 + w45 * h4).named("in5")
    yhat = g5(in5).named("yhat")
    loss = ((y - yhat) ** 2).sum().named("loss")  # summed over the batch: L per example
    return b.build(outputs={"yhat": yhat, "loss": loss})


def example_inputs(batch: int = 4, seed: int = 1) -> dict[str, np.ndarray]:
    """Inputs x1, x2 in [-1, 1] and 0/1 targets y (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (2, batch)).astype(np.float32)
    y = rng.integers(0, 2, batch).astype(np.float32)
    return {"x1": x[0], "x2": x[1], "y": y}
