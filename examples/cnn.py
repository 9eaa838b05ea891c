"""The seed's small convolutional net (sections 5-7) for 8x8 single-channel digits, 10 classes:

    conv 3x3 (padding same) -> batch norm -> relu -> max pool 2x2
    -> residual block  z' = relu(z + conv(relu(conv(z))))        (section 6, f(z) = V g(W z))
    -> flatten -> dense -> softmax cross-entropy with integer labels

Inputs: `x` [N, 1, 8, 8] f32 and `labels` [N] i64. Outputs: `loss`, `logits` and, in training
mode, the batch-norm running statistics after this batch (`update.bn.running_mean`,
`update.bn.running_var`): by the `update.<param>` convention of `graphc.train`, a training
step feeds them back as the new values of those parameters (frozen: state, not trained by
gradient descent).

    graphc show examples/cnn.py
    graphc show examples/cnn.py --decompose
    graphc run examples/cnn.py --inputs inputs.npz    # arrays x [16, 1, 8, 8], labels [16]

`example_inputs()` gives random inputs for the default batch. The network's code is
`digits_cnn` in `graphc/models.py`.
"""

from __future__ import annotations

from graphc.ir.graph import Graph
from graphc.models import digits_cnn, digits_example_inputs

# The builder lives in graphc/models.py (the demo and the benchmarks use the same network).


def build(batch: int = 16, channels: int = 8, training: bool = True, seed: int = 0) -> Graph:
    """The CNN on a batch of `batch` images; parameters drawn from the builder's `seed`."""
    return digits_cnn(batch, channels, training, seed)


def example_inputs(batch: int = 16, seed: int = 1):
    """Random images in [0, 1) and labels in 0..9."""
    return digits_example_inputs(batch, seed)
