"""ONNX Slice with negative steps and Pad in every mode (as torch.onnx exports flips and
reflection/replication padding), against ONNX Runtime on the same file, with Pad's gradient
against torch."""

from __future__ import annotations

import numpy as np
import pytest

import graphc

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _f32, _ort  # noqa: E402

BIG = 2 ** 63 - 1


@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([-1], [-BIG], [1], [-1]),                  # torch.flip as exported: the whole axis reversed
    ([-1, -1], [-BIG, -BIG], [0, 2], [-1, -1]),
    ([8, 4], [1, -7], [1, 2], [-3, -2]),        # from inside, strides, an end before the start
    ([100], [-100], [1], [-2]),                 # starts past the end clamp to the last element
    ([2], [5], [1], [-1]),                      # an end above the start: empty
    ([-2, 1], [0, 5], [1, 2], [-1, 2]),         # one axis backwards, one forwards
])
def test_slice_with_negative_steps(rng, starts, ends, axes, steps):
    """A negative step walks the axis backwards (torch exports flip and some padding modes so):
    the axis is reversed, then sliced forwards; also when the operand is a constant."""
    x = _f32(rng, 3, 10, 6)
    i64 = lambda v: np.asarray(v, np.int64)  # noqa: E731
    model = make_model("neg_slice", [
        node("Slice", ["x", "s", "e", "a", "st"], ["y"]),
        node("Slice", ["c", "s", "e", "a", "st"], ["yc"]),
    ], {"x": x}, ["y", "yc"],
        {"s": i64(starts), "e": i64(ends), "a": i64(axes), "st": i64(steps),
         "c": _f32(rng, 3, 10, 6)})
    _check(model, {"x": x}, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("shape, pads, axes", [
    ((2, 3, 5, 6), [0, 0, 1, 2, 0, 0, 2, 1], None),      # a conv's reflection padding
    ((2, 3, 5, 6), [3, 0, 4, 5], [-1, 2]),               # opset 18's axes input, wrapping twice
    ((4, 7), [-1, 2, 1, -3], None),                       # negative pads crop first
    ((6,), [5, 0], None),
])
def test_pad_modes(rng, mode, shape, pads, axes):
    """ONNX Pad in every mode against ONNX Runtime, forward and, through the gradient of a
    weighted sum, backward against torch."""
    if mode == "reflect" and any(p >= 5 for p in pads):
        pytest.skip("ONNX Runtime reflects at most n - 1 elements")
    x = _f32(rng, *shape)
    extra = {"pads": np.asarray(pads, np.int64), "v": np.asarray(0.5, np.float32)}
    ins = ["x", "pads", "v" if mode == "constant" else ""]
    if axes is not None:
        extra["axes"] = np.asarray(axes, np.int64)
        ins.append("axes")
    model = make_model("pad", [node("Pad", ins, ["y"], mode=mode)], {"x": x}, ["y"], extra)
    model.opset_import[0].version = 19
    graph = _check(model, {"x": x}, rtol=0, atol=0)
    torch = pytest.importorskip("torch")
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    y = b.tensor(dict(graph.outputs)["y"])
    w = rng.standard_normal(y.shape).astype(np.float32)
    g = graphc.autodiff(b.build(outputs={"loss": (y * b.const(w)).sum()}), "loss", wrt=["x"])
    # torch's padding (positions from numpy's pad) is ONNX Runtime's, so its gradient is due
    np.testing.assert_array_equal(_torch_pad(torch, torch.from_numpy(x), pads, axes, mode,
                                             shape).numpy(), _ort(model, {"x": x})["y"])
    want = torch.func.grad(lambda t: (_torch_pad(torch, t, pads, axes, mode, shape)
                                      * torch.from_numpy(w)).sum())(torch.from_numpy(x))
    for target in ("reference", "llvm"):
        np.testing.assert_allclose(graphc.compile(g, target=target)(x=x)["grad.x"],
                                   want.numpy(), rtol=1e-5, atol=1e-5, err_msg=target)


def test_pad_value_from_a_constant_node(rng):
    """torch's ZeroPad2d at opset 18 gives the pad value as a float Constant node (a graph
    constant to the importer, not an initializer)."""
    x = _f32(rng, 2, 3, 4)
    value = onnx.numpy_helper.from_array(np.asarray(-1.25, np.float32))
    model = make_model("pad_const", [
        node("Constant", [], ["v"], value=value),
        node("Pad", ["x", "pads", "v"], ["y"]),
    ], {"x": x}, ["y"], {"pads": np.asarray([0, 1, 2, 0, 0, 1], np.int64)})
    _check(model, {"x": x}, rtol=0, atol=0)


def _torch_pad(torch, t, pads, axes, mode, shape):
    """ONNX's pads (all the begins, then all the ends) through numpy's positions, in torch."""
    rank = len(shape)
    axes = [a % rank for a in (axes if axes is not None else range(rank))]
    for i, a in enumerate(axes):
        lo, hi = pads[i], pads[i + len(axes)]
        n = t.shape[a]
        t = t.narrow(a, max(-lo, 0), n - max(-lo, 0) - max(-hi, 0))
        lo, hi = max(lo, 0), max(hi, 0)
        if mode == "constant":
            size = list(t.shape)
            parts = []
            for k in (lo, None, hi):
                if k is None:
                    parts.append(t)
                elif k:
                    size[a] = k
                    parts.append(torch.full(size, 0.5))
            t = torch.cat(parts, a)
        else:
            at = np.pad(np.arange(t.shape[a]), (lo, hi), mode=mode)
            t = t.index_select(a, torch.from_numpy(at))
    return t
