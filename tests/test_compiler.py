"""graphc.compile and the Executable: results equal the graph reference; every argument is
checked before any code runs; parameters can be read and replaced."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.backends.reference import run_graph
from graphc.io import load_example_inputs, load_graph
from graphc.ir.errors import GraphError, InputError

EXAMPLES = ["examples/two_two_one.py", "examples/conv1d_seed.py", "examples/cnn.py",
            "examples/lstm.py"]


@pytest.mark.parametrize("path", EXAMPLES)
@pytest.mark.parametrize("fuse", [True, False])
def test_reference_target_matches_graph_reference(path, fuse):
    g = load_graph(path)
    inputs = load_example_inputs(path)
    exe = graphc.compile(g, target="reference", fuse=fuse)
    got = exe(inputs)
    want = run_graph(g, inputs)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_arguments_are_checked_before_running():
    g = load_graph("examples/two_two_one.py")
    exe = graphc.compile(g, target="reference")
    good = load_example_inputs("examples/two_two_one.py")
    with pytest.raises(InputError, match=r"input 'x1': expected shape \(4,\)"):
        exe({**good, "x1": np.zeros(5, np.float32)})
    with pytest.raises(InputError, match=r"input 'x2': expected dtype f32"):
        exe({**good, "x2": np.zeros(4, np.float64)})
    with pytest.raises(InputError, match="not C-contiguous"):
        exe({**good, "y": np.zeros(8, np.float32)[::2]})
    with pytest.raises(InputError, match="missing input 'y'"):
        exe({k: v for k, v in good.items() if k != "y"})
    with pytest.raises(InputError, match=r"no input\(s\) \['z'\]"):
        exe({**good, "z": np.zeros(1)})


def test_parameters_can_be_read_and_replaced():
    g = load_graph("examples/two_two_one.py")
    exe = graphc.compile(g, target="reference")
    inputs = load_example_inputs("examples/two_two_one.py")
    before = exe(inputs)["yhat"]
    assert exe.params["w05"].shape == ()
    exe.params["w05"] = np.float32(exe.params["w05"] + 1.0)
    after = exe(inputs)["yhat"]
    want = run_graph(g, inputs, {"w05": np.asarray(g.param_values["w05"] + 1.0, np.float32)})
    np.testing.assert_allclose(after, want["yhat"], rtol=1e-6)
    assert not np.allclose(before, after)
    with pytest.raises(InputError, match="parameter 'w05': expected shape"):
        exe.params["w05"] = np.zeros(3, np.float32)
    with pytest.raises(InputError, match="no parameter 'nope'"):
        exe.params["nope"] = 1.0


def test_parameters_for_one_call_are_checked_and_stored_ones_trusted():
    """A call takes the store's arrays as they are (checked when assigned, read-only, so they
    cannot have changed since); parameters passed for one call are checked like inputs."""
    g = load_graph("examples/two_two_one.py")
    exe = graphc.compile(g, target="llvm")
    inputs = load_example_inputs("examples/two_two_one.py")
    assert set(exe.params.arrays()) == {n for n, _ in exe.signature.params}
    assert not any(a.flags.writeable for a in exe.params.arrays().values())
    with pytest.raises(InputError, match="parameter 'w05': expected shape"):
        exe.run(inputs, params={"w05": np.zeros(3, np.float32)})
    with pytest.raises(InputError, match="parameter 'w05': expected dtype"):
        exe.run(inputs, params={"w05": np.zeros((), np.float64)})
    np.testing.assert_allclose(exe(inputs)["yhat"], run_graph(g, inputs)["yhat"], rtol=1e-5)


def test_unknown_target_and_reference_save_are_clear_errors(tmp_path):
    g = load_graph("examples/two_two_one.py")
    with pytest.raises(GraphError, match="unknown target 'tpu'"):
        graphc.compile(g, target="tpu")
    exe = graphc.compile(g, target="reference")
    with pytest.raises(GraphError, match="no compiled code to save"):
        exe.save(tmp_path / "x.gcpkg")
    assert not (tmp_path / "x.gcpkg").exists()


@pytest.mark.parametrize("options, match", [
    ({"threads": "2"}, r"threads='2' must be an integer"),
    ({"threads": True}, r"threads=True must be an integer"),
    ({"fuse": "no"}, r"fuse='no' must be a bool"),
    ({"cache": 0}, r"cache=0 must be a bool"),
])
def test_ill_typed_compile_options_are_clear_errors(options, match):
    g = load_graph("examples/two_two_one.py")
    with pytest.raises(GraphError, match=match):
        graphc.compile(g, target="reference", **options)
    # numpy's integers and bools are integers and bools
    graphc.compile(g, target="reference", threads=np.int64(1), fuse=np.bool_(False))


def test_stats_report_kernels_and_memory():
    g = load_graph("examples/cnn.py")
    fused = graphc.compile(g, target="reference").stats()
    unfused = graphc.compile(g, target="reference", fuse=False).stats()
    assert fused["kernels"] < unfused["kernels"]
    assert fused["lower_bound_bytes"] <= fused["arena_bytes"] <= fused["naive_bytes"]


def test_a_graph_reading_an_undefined_value_is_refused_by_every_entry_point():
    """A builder made with `Builder.from_graph` holds the sources only: an output built on
    the old graph's body without `copy_body` reads a value the new graph never defines."""
    from graphc.ir.errors import DanglingValueError

    b = graphc.Builder("g")
    x = b.input("x", (3,))
    g = b.build(outputs={"y": (x * 2.0).named("y")})
    b2 = graphc.Builder.from_graph(g)
    bad = b2.build(outputs={"loss": b2.tensor(g.output("y")).sum()})
    pattern = r"reads %y \(mul\), which is not defined before it in graph 'g'"
    calls = [lambda: graphc.autodiff(bad, "loss"),
             lambda: graphc.run_reference(bad, {"x": np.ones(3, np.float32)})]
    calls += [lambda t=t: graphc.compile(bad, target=t) for t in ("reference", "llvm")]
    for call in calls:
        with pytest.raises(DanglingValueError, match=pattern):
            call()
