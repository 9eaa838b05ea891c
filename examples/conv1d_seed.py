"""The seed's worked 1-D convolution example (section 5): kernel (+1, -1, +1), stride 2, applied
to the input (5, 6, 6, 2, 5, 6, 5) without padding, gives (5, 9, 4).

The kernel is a frozen parameter (it is fixed, not learned). The graph returns the result twice,
in the chapter's two forms, which must agree:

- `z`: the convolution, `conv(x, k){stride=2}` in the [N, C, W] layout of the conv primitive;
- `z_matrix`: the same map as a matrix product: rows (+1 -1 +1 0 0 0 0), (0 0 +1 -1 +1 0 0),
  (0 0 0 0 +1 -1 +1) (a frozen parameter) times the input.

    graphc show examples/conv1d_seed.py
    graphc run examples/conv1d_seed.py --inputs inputs.npz    # array x of shape (1, 1, 7)
"""

from __future__ import annotations

import numpy as np

from graphc.ir.builder import Builder
from graphc.ir.graph import Graph

KERNEL = (1.0, -1.0, 1.0)
STRIDE = 2
SEED_INPUT = (5.0, 6.0, 6.0, 2.0, 5.0, 6.0, 5.0)


def band_matrix(kernel=KERNEL, n: int = len(SEED_INPUT), stride: int = STRIDE) -> np.ndarray:
    """The matrix whose rows are the kernel shifted by `stride` (a strided valid convolution)."""
    rows = (n - len(kernel)) // stride + 1
    m = np.zeros((rows, n), np.float32)
    for r in range(rows):
        m[r, r * stride:r * stride + len(kernel)] = kernel
    return m


def build(n: int = len(SEED_INPUT), dtype: str = "f32") -> Graph:
    """Convolve an input of length `n` (one example, one channel) with the seed's kernel."""
    b = Builder("conv1d_seed")
    x = b.input("x", (1, 1, n), dtype)
    k = b.param("k", (1, 1, len(KERNEL)), init=np.array(KERNEL).reshape(1, 1, -1), dtype=dtype,
                frozen=True)
    m = b.param("m", init=band_matrix(n=n), dtype=dtype, frozen=True)

    z = b.conv(x, k, stride=(STRIDE,), padding=(0, 0)).named("z")
    x_col = x.reshape(n, 1)
    z_matrix = (m @ x_col).reshape(1, 1, -1).named("z_matrix")
    return b.build(outputs={"z": z, "z_matrix": z_matrix})


def example_inputs() -> dict[str, np.ndarray]:
    """The seed's input (5, 6, 6, 2, 5, 6, 5) as a [1, 1, 7] batch."""
    return {"x": np.array(SEED_INPUT, np.float32).reshape(1, 1, -1)}
