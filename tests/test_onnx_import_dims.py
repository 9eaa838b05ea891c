"""Symbolic input dimensions of ONNX models (an exporter's dynamic axes) bound at import: by name
(`dims=`, `--dim`) or by whole input shapes (`shapes=`, `--shape`), against torch and ONNX
Runtime at sizes other than the ones the model was exported with."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.cli import main
from graphc.onnx_import import OnnxImportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


class Block(torch.nn.Module):
    """Self-attention whose reshapes read the batch and sequence length from the input: the
    export writes them as Shape -> Gather -> Concat chains over the dynamic axes."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.qkv = heads, torch.nn.Linear(d, 3 * d)
        self.out, self.ln = torch.nn.Linear(d, d), torch.nn.LayerNorm(d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (p.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in self.qkv(x).split(d, dim=-1))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return self.ln(x + self.out((att @ v).transpose(1, 2).reshape(b, t, d)))


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    """(the torch module, the path of its export with dynamic batch and sequence axes)."""
    torch.manual_seed(0)
    net = Block().eval()
    path = tmp_path_factory.mktemp("dims") / "block.onnx"
    torch.onnx.export(net, (torch.zeros(2, 5, 16),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}})
    return net, path


def _ort(path, feeds: dict) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


@pytest.mark.parametrize("batch,seq", [(3, 7), (1, 1)])
def test_dims_bind_dynamic_axes_by_name(block, batch, seq, rng):
    net, path = block
    graph = graphc.from_onnx(str(path), dims={"batch": batch, "seq": seq})
    assert [v.shape for v in graph.inputs] == [(batch, seq, 16)]
    x = rng.standard_normal((batch, seq, 16)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    for target in ("reference", "llvm"):
        got = graphc.compile(graph, target=target)(x=x)["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=target)


def test_a_whole_shape_binds_its_names(block, rng):
    net, path = block
    graph = graphc.from_onnx(str(path), shapes={"x": (4, 3, 16)})
    x = rng.standard_normal((4, 3, 16)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(graphc.compile(graph, target="llvm")(x=x)["y"], want,
                               rtol=1e-4, atol=1e-5)


def test_command_line_compiles_a_package_at_the_bound_sizes(block, tmp_path, rng, capsys):
    _, path = block
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "input 'x'" in err and "--dim batch=N" in err
    pkg = tmp_path / "block.gcpkg"
    assert main(["compile", str(path), "--dim", "batch=2", "--dim", "seq=9", "-o",
                 str(pkg)]) == 0
    x = rng.standard_normal((2, 9, 16)).astype(np.float32)
    got = graphc.load(pkg)(x=x)["y"]
    np.testing.assert_allclose(got, _ort(path, {"x": x})["y"], rtol=1e-4, atol=1e-5)
    assert main(["show", str(path), "--shape", "x=1,2,16"]) == 0
    assert "f32[1, 2, 16]" in capsys.readouterr().out


def _two_inputs():
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Relu", ["s"], ["z"])],
        "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
                helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_names_bound_by_one_input_shape_the_others(rng):
    graph = graphc.from_onnx(_two_inputs(), shapes={"y": (3, 4)})
    assert [v.shape for v in graph.inputs] == [(3, 4), (3, 4)]
    x, y = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    np.testing.assert_array_equal(graphc.compile(graph, target="llvm")(x=x, y=y)["z"],
                                  np.maximum(x + y, 0))


@pytest.mark.parametrize("kwargs,match", [
    ({}, r"input 'x' has shape \['batch', 4\] with symbolic dimensions; bind \['batch'\]"),
    ({"dims": {"batch": 3}}, r"input 'y' has shape \['batch', '\?'\].* shapes=\{'y'"),
    ({"shapes": {"x": (2, 4), "y": (3, 4)}},
     r"shapes\['y'\] gives dimension 'batch' = 3, but shapes\['x'\] gives 2"),
    ({"dims": {"batch": 2}, "shapes": {"y": (3, 4)}},
     r"shapes\['y'\] gives dimension 'batch' = 3, but dims= gives 2"),
    ({"shapes": {"x": (2, 5)}}, r"contradicts the model's \['batch', 4\] at axis 1"),
    ({"shapes": {"y": (3, 4, 1)}}, r"shapes\['y'\] = \[3, 4, 1\] has rank 3"),
    ({"shapes": {"q": (1,)}}, r"shapes given for \['q'\], which are not inputs"),
    ({"dims": {"bat": 2}}, r"dims given for \['bat'\], which no input's shape names"),
    ({"dims": {"batch": -1}}, r"'batch' must be bound to a non-negative integer"),
    ({"shapes": {"y": "ab"}}, r"shapes\['y'\] must be a sequence of non-negative integers"),
])
def test_bad_bindings_name_the_input_or_dimension(kwargs, match):
    with pytest.raises(OnnxImportError, match=match):
        graphc.from_onnx(_two_inputs(), **kwargs)


def test_an_input_of_unknown_rank_needs_its_shape(rng):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["z"])], "norank",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxImportError, match=r"input 'x' has no declared shape"):
        graphc.from_onnx(model)
    graph = graphc.from_onnx(model, shapes={"x": (2, 3)})
    x = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(graphc.compile(graph, target="reference")(x=x)["z"],
                                  np.maximum(x, 0))


@pytest.mark.parametrize("argv,match", [
    (["--dim", "batch"], "--dim 'batch': expected NAME=N"),
    (["--dim", "batch=2x3"], "--dim 'batch=2x3': expected NAME=N"),
    (["--shape", "x=2,a"], "--shape 'x=2,a': expected INPUT=AxBxC"),
])
def test_malformed_bindings_on_the_command_line(tmp_path, argv, match, capsys):
    path = tmp_path / "two.onnx"
    onnx.save(_two_inputs(), str(path))
    assert main(["show", str(path), *argv]) == 2
    assert match in capsys.readouterr().err


def test_bindings_apply_only_to_onnx_models(tmp_path, capsys):
    path = tmp_path / "m.gir"
    path.write_text("graph m(%x: f32[2]) {\n  %y = relu(%x) : f32[2]\n  return y=%y\n}\n")
    assert main(["show", str(path), "--dim", "batch=2"]) == 2
    assert "bind symbolic dimensions of .onnx models" in capsys.readouterr().err
