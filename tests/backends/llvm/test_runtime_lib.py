"""The precompiled runtime library: graph modules declare the GEMM, the runtime object defines
it, and both the JIT and the linked-library paths compute the same products as numpy."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.backends.llvm import runtime_lib
from graphc.backends.llvm.program import generated_ir
from graphc.backends.llvm.target import TargetSpec
from graphc.ir.builder import Builder


def _matmul_graph(dtype: str):
    b = Builder(f"mm_{dtype}", seed=0)
    x = b.input("x", (70, 90), dtype)
    w = b.param("w", (90, 50), init="normal", dtype=dtype)
    return b.build(outputs={"y": (x @ w).relu()})


def test_graph_module_declares_the_gemm_only():
    exe = graphc.compile(_matmul_graph("f32"), "llvm", fuse=True, cache=False)
    text = generated_ir(exe.schedule)
    assert "declare void @\"graphc.gemm.shared.f32\"" in text
    assert "define internal void @\"graphc.gemm.shared.f32" not in text


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("cache", [False, True])
def test_runtime_gemm_jit_and_linked(dtype, cache, tmp_path, rng):
    graph = _matmul_graph(dtype)
    exe = graphc.compile(graph, "llvm", cache=cache, cache_dir=str(tmp_path))
    x = rng.standard_normal((70, 90)).astype(dtype.replace("f", "float"))
    w = graph.param_values["w"].astype(np.float64)
    want = np.maximum(x.astype(np.float64) @ w, 0)
    got = exe.run({"x": x})["y"]
    tol = 1e-4 if dtype == "f32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_runtime_object_cached_on_disk(tmp_path):
    spec = TargetSpec.host()
    key = runtime_lib.runtime_key("f32", spec, spec.vector_bits)
    runtime_lib._memory.pop(key, None)  # force the disk path in this process
    obj = runtime_lib.runtime_object("f32", spec, spec.vector_bits, tmp_path)
    path = tmp_path / "runtime" / f"{key}.o"
    assert path.read_bytes() == obj and obj[:4] == b"\x7fELF"
    runtime_lib._memory.pop(key, None)
    assert runtime_lib.runtime_object("f32", spec, spec.vector_bits, tmp_path) == obj


def test_runtime_key_depends_on_target():
    host, portable = TargetSpec.host(), TargetSpec.portable()
    assert runtime_lib.runtime_key("f32", host, 512) != runtime_lib.runtime_key("f32", host, 256)
    assert runtime_lib.runtime_key("f32", host, 256) != runtime_lib.runtime_key("f32", portable,
                                                                                256)
    assert runtime_lib.runtime_key("f32", host, 512) != runtime_lib.runtime_key("f64", host, 512)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_microkernel_loops_keep_accumulators_in_registers(dtype):
    """Every FMA loop of the runtime GEMM, as compiled for this host, holds its register tile
    in vector registers: a vector spill to the stack inside the k loop halves the GEMM's speed
    (it happened once when A's row addresses were hoisted out of the loop)."""
    import re

    from graphc.backends.llvm.target import optimize_module, parse_module

    spec = TargetSpec.host()
    ref = parse_module(runtime_lib.runtime_module(dtype, spec.vector_bits, spec.cpu), spec)
    optimize_module(ref, spec)
    lines = spec.target_machine(reloc="pic").emit_assembly(ref).splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines)
              if (m := re.match(r"^(\.?\w+):", line))}
    loops = 0
    for j, line in enumerate(lines):
        m = re.match(r"\s+j\w+\s+(\.?\w+)$", line)
        if not m or labels.get(m.group(1), j) >= j:
            continue  # not a backward branch
        body = lines[labels[m.group(1)]:j + 1]
        if not any("vfmadd" in x for x in body):
            continue
        loops += 1
        spills = [x.strip() for x in body if "(%rsp)" in x and re.search(r"%[xyz]mm", x)]
        assert not spills, f"vector spills in an FMA loop: {spills[:4]}"
    assert loops >= 4  # the microkernels' k loops were found


def test_packed_microkernel_prefetches_the_next_panel_once_per_iteration():
    """The main microkernel (packed A, packed B) brings a slice of the next B panel into L2:
    one prefetcht1 per unrolled k iteration, and no other prefetch in its loop."""
    import re

    from graphc.backends.llvm.target import optimize_module, parse_module

    spec = TargetSpec.host()
    if spec.vector_bits < 512:
        pytest.skip("the 6 x 64 tile is the AVX-512 one")
    ref = parse_module(runtime_lib.runtime_module("f32", spec.vector_bits, spec.cpu), spec)
    optimize_module(ref, spec)
    asm = spec.target_machine(reloc="pic").emit_assembly(ref)
    body = asm.split("graphc.gemm.shared.f32.ukernel6.pa.full:", 1)[1].split(".cfi_endproc")[0]
    lines = body.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\.?\w+):", line))}
    loops = []
    for j, line in enumerate(lines):
        m = re.match(r"\s+j\w+\s+(\.?\w+)$", line)
        if m and labels.get(m.group(1), j) < j:
            loop = lines[labels[m.group(1)]:j + 1]
            if sum("vfmadd" in x for x in loop) >= 48:
                loops.append(loop)
    assert loops, "the unrolled k loop was not found"
    prefetches = [x.split()[0] for x in loops[0] if "prefetch" in x]
    assert prefetches == ["prefetcht1"], prefetches
