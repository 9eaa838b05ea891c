"""ONNX import of the recurrent ops: RNN, LSTM and GRU in every direction, with and without
initial states and bias, batch-major (`layout=1`), LSTMs with peepholes, cell clipping and
coupled gates, a GRU exported by `torch.onnx`; against ONNX Runtime on the same file (or its
time-major twin) and torch, through the reference and LLVM backends."""

from __future__ import annotations

import io

import numpy as np
import pytest

import graphc
from graphc.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphc.bench.onnx_models import make_model, node  # noqa: E402

from .test_onnx_import import _check, _check_outputs, _f32, _ort  # noqa: E402


def _recurrent_model(rng, op: str, direction: str, with_bias: bool, with_state: bool,
                     sizes=(5, 3, 4, 6), peephole: bool = False, **attrs):
    """A one-node model of ONNX's LSTM, GRU or RNN (W [dirs, G*H, D], R [dirs, G*H, H],
    B = W_b ++ R_b), its initial states given or not; returns (model, xs)."""
    t, batch, d, h = sizes
    gates, states = {"LSTM": (4, ("h0", "c0")), "GRU": (3, ("h0",)), "RNN": (1, ("h0",))}[op]
    nd = 2 if direction == "bidirectional" else 1
    batch_major = attrs.get("layout", 0) == 1
    xs = _f32(rng, batch, t, d) if batch_major else _f32(rng, t, batch, d)
    inits = {"W": _f32(rng, nd, gates * h, d) * 0.4, "R": _f32(rng, nd, gates * h, h) * 0.4,
             "B": _f32(rng, nd, 2 * gates * h) * 0.3}
    inputs = ["xs", "W", "R", "B"]
    if not with_bias:
        del inits["B"]
        inputs[3] = ""
    if with_state:
        inits.update({s: _f32(rng, *((batch, nd) if batch_major else (nd, batch)), h)
                      for s in states})
        inputs += ["", *states]
    if peephole:
        inits["P"] = _f32(rng, nd, 3 * h) * 0.5
        inputs += [""] * (7 - len(inputs)) + ["P"]
    outputs = ["y", "yh", "yc"][:2 + (op == "LSTM")]
    model = make_model(op.lower(), [node(op, inputs, outputs, hidden_size=h,
                                         direction=direction, **attrs)],
                       {"xs": xs}, outputs, inits)
    return model, xs


@pytest.mark.parametrize("with_state, with_bias, direction", [
    (True, True, "forward"), (False, True, "forward"), (True, False, "forward"),
    (True, True, "reverse"), (True, True, "bidirectional"), (False, False, "bidirectional")])
def test_lstm(rng, with_state, with_bias, direction):
    """ONNX's LSTM (gates i, o, f, c) as graphc's lstm, one per direction."""
    model, xs = _recurrent_model(rng, "LSTM", direction, with_bias, with_state)
    graph = _check(model, {"xs": xs}, rtol=1e-4, atol=1e-5)
    assert graph.param_values["W"].shape == (4, 4 * 6)  # graphc's layout: [D, 4H]


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_batch_major_layout(rng, op, direction):
    """layout=1 (X [B, T, D], states [B, dirs, H], Y [B, T, dirs, H]): transposed in and out
    around the time-major ops. ONNX Runtime refuses layout=1, so the oracle is ONNX Runtime on
    the time-major twin of the same model (its states and input transposed, its outputs
    transposed back)."""
    import copy

    from onnx import numpy_helper

    model, xs = _recurrent_model(rng, op, direction, True, True, layout=1)
    twin = copy.deepcopy(model)
    (rnn,) = twin.graph.node
    (layout,) = [a for a in rnn.attribute if a.name == "layout"]
    layout.i = 0
    dims = twin.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
    for out in twin.graph.output:
        out.type.tensor_type.ClearField("shape")
    for k, init in enumerate(twin.graph.initializer):
        if init.name in ("h0", "c0"):
            arr = numpy_helper.to_array(init).transpose(1, 0, 2)
            twin.graph.initializer[k].CopyFrom(numpy_helper.from_array(arr.copy(), init.name))
    got = _ort(twin, {"xs": xs.transpose(1, 0, 2).copy()})
    want = {k: v.transpose(2, 0, 1, 3) if k == "y" else v.transpose(1, 0, 2)
            for k, v in got.items()}
    _check_outputs(graphc.from_onnx(model), {"xs": xs}, want, every_output=True)


@pytest.mark.parametrize("with_state, direction, peephole, extra", [
    (True, "forward", True, {}), (False, "reverse", True, {}),
    (True, "bidirectional", True, {}), (True, "forward", False, {"clip": 0.7}),
    (True, "bidirectional", True, {"clip": 1.5, "input_forget": 1}),
    (False, "forward", False, {"input_forget": 1})])
def test_lstm_with_peepholes_clip_and_coupled_gates(rng, with_state, direction, peephole,
                                                    extra):
    """Peephole weights P (the input and forget gates see c_{t-1}, the output gate c_t), cell
    clipping and coupled input and forget gates: the LSTM unrolled at import, against ONNX
    Runtime."""
    model, xs = _recurrent_model(rng, "LSTM", direction, True, with_state, peephole=peephole,
                                 **extra)
    xs *= 3  # pre-activations well past the clip
    _check(model, {"xs": xs}, rtol=1e-4, atol=1e-5)
    assert ("P" in graphc.from_onnx(model).param_values) == peephole


@pytest.mark.parametrize("direction, activation", [("forward", None), ("reverse", "Relu"),
                                                   ("bidirectional", "Tanh")])
def test_rnn(rng, direction, activation):
    """ONNX's RNN as graphc's rnn, its activation carried over."""
    nd = 2 if direction == "bidirectional" else 1
    kw = {"activations": [activation] * nd} if activation else {}
    model, xs = _recurrent_model(rng, "RNN", direction, True, True, (4, 2, 3, 5), **kw)
    _check(model, {"xs": xs})


@pytest.mark.parametrize("direction, lbr, with_bias, with_state", [
    ("forward", 0, True, True), ("forward", 1, True, False), ("forward", 0, False, False),
    ("reverse", 1, True, True), ("bidirectional", 0, True, True),
    ("bidirectional", 1, False, True)])
def test_gru(rng, direction, lbr, with_bias, with_state):
    """ONNX's GRU (gates z, r, h; the two biases kept apart; linear_before_reset 0 is ONNX's
    default, 1 torch's) as graphc's gru, one per direction."""
    model, xs = _recurrent_model(rng, "GRU", direction, with_bias, with_state,
                                 linear_before_reset=lbr)
    graph = _check(model, {"xs": xs})
    assert graph.param_values["W"].shape == (4, 3 * 6)
    assert ("B.hidden" in graph.param_values) == with_bias


def test_gru_exported_by_torch(rng, tmp_path):
    """A batch-first torch GRU as torch.onnx exports it (Transpose around a GRU node with
    linear_before_reset=1), against torch itself."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.GRU(4, 6, batch_first=True).eval()
    x = torch.from_numpy(_f32(rng, 2, 5, 4))
    path = tmp_path / "gru.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"],
                      output_names=["y", "h"])
    graph = graphc.from_onnx(str(path))
    want_y, want_h = net(x)
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)({"x": x.numpy()})
        np.testing.assert_allclose(got["y"], want_y.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["h"], want_h.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_weights_computed_from_parameters_train(rng, cls):
    """Exported without constant folding, torch's recurrent layers compute W, R and B from
    their parameters with graph ops: the importer re-lays them out with graph ops too, so the
    outputs match torch and the gradients reach torch's own parameters."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    net = getattr(torch.nn, cls)(3, 5, num_layers=2, bidirectional=True).eval()
    x = torch.from_numpy(_f32(rng, 4, 2, 3))
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                      do_constant_folding=False)
    graph = graphc.from_onnx(buf.getvalue())
    y = net(x)[0]
    w = _f32(rng, *y.shape)
    (y * torch.from_numpy(w)).sum().backward()
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    loss = (b.tensor(dict(graph.outputs)["y"]) * b.const(w)).sum()
    grads = graphc.compile(graphc.autodiff(b.build(outputs={"y": b.tensor(dict(
        graph.outputs)["y"]), "loss": loss}), "loss"), target="llvm")(x=x.numpy())
    np.testing.assert_allclose(grads["y"], y.detach().numpy(), rtol=1e-4, atol=1e-5)
    names = {v.node.attrs["name"] for v in graph.params}
    checked = [n for n, _ in net.named_parameters() if n in names]
    assert len(checked) == len(list(net.parameters())), (names, checked)
    for n, p in net.named_parameters():
        np.testing.assert_allclose(grads[f"grad.{n}"], p.grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=n)


def test_gru_with_other_activations_is_refused(rng):
    h = 3
    inits = {"W": _f32(rng, 1, 3 * h, 2), "R": _f32(rng, 1, 3 * h, h)}
    model = make_model("gru", [node("GRU", ["xs", "W", "R"], ["y"], hidden_size=h,
                                    activations=["Relu", "Tanh"])],
                       {"xs": _f32(rng, 2, 1, 2)}, ["y"], inits)
    with pytest.raises(OnnxImportError, match=r"GRU.*activations \['relu', 'tanh'\] "
                                              r"\(an GRU imports with Sigmoid, Tanh\)"):
        graphc.from_onnx(model)


def _weights_as_constant_nodes(model, names):
    """The model with some initializers moved into Constant nodes (how torch.onnx exports the
    weights of modules it does not see as parameters)."""
    inits = {t.name: t for t in model.graph.initializer}
    consts = [onnx.helper.make_node("Constant", [], [n], value=inits[n]) for n in names]
    kept = [t for t in model.graph.initializer if t.name not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = consts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_weights_given_by_constant_nodes(rng, op):
    """W, R and B from Constant nodes import as constants (not parameters: ONNX fixed them)."""
    model, xs = _recurrent_model(rng, op, "bidirectional", True, True)
    graph = _check(_weights_as_constant_nodes(model, ["W", "R", "B"]), {"xs": xs})
    assert {v.node.attrs["name"] for v in graph.params} == {"h0", "c0"} & set(
        graph.param_values)  # the initial states stay initializers


def test_conv_transpose_weight_given_by_a_constant_node(rng):
    x, w = _f32(rng, 2, 3, 4, 5), _f32(rng, 3, 2, 3, 3)
    model = make_model("ct", [node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 1])],
                       {"x": x}, ["y"], {"w": w})
    graph = _check(_weights_as_constant_nodes(model, ["w"]), {"x": x})
    assert not graph.params


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_with_a_computed_weight(rng, groups):
    """A weight-normalized transposed convolution (its weight computed from parameters at run
    time): re-laid out by graph ops, outputs and parameter gradients against torch."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    net = torch.nn.utils.parametrizations.weight_norm(
        torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                 groups=groups)).eval()
    x = torch.from_numpy(_f32(rng, 2, 4, 5, 3))
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                      do_constant_folding=False)
    graph = graphc.from_onnx(buf.getvalue())
    y = net(x)
    w = _f32(rng, *y.shape)
    (y * torch.from_numpy(w)).sum().backward()
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    out = b.tensor(dict(graph.outputs)["y"])
    got = graphc.compile(graphc.autodiff(b.build(outputs={"y": out, "loss": (
        out * b.const(w)).sum()}), "loss"), target="llvm")(x=x.numpy())
    np.testing.assert_allclose(got["y"], y.detach().numpy(), rtol=1e-4, atol=1e-5)
    grads = {n: p.grad.numpy() for n, p in net.named_parameters()}
    matched = [k for k in got if k.startswith("grad.") and k[5:] in grads]
    assert len(matched) == len(grads), (sorted(got), sorted(grads))
    for k in matched:
        np.testing.assert_allclose(got[k], grads[k[5:]], rtol=1e-4, atol=1e-5, err_msg=k)
