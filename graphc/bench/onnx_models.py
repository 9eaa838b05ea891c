"""Small helpers to write a workload's ONNX model with `onnx.helper` (imported on first use).

Models are written by hand, one per workload, in the form an ONNX exporter would produce for
the standard PyTorch module (Conv + Relu, Gemm, the fused LSTM op, BatchNormalization in
training mode), so ONNX Runtime runs its own best kernels rather than our primitives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

OPSET = 17


def node(op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any):
    """One ONNX node (`onnx.helper.make_node`)."""
    from onnx import helper

    return helper.make_node(op, list(inputs), list(outputs), **attrs)


def make_model(name: str, nodes: Sequence[Any], inputs: Mapping[str, np.ndarray],
               outputs: Sequence[str], initializers: Mapping[str, np.ndarray] | None = None):
    """A ModelProto: graph inputs typed from example arrays, weights as initializers."""
    import onnx
    from onnx import helper, numpy_helper

    def info(n: str, a: np.ndarray):
        return helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                             list(a.shape))

    graph = helper.make_graph(
        list(nodes), name, [info(n, a) for n, a in inputs.items()],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.ascontiguousarray(a).reshape(np.shape(a)), n)  # 0-d stays
         for n, a in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 9)  # readable by older runtimes too
    # outputs are typed but left without a shape (the checker would want one): the runtime
    # infers them
    return model


def const(value: float | np.ndarray) -> np.ndarray:
    """A float32 initializer."""
    return np.asarray(value, dtype=np.float32)
