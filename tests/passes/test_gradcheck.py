"""gradcheck: float64 copies of graphs, autodiff vs central differences per parameter, coordinate
sampling, failure reports, and the `graphc gradcheck` command."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pytest

from graphc.backends.reference import run_graph
from graphc.cli import main
from graphc.gradcheck import GradcheckFailure, gradcheck, to_float64
from graphc.ir.builder import Builder
from graphc.ir.errors import GradientError
from graphc.ir.registry import OPS
from graphc.ir.types import FLOAT_DTYPES
from graphc.ir.verify import verify


def _net():
    b = Builder("net", seed=0)
    x = b.input("x", (4, 3))
    labels = b.input("labels", (4,), "i64")
    h = b.tanh(x @ b.param("w1", (3, 5)) + b.param("b1", (5,), init="normal"))
    logits = b.dense(h, b.param("w2", (5, 2)), b.param("b2", (2,), init="zeros"))
    frozen = b.param("scale", (2,), init="ones", frozen=True)
    return b.build(outputs={"loss": b.cross_entropy(logits * frozen, labels), "logits": logits})


def test_gradcheck_passes_and_reports_every_parameter():
    report = gradcheck(_net(), "loss")
    assert report.ok
    assert [r.name for r in report.rows] == ["w1", "b1", "w2", "b2"]
    assert [r.checked for r in report.rows] == [15, 5, 10, 2]
    assert all(r.max_rel_err < 1e-6 for r in report.rows)
    table = report.table().splitlines()
    assert table[0].split() == ["param", "shape", "checked", "max", "abs", "err", "max", "rel",
                                "err", "ok"]
    assert table[1].startswith("w1") and table[1].endswith("ok")


def _conv_net():
    b = Builder("convnet", seed=1)
    x = b.input("x", (2, 1, 6, 6))
    w = b.param("conv.w", (3, 1, 3, 3), init="he")
    z = b.conv2d(x, w, b.param("conv.b", (3,), init="normal"), padding="same")
    z = b.batch_norm(z, b.param("bn.g", (3,), init="ones"), b.param("bn.b", (3,), init="zeros"),
                     b.param("bn.m", (3,), init="zeros", frozen=True),
                     b.param("bn.v", (3,), init="ones", frozen=True), training=True)[0]
    z = b.avg_pool2d(b.max_pool2d(z.relu(), kernel=2), kernel=3)
    loss = b.mse(b.flatten(z), b.const(0.5, shape=(2, 3)))
    return b.build(outputs={"loss": loss})


def test_gradcheck_on_a_conv_net_samples_big_parameters():
    report = gradcheck(_conv_net(), "loss", max_coords=5)
    assert report.ok, report.table()
    assert {r.name: r.checked for r in report.rows} == {"conv.w": 5, "conv.b": 3, "bn.g": 3,
                                                         "bn.b": 3}


def test_gradcheck_with_respect_to_an_input():
    report = gradcheck(_net(), "loss", wrt=["x"], inputs={
        "x": np.linspace(-1, 1, 12).reshape(4, 3), "labels": np.array([0, 1, 1, 0])})
    assert report.ok and report.rows[0].name == "x" and report.rows[0].checked == 12


def test_to_float64_keeps_values_and_structure():
    g = _net()
    g64 = verify(to_float64(g))
    assert g64.input("labels").dtype == "i64"
    for v in g64.inputs + g64.params:
        if v.dtype != "i64":
            assert v.dtype == "f64"
    assert all(t.dtype == "f64" for n in g64.nodes for t in n.types if t.dtype in FLOAT_DTYPES)
    assert all(g64.param_values[k].dtype == np.float64 for k in g64.param_names)
    assert g64.param("scale").node.attrs["frozen"]
    feed = {"x": np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32),
            "labels": np.array([1, 0, 1, 1])}
    want = run_graph(g, feed)
    got = run_graph(g64, {"x": feed["x"].astype(np.float64), "labels": feed["labels"]})
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-6)


def test_to_float64_casts_fixed_f32_results():
    b = Builder("rand")
    seed = b.input("seed", (), "i64")
    w = b.param("w", (3,))
    g = b.build(outputs={"loss": (b.random_uniform(seed, shape=(3,)) * w).sum()})
    g64 = verify(to_float64(g))
    assert g64.output("loss").dtype == "f64"
    assert gradcheck(g, "loss").ok


def _break_tanh(monkeypatch):
    def wrong_vjp(b, ins, outs, cts, attrs):  # forgets the square: 1 - y instead of 1 - y^2
        return (cts[0] * (1.0 - outs[0]),)
    monkeypatch.setitem(OPS, "tanh", dataclasses.replace(OPS["tanh"], vjp=wrong_vjp))


def test_wrong_vjp_is_caught(monkeypatch):
    _break_tanh(monkeypatch)
    with pytest.raises(GradcheckFailure, match="failed for w1, b1") as info:
        gradcheck(_net(), "loss")
    assert isinstance(info.value, GradientError)
    rows = {r.name: r for r in info.value.report.rows}
    assert not rows["w1"].ok and rows["w2"].ok  # w2 sits above the tanh
    assert "FAIL" in info.value.report.table()
    report = gradcheck(_net(), "loss", raise_on_failure=False)
    assert not report.ok and [r.name for r in report.failures()] == ["w1", "b1"]


MODEL = textwrap.dedent("""
    from graphc.ir.builder import Builder

    def build():
        b = Builder("cli_net", seed=3)
        x = b.input("x", (3, 2))
        h = b.tanh(x @ b.param("w", (2, 4)))
        return b.build(outputs={"objective": (h * h).sum(), "h": h})
""")


def test_cli_gradcheck(tmp_path, capsys, monkeypatch):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    assert main(["gradcheck", str(path), "--loss", "objective"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("param") and "w " in out and "1 parameters ok" in out
    assert main(["gradcheck", str(path)]) == 0  # the only scalar output is the loss
    capsys.readouterr()
    assert main(["gradcheck", str(path), "--loss", "h"]) == 2
    assert "'h' must be a scalar" in capsys.readouterr().err
    _break_tanh(monkeypatch)
    assert main(["gradcheck", str(path), "--loss", "objective"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "gradcheck failed: w" in captured.err
