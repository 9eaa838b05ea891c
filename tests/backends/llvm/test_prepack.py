"""Prepacked weights: a GEMM whose B is a parameter packs it once per parameter epoch and
reuses the packed copy; every way of changing a parameter must still be seen by the next call
(numpy float64 is the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.ir.builder import Builder


def _mlp():
    b = Builder("prepack_mlp", seed=3)
    x = b.input("x", (70, 90))
    w1 = b.param("w1", (90, 130), init="normal")
    w2 = b.param("w2", (130, 20), init="normal")
    h = (x @ w1).relu()
    # w1 used a second time (transposed: its own packed layout) and w2 twice (the same one)
    y = h @ w2 + (h @ w2) * 0.5 + ((h @ w1.T) @ w1) @ w2 * 0.01
    return b.build(outputs={"y": y})


def _want(x, w1, w2):
    x, w1, w2 = (a.astype(np.float64) for a in (x, w1, w2))
    h = np.maximum(x @ w1, 0)
    return h @ w2 * 1.5 + ((h @ w1.T) @ w1) @ w2 * 0.01


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


@pytest.fixture(scope="module")
def exe():
    return graphc.compile(_mlp(), "llvm", cache=False)


def test_weights_are_prepacked(exe):
    plans = exe.program.info["kernel_plans"]
    assert any(p.get("prepacked_b") for p in plans.values())


def test_every_parameter_change_is_seen(exe, rng):
    x = rng.standard_normal((70, 90)).astype(np.float32)
    w1, w2 = (np.array(exe.params[n]) for n in ("w1", "w2"))
    for _ in range(2):  # packed on the first call, reused on the second
        _close(exe.run({"x": x})["y"], _want(x, w1, w2))
    # an override for one call, then the stored values again
    w1b = rng.standard_normal(w1.shape).astype(np.float32)
    _close(exe.run({"x": x}, params={"w1": w1b})["y"], _want(x, w1b, w2))
    _close(exe.run({"x": x})["y"], _want(x, w1, w2))
    # assignment: a new value, and back to the old object's values
    exe.params["w2"] = w2 * 2
    _close(exe.run({"x": x})["y"], _want(x, w1, w2 * 2))
    exe.params["w2"] = w2
    _close(exe.run({"x": x})["y"], _want(x, w1, w2))


def test_an_override_changed_in_place_between_calls_is_seen(exe, rng):
    """A call with its own parameters gets an epoch of its own: its weights are packed again
    (once, for every call site that shares them: w1 is read at two, w2 at three), so the same
    array changed in place between two such calls gives the new values."""
    x = rng.standard_normal((70, 90)).astype(np.float32)
    w1 = rng.standard_normal((90, 130)).astype(np.float32)
    w2 = np.array(exe.params["w2"])
    _close(exe.run({"x": x}, params={"w1": w1})["y"], _want(x, w1, w2))
    w1 *= -0.5
    _close(exe.run({"x": x}, params={"w1": w1, "w2": w2})["y"], _want(x, w1, w2))
    w2 += 0.25
    _close(exe.run({"x": x}, params={"w1": w1, "w2": w2})["y"], _want(x, w1, w2))
    _close(exe.run({"x": x})["y"], _want(x, np.array(exe.params["w1"]), w2 - 0.25))


def test_stored_parameters_are_read_only(exe):
    with pytest.raises(ValueError, match="read-only"):
        exe.params["w1"][0, 0] = 1.0


def test_assigned_array_is_copied(rng):
    exe = graphc.compile(_mlp(), "llvm", cache=False)
    x = rng.standard_normal((70, 90)).astype(np.float32)
    w1 = rng.standard_normal((90, 130)).astype(np.float32)
    exe.params["w1"] = w1
    w2 = np.array(exe.params["w2"])
    first = exe.run({"x": x})["y"].copy()
    w1 += 1.0  # the caller's array, not the stored copy
    np.testing.assert_array_equal(exe.run({"x": x})["y"], first)
    _close(first, _want(x, w1 - 1.0, w2))


def test_package_keeps_prepacking(exe, tmp_path, rng):
    exe.save(tmp_path / "m.gcpkg")
    loaded = graphc.load(tmp_path / "m.gcpkg")
    x = rng.standard_normal((70, 90)).astype(np.float32)
    w1, w2 = (np.array(exe.params[n]) for n in ("w1", "w2"))
    for _ in range(2):
        _close(loaded.run({"x": x})["y"], _want(x, w1, w2))
    loaded.params["w1"] = w1 * -1
    _close(loaded.run({"x": x})["y"], _want(x, -w1, w2))
