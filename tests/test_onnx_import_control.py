"""ONNX control flow and sequences resolved at import (If, Loop, Scan, Sequence*, Optional*),
against ONNX Runtime on the same file, through the reference and LLVM backends."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=21):
    g = helper.make_graph(nodes, "ctl", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def _vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
        np.asarray(value), name))


def _check(model, feeds, rtol=1e-5, atol=1e-6):
    """Every output of the imported model against ONNX Runtime, on the reference and LLVM."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = dict(zip(names, sess.run(names, feeds), strict=True))
    graph = graphc.from_onnx(model)
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(feeds)
        assert list(got) == names
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=rtol, atol=atol, err_msg=f"{target} {k}")
    return graph


def _branch(name, nodes, out, shape):
    return helper.make_graph(nodes, name, [], [_vi(out, shape)])


def test_if_on_a_shape_imports_only_the_branch_taken(rng):
    """The exporter's pattern: branch on a rank or a size, which folds once shapes are known."""
    then = _branch("then", [helper.make_node("Relu", ["x"], ["t"])], "t", [3, 4])
    other = _branch("else", [helper.make_node("Neg", ["x"], ["e"])], "e", [3, 4])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), _const("zero", np.int64(0)),
             helper.make_node("Gather", ["s", "zero"], ["n"]), _const("two", np.int64(2)),
             helper.make_node("Greater", ["n", "two"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    model = _model(nodes, [_vi("x", [3, 4])], [_vi("y", [3, 4])])
    graph = _check(model, {"x": rng.standard_normal((3, 4)).astype(np.float32)})
    ops = {n.op for n in graph.nodes}
    assert "relu" in ops and "neg" not in ops and "select" not in ops


def test_if_on_values_computes_both_branches_and_selects(rng):
    then = _branch("then", [helper.make_node("Mul", ["x", "x"], ["t"])], "t", [2, 5])
    other = _branch("else", [helper.make_node("Sigmoid", ["x"], ["e"])], "e", [2, 5])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), _const("z", np.float32(0)),
             helper.make_node("Greater", ["s", "z"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    model = _model(nodes, [_vi("x", [2, 5])], [_vi("y", [2, 5])])
    x = rng.standard_normal((2, 5)).astype(np.float32)
    for sign in (1, -1):  # both outcomes of the condition
        _check(model, {"x": sign * np.abs(x)})


def test_if_on_values_with_branches_of_different_shapes_is_refused():
    then = _branch("then", [helper.make_node("Relu", ["x"], ["t"])], "t", [2, 5])
    other = _branch("else", [helper.make_node("ReduceSum", ["x"], ["e"])], "e", [1, 1])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), _const("z", np.float32(0)),
             helper.make_node("Greater", ["s", "z"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    model = _model(nodes, [_vi("x", [2, 5])], [_vi("y", None)])
    with pytest.raises(OnnxImportError, match=r"\(If\): output 0: the branches give f32\[2, 5\] "
                                              r"and f32\[1, 1\]"):
        graphc.from_onnx(model)


def _rnn_body(cond_out_nodes, cond_out="cond_out"):
    """h' = tanh(x[i] W + h U): reads x, W and U from the enclosing graph; scan output h'."""
    nodes = [helper.make_node("Gather", ["x", "i"], ["xi"], axis=0),
             helper.make_node("MatMul", ["xi", "W"], ["a"]),
             helper.make_node("MatMul", ["h", "U"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["h_next"]),
             helper.make_node("Identity", ["h_next"], ["h_scan"]), *cond_out_nodes]
    return helper.make_graph(
        nodes, "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL), _vi("h", [2, 3])],
        [_vi(cond_out, [], TensorProto.BOOL), _vi("h_next", [2, 3]), _vi("h_scan", [2, 3])])


def _rnn_model(body, trips):
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "U"),
             numpy_helper.from_array(np.array(trips, np.int64), "M"),
             numpy_helper.from_array(np.array(True), "go")]
    nodes = [helper.make_node("Loop", ["M", "go", "h0"], ["h_T", "hs"], body=body)]
    return _model(nodes, [_vi("x", [6, 2, 4]), _vi("h0", [2, 3])],
                  [_vi("h_T", [2, 3]), _vi("hs", None)], inits)


def test_loop_with_a_trip_count_unrolls_with_carried_and_scan_outputs(rng):
    body = _rnn_body([helper.make_node("Identity", ["cond"], ["cond_out"])])
    feeds = {"x": rng.standard_normal((6, 2, 4)).astype(np.float32),
             "h0": rng.standard_normal((2, 3)).astype(np.float32)}
    graph = _check(_rnn_model(body, 6), feeds)
    assert [v.shape for _, v in graph.outputs] == [(2, 3), (6, 2, 3)]
    assert sum(n.op == "tanh" for n in graph.nodes) == 6


def test_loop_whose_condition_the_body_computes_from_the_counter(rng):
    """cond_out = i + 1 < 4 with a trip count of 6: four iterations, known at import."""
    cond = [_const("one", np.int64(1)), helper.make_node("Add", ["i", "one"], ["j"]),
            _const("four", np.int64(4)), helper.make_node("Less", ["j", "four"], ["cond_out"])]
    feeds = {"x": rng.standard_normal((6, 2, 4)).astype(np.float32),
             "h0": rng.standard_normal((2, 3)).astype(np.float32)}
    graph = _check(_rnn_model(_rnn_body(cond), 6), feeds)
    assert graph.outputs[1][1].shape == (4, 2, 3)


def test_loops_whose_trip_count_is_unknown_at_import_are_refused():
    data_cond = [helper.make_node("ReduceSum", ["h_next"], ["s"], keepdims=0),
                 _const("z", np.float32(0)), helper.make_node("Greater", ["s", "z"], ["cond_out"])]
    with pytest.raises(OnnxImportError, match=r"\(Loop\): the body's condition depends on input "
                                              r"values \(iteration 0\)"):
        graphc.from_onnx(_rnn_model(_rnn_body(data_cond), 6))
    forever = _rnn_body([helper.make_node("Identity", ["cond"], ["cond_out"])])
    model = _rnn_model(forever, 6)
    model.graph.node[0].input[0] = ""  # no trip count: runs while the condition holds
    with pytest.raises(OnnxImportError, match=r"more than 4096 iterations at import \(no trip "
                                              r"count given\)"):
        graphc.from_onnx(model)


@pytest.mark.parametrize("direction,axis", [(0, 0), (1, 1)])
def test_scan_accumulates_along_an_axis_in_either_direction(rng, direction, axis):
    """A running sum and a running product of tanh, scanned over one axis of x."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "xt"], ["acc_next"]),
         helper.make_node("Tanh", ["acc_next"], ["yt"])], "body",
        [_vi("acc", [3]), _vi("xt", [3])], [_vi("acc_next", [3]), _vi("yt", [3])])
    shape = [5, 3] if axis == 0 else [3, 5]
    nodes = [helper.make_node("Scan", ["a0", "x"], ["a_T", "ys"], body=body, num_scan_inputs=1,
                              scan_input_axes=[axis], scan_input_directions=[direction],
                              scan_output_axes=[axis], scan_output_directions=[direction])]
    model = _model(nodes, [_vi("a0", [3]), _vi("x", shape)], [_vi("a_T", [3]), _vi("ys", None)])
    _check(model, {"a0": rng.standard_normal(3).astype(np.float32),
                   "x": rng.standard_normal(shape).astype(np.float32)})


def test_sequences_of_tensors_known_at_import(rng):
    relu = helper.make_graph([helper.make_node("Relu", ["e"], ["r"])], "relu",
                             [_vi("e", None)], [_vi("r", None)])
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["parts"], axis=1, keepdims=0),
        _const("one", np.int64(1)), _const("last", np.int64(-1)),
        helper.make_node("SequenceAt", ["parts", "one"], ["second"]),
        helper.make_node("SequenceErase", ["parts", "one"], ["fewer"]),
        helper.make_node("SequenceInsert", ["fewer", "z"], ["more"]),
        helper.make_node("SequenceMap", ["more"], ["rectified"], body=relu),
        helper.make_node("ConcatFromSequence", ["rectified"], ["stacked"], axis=1, new_axis=1),
        helper.make_node("SequenceLength", ["more"], ["n"]),
        helper.make_node("Cast", ["n"], ["nf"], to=F),
        helper.make_node("SequenceAt", ["more", "last"], ["zz"]),
        helper.make_node("Mul", ["second", "nf"], ["scaled"]),
        helper.make_node("Add", ["scaled", "zz"], ["y"]),
        helper.make_node("SequenceConstruct", ["y", "zz"], ["pair"]),
        helper.make_node("ConcatFromSequence", ["pair"], ["joined"], axis=0),
    ]
    model = _model(nodes, [_vi("x", [2, 4]), _vi("z", [2])],
                   [_vi("stacked", None), _vi("y", None), _vi("joined", None)])
    _check(model, {"x": rng.standard_normal((2, 4)).astype(np.float32),
                   "z": rng.standard_normal(2).astype(np.float32)})


def test_optional_values_known_at_import(rng):
    opt = helper.make_tensor_type_proto(F, [3])  # the element type of an empty optional
    nodes = [helper.make_node("Optional", ["x"], ["o"]),
             helper.make_node("OptionalHasElement", ["o"], ["has"]),
             helper.make_node("OptionalGetElement", ["o"], ["v"]),
             helper.make_node("Cast", ["has"], ["hf"], to=F),
             helper.make_node("Add", ["v", "hf"], ["y"]),
             helper.make_node("Optional", [], ["empty"], type=opt),
             helper.make_node("OptionalHasElement", ["empty"], ["none"]),
             helper.make_node("Cast", ["none"], ["nf"], to=F),
             helper.make_node("Sub", ["y", "nf"], ["w"])]
    model = _model(nodes, [_vi("x", [3])], [_vi("w", [3])])
    _check(model, {"x": rng.standard_normal(3).astype(np.float32)})


def test_a_sequence_output_is_refused():
    nodes = [helper.make_node("SplitToSequence", ["x"], ["parts"], axis=0)]
    model = _model(nodes, [_vi("x", [2, 4])],
                   [helper.make_tensor_sequence_value_info("parts", F, None)])
    with pytest.raises(OnnxImportError, match=r"output 'parts' is a sequence; graph outputs are "
                                              r"tensors"):
        graphc.from_onnx(model)


def test_a_loop_exported_by_torch_script_against_torch(rng):
    """torch.jit.script keeps a Python for loop, which the exporter writes as a Loop whose
    trip count comes from the input's shape, collecting the steps in a loop-carried sequence
    (SequenceEmpty, SequenceInsert, ConcatFromSequence)."""
    torch = pytest.importorskip("torch")

    class Cumulative(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            h = torch.zeros_like(x[0])
            outs = []
            for t in range(x.size(0)):
                h = torch.tanh(self.lin(x[t]) + h)
                outs.append(h)
            return torch.stack(outs)

    torch.manual_seed(0)
    net = torch.jit.script(Cumulative().eval())
    x = torch.from_numpy(rng.standard_normal((5, 2, 4)).astype(np.float32))
    import io

    buf = io.BytesIO()
    try:
        torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["x"],
                          output_names=["y"])
    except Exception as e:  # noqa: BLE001 - the TorchScript exporter may be unavailable
        pytest.skip(f"torch cannot export a scripted module here: {e}")
    model = onnx.load_from_string(buf.getvalue())
    assert {n.op_type for n in model.graph.node} >= {"Loop", "ConcatFromSequence"}
    graph = graphc.from_onnx(model)
    with torch.no_grad():
        want = net(x).numpy()
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(x=x.numpy())["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=target)
    # the unrolled loop trains by backprop through time: the weight's gradient against torch's
    (weight,) = [k for k, v in graph.param_values.items() if v.shape == (4, 4)]
    b = graphc.Builder.from_graph(graph)
    b.copy_body(graph)
    r = rng.standard_normal((5, 2, 4)).astype(np.float32)
    loss = (b.tensor(graph.output("y")) * b.const(r)).sum()
    g = graphc.autodiff(b.build(outputs={"loss": loss}), "loss", [weight])
    grad = graphc.compile(g, target="llvm")(x=x.numpy())[f"grad.{weight}"]
    net.zero_grad()
    (net(x) * torch.from_numpy(r)).sum().backward()
    # the exporter keeps torch's [out, in] layout and writes Gemm with transB = 1
    np.testing.assert_allclose(grad, net.lin.weight.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_control_flow_models_run_on_triton_under_the_interpreter(rng, tmp_path):
    """A value-dependent If, a Loop carrying state and a sequence, and a reversed Scan, through
    Triton's interpreter (a process of its own, as it must be chosen before triton loads)."""
    pytest.importorskip("triton")
    pytest.importorskip("torch")
    import os
    import subprocess
    import sys

    from tests.test_onnx_import import _TRITON

    then = _branch("then", [helper.make_node("Mul", ["x", "x"], ["t"])], "t", [2, 5])
    other = _branch("else", [helper.make_node("Sigmoid", ["x"], ["e"])], "e", [2, 5])
    if_model = _model([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                       _const("z", np.float32(0)), helper.make_node("Greater", ["s", "z"], ["c"]),
                       helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                      [_vi("x", [2, 5])], [_vi("y", [2, 5])])
    body = _rnn_body([helper.make_node("Identity", ["cond"], ["cond_out"])])
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["acc", "xt"], ["acc_next"]),
         helper.make_node("Tanh", ["acc_next"], ["yt"])], "body",
        [_vi("acc", [3]), _vi("xt", [3])], [_vi("acc_next", [3]), _vi("yt", [3])])
    scan_model = _model([helper.make_node("Scan", ["a0", "x"], ["a_T", "ys"], body=scan_body,
                                          num_scan_inputs=1, scan_input_directions=[1])],
                        [_vi("a0", [3]), _vi("x", [5, 3])], [_vi("a_T", [3]), _vi("ys", None)])
    cases = {
        "if": (if_model, {"x": rng.standard_normal((2, 5)).astype(np.float32)}),
        "loop": (_rnn_model(body, 6), {"x": rng.standard_normal((6, 2, 4)).astype(np.float32),
                                        "h0": rng.standard_normal((2, 3)).astype(np.float32)}),
        "scan": (scan_model, {"a0": rng.standard_normal(3).astype(np.float32),
                              "x": rng.standard_normal((5, 3)).astype(np.float32)}),
    }
    stems = []
    for name, (model, feeds) in cases.items():
        stem = str(tmp_path / name)
        onnx.save(model, stem + ".onnx")
        np.savez(stem + ".in.npz", **feeds)
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        np.savez(stem + ".want.npz", **dict(zip(names, sess.run(names, feeds), strict=True)))
        stems.append(stem)
    res = subprocess.run([sys.executable, "-c", _TRITON, *stems], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
