"""Random torch models (tests/torch_models.py) exported by `torch.onnx`, imported by graphc:
outputs against ONNX Runtime on the same file (reference and LLVM), and the input's gradient
through the imported graph against torch's autograd. The sweep that found the importer's
negative-step slices, reflection/edge padding, constant-node weights and folded bool
conditions; its seeds stay as a regression net."""

from __future__ import annotations

import io

import numpy as np
import pytest

import graphc

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from .test_onnx_import import _ort  # noqa: E402
from .torch_models import random_torch_model  # noqa: E402

OPSETS = (13, 15, 17, 18, 20)


def _export(model, x, opset: int) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=["x"],
                      output_names=["y"], do_constant_folding=False)
    return buf.getvalue()


def _close(got, want, what):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


@pytest.mark.parametrize("seed", range(24))
def test_random_torch_export_imports_and_differentiates(seed):
    model, x = random_torch_model(seed)
    opset = OPSETS[seed % len(OPSETS)]
    data = _export(model, x, opset)
    graph = graphc.from_onnx(data)
    want = _ort(onnx.load_model_from_string(data), {"x": x.numpy()})["y"]
    for target in ("reference", "llvm"):
        _close(graphc.compile(graph, target=target)(x=x.numpy())["y"], want,
               f"{target}, opset {opset}, {model}")

    xt = x.clone().requires_grad_(True)
    y = model(xt)
    w = np.random.default_rng(seed).standard_normal(tuple(y.shape)).astype(np.float32)
    (y * torch.from_numpy(w)).sum().backward()
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    loss = (b.tensor(dict(graph.outputs)["y"]) * b.const(w)).sum()
    grads = graphc.autodiff(b.build(outputs={"loss": loss}), "loss", wrt=["x"])
    np.testing.assert_allclose(graphc.compile(grads, target="llvm")(x=x.numpy())["grad.x"],
                               xt.grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=str(model))
