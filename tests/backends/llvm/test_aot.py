"""AOT packages of the LLVM target: save -> load -> run in a fresh process that never imports
llvmlite; corrupted, tampered and foreign packages are refused with a clear error; the portable
x86-64-v3 build; the manifest describes kernels, CPU requirements and the C entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc
from graphc.backends.llvm.aot_loader import AotLoadError, host_cpu_flags
from graphc.backends.llvm.program import PORTABLE_FLAGS
from graphc.backends.reference import run_graph
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphError
from graphc.package import PackageError, manifest_digest

from .conftest import assert_outputs_match


@pytest.fixture(scope="module")
def model():
    b = Builder("aot_model", seed=1)
    x = b.input("x", (6, 10))
    idx = b.input("idx", (3,), "i64")
    w = b.param("w", (10, 20))
    bias = b.param("bias", (20,), init="normal")
    h = (x @ w + bias).tanh()
    b.output("y", b.softmax(h))
    b.output("rows", b.op("take", h, idx, axis=0).sum((1,)))
    return b.build()


def _inputs(rng):
    return {"x": rng.standard_normal((6, 10)).astype(np.float32),
            "idx": np.array([5, -1, 0], np.int64)}


@pytest.fixture(scope="module")
def package(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "model.gcpkg"
    graphc.compile(model, target="llvm").save(path)
    return path


_RUN_PACKAGE = textwrap.dedent("""
    import sys
    import numpy as np
    import graphc
    exe = graphc.load(sys.argv[1])
    data = np.load(sys.argv[2])
    out = exe(x=data["x"], idx=data["idx"])
    np.savez(sys.argv[3], **out)
    try:
        exe(x=data["x"], idx=np.array([0, 6, 1]))
    except graphc.GraphError as e:
        print("error:", e)
    assert "llvmlite" not in sys.modules, "loading a package imported llvmlite"
    print("threads", exe.program.threads)
""")


def test_saved_package_runs_in_a_fresh_process_without_llvmlite(model, package, rng, tmp_path):
    inputs = _inputs(rng)
    np.savez(tmp_path / "in.npz", **inputs)
    proc = subprocess.run([sys.executable, "-c", _RUN_PACKAGE, str(package),
                           str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "GRAPHC_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    assert "take: index 6 (at index position (1,)) is out of range [-6, 6)" in proc.stdout
    assert "threads 2" in proc.stdout
    with np.load(tmp_path / "out.npz") as out:
        got = {k: out[k] for k in out.files}
    assert_outputs_match(got, run_graph(model, inputs))


def test_manifest_describes_the_compiled_code(package, model):
    m = json.loads((package / "manifest.json").read_text())
    info = m["target_info"]
    assert m["target"] == "llvm" and (package / info["library"]).is_file()
    layout = info["layout"]
    assert [(a["name"], a["role"]) for a in layout["args"]] == [
        ("x", "input"), ("idx", "input"), ("w", "param"), ("bias", "param"),
        ("y", "output"), ("rows", "output")]
    assert layout["c_signature"].startswith("void graphc_main(void **args")
    assert info["cpu_flags"] and set(info["cpu_flags"]) <= host_cpu_flags() | {"abm"}
    assert [k["kind"] for k in m["kernels"]]


def test_loaded_package_matches_in_process(package, model, rng):
    exe = graphc.load(package)
    inputs = _inputs(rng)
    assert_outputs_match(exe(inputs), run_graph(model, inputs))
    with pytest.raises(GraphError, match="take: index -7"):
        exe(x=inputs["x"], idx=np.array([-7, 0, 0]))
    exe.params["w"] = np.zeros((10, 20), np.float32)
    np.testing.assert_allclose(exe(inputs)["y"], run_graph(
        model, inputs, {"w": np.zeros((10, 20), np.float32)})["y"], rtol=1e-5, atol=1e-6)


def _copy(package, tmp_path):
    import shutil

    dest = tmp_path / "copy.gcpkg"
    shutil.copytree(package, dest)
    return dest


def test_corrupted_library_is_refused(package, tmp_path):
    bad = _copy(package, tmp_path)
    lib = bad / "graphc.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="does not match its hash"):
        graphc.load(bad)


def _write_sealed(folder, m: dict) -> None:
    """The manifest as a graphc elsewhere (another machine, another version) would write it."""
    m["digest"] = manifest_digest(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def test_missing_cpu_features_are_refused(package, tmp_path):
    bad = _copy(package, tmp_path)
    m = json.loads((bad / "manifest.json").read_text())
    m["target_info"]["cpu_flags"].append("avx10_9")
    _write_sealed(bad, m)
    with pytest.raises(AotLoadError, match="lacks: avx10_9"):
        graphc.load(bad)


def test_other_machine_and_calling_convention_are_refused(package, tmp_path):
    bad = _copy(package, tmp_path)
    m = json.loads((bad / "manifest.json").read_text())
    m["target_info"]["machine"] = "riscv64"
    _write_sealed(bad, m)
    with pytest.raises(AotLoadError, match="compiled for riscv64"):
        graphc.load(bad)
    m["target_info"]["machine"] = __import__("platform").machine()
    m["target_info"]["layout"]["abi"] = 99
    _write_sealed(bad, m)
    with pytest.raises(GraphError, match="calling convention 99"):
        graphc.load(bad)


def test_edited_manifest_is_refused(package, tmp_path):
    """The manifest holds what the compiled code trusts (the arena size, the shapes calls are
    checked against): any edit is caught by its digest before anything runs."""
    bad = _copy(package, tmp_path)
    m = json.loads((bad / "manifest.json").read_text())
    m["target_info"]["layout"]["arena_bytes"] = 64
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="does not match its digest"):
        graphc.load(bad)
    m["version"] = 1
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="format version 1 is not supported"):
        graphc.load(bad)


@pytest.mark.parametrize("edit", [
    lambda m: m.update(signature=5),
    lambda m: m.update(target=["llvm"]),
    lambda m: m["target_info"].update(layout=[]),
    lambda m: m["signature"].pop("inputs"),
    lambda m: m.update(files=[1, 2]),
])
def test_malformed_manifest_is_a_package_error(package, tmp_path, edit):
    """A manifest with a valid digest but fields of the wrong kind (a writer of another layout)
    is a PackageError naming the manifest, never a KeyError or TypeError."""
    bad = _copy(package, tmp_path)
    m = json.loads((bad / "manifest.json").read_text())
    edit(m)
    _write_sealed(bad, m)
    with pytest.raises(PackageError, match="manifest"):
        graphc.load(bad)


def test_portable_build(model, tmp_path, rng):
    exe = graphc.compile(model, target="llvm", portable=True)
    path = tmp_path / "portable.gcpkg"
    exe.save(path)
    info = json.loads((path / "manifest.json").read_text())["target_info"]
    assert info["cpu"] == "x86-64-v3" and info["portable"]
    assert tuple(info["cpu_flags"]) == PORTABLE_FLAGS
    if not set(PORTABLE_FLAGS) <= host_cpu_flags():
        pytest.skip("this CPU cannot run x86-64-v3 code")
    inputs = _inputs(rng)
    assert_outputs_match(graphc.load(path)(inputs), run_graph(model, inputs))


def test_package_of_a_jit_program(model, tmp_path, rng):
    """A program compiled without the cache (JIT) saves by emitting its library then."""
    exe = graphc.compile(model, target="llvm", cache=False)
    exe.save(tmp_path / "jit.gcpkg")
    inputs = _inputs(rng)
    assert_outputs_match(graphc.load(tmp_path / "jit.gcpkg")(inputs), run_graph(model, inputs))


def test_saving_replaces_only_an_earlier_package(model, tmp_path, rng):
    """A package replaces an earlier one or an empty folder; a file or a folder of other things
    at the path is refused and left as it was (saving must never delete the user's data)."""
    exe = graphc.compile(model, target="llvm")
    inputs = _inputs(rng)
    path = tmp_path / "model.gcpkg"
    exe.save(path)
    (path / "stale.txt").write_text("from the earlier package")
    exe.save(path)  # over an earlier package
    assert not (path / "stale.txt").exists()
    assert_outputs_match(graphc.load(path)(inputs), run_graph(model, inputs))
    (tmp_path / "empty").mkdir()
    exe.save(tmp_path / "empty")
    assert_outputs_match(graphc.load(tmp_path / "empty")(inputs), run_graph(model, inputs))

    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    with pytest.raises(PackageError, match="not empty and is not a graphc package"):
        exe.save(mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    a_file = tmp_path / "model.py"
    a_file.write_text("keep me too")
    with pytest.raises(PackageError, match="exists and is not a folder"):
        exe.save(a_file)
    assert a_file.read_text() == "keep me too"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "empty", "model.gcpkg", "model.py", "notes"]  # no temporary folder left behind
