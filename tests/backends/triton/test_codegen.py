"""Triton code generation without triton: the lowering table covers every primitive, generated
source is valid Python whose functions name the graph nodes they came from, block sizes are
constexprs, and the launch table matches the schedule."""

from __future__ import annotations

import ast

import pytest

from graphc.backends.triton.codegen import generate
from graphc.backends.triton.lowering import LOWERING
from graphc.ir.errors import GraphError
from graphc.ir.registry import primitives
from tests.backends.op_matrix import CASES_BY_NAME, OP_MATRIX, case_schedule


def test_lowering_table_covers_every_primitive() -> None:
    missing = set(primitives()) - set(LOWERING)
    assert not missing, f"no Triton lowering for {sorted(missing)}"


@pytest.mark.parametrize("name", ["model.cnn", "model.cnn_train_step", "softmax", "take.axis0",
                                  "random_uniform.i64_seed", "conv2d.dilation_groups"])
def test_source_is_python_and_names_its_nodes(name: str) -> None:
    s = case_schedule(CASES_BY_NAME[name])
    gen = generate(s)
    tree = ast.parse(gen.source)
    fns = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert [launch.kernel for launch in gen.launches] == [k.name for k in s.kernels]
    for k, launch in zip(s.kernels, gen.launches, strict=True):
        fn = fns[launch.fn]
        assert any(isinstance(d, ast.Attribute) and d.attr == "jit" for d in fn.decorator_list)
        params = [a.arg for a in fn.args.args]
        assert len(params) == len(launch.args) + len(launch.constexprs)
        consts = [a for a in fn.args.args if ast.unparse(a.annotation or ast.Name("")) ==
                  "tl.constexpr"]
        assert [a.arg for a in consts] == [c for c, _ in launch.constexprs]
        text = ast.get_source_segment(gen.source, fn)
        for node in k.origin:
            assert f"%{node}" in text, (launch.fn, node)
        assert all(g >= 1 for g in launch.grid[1:]) and launch.grid[0] >= 1
    assert "libdevice" not in gen.source  # the interpreter has no libdevice


def test_generation_is_deterministic() -> None:
    s = case_schedule(CASES_BY_NAME["model.lstm"])
    assert generate(s).source == generate(s).source


def test_interpreter_blocks_cover_small_domains_in_one_program() -> None:
    s = case_schedule(CASES_BY_NAME["model.cnn"])
    gpu = generate(s)
    interp = generate(s, {"interpret": True})
    assert all(launch.grid == (1, 1, 1) for launch in interp.launches
               if launch.fn in [k.name for k in s.kernels if k.kind == "loop"])
    assert gpu.source != interp.source


def test_every_case_generates() -> None:
    for case in OP_MATRIX:
        generate(case_schedule(case, fuse=False))


def test_bad_options_are_graph_errors() -> None:
    s = case_schedule(CASES_BY_NAME["softmax"])
    with pytest.raises(GraphError, match="precision"):
        generate(s, {"precision": "fp8"})
    with pytest.raises(GraphError, match="unknown option"):
        generate(s, {"blocks": 3})
    with pytest.raises(GraphError, match="power of two"):
        generate(s, {"max_rblock": 100})
    with pytest.raises(GraphError, match="launcher 'jit' must be one of"):
        generate(s, {"launcher": "jit"})


def test_huge_buffers_index_in_int64() -> None:
    from graphc.ir.builder import Builder
    from graphc.passes import decompose
    from graphc.passes.fuse import fuse

    b = Builder("huge")
    g = b.build(outputs={"y": b.input("x", (2 ** 16, 2 ** 15)).exp().sum((1,))})
    small = Builder("small")
    g2 = small.build(outputs={"y": small.input("x", (4, 8)).exp().sum((1,))})
    assert "tl.program_id(0).to(tl.int64)" in generate(fuse(decompose(g))).source
    assert ".to(tl.int64)" not in generate(fuse(decompose(g2))).source.split("def k0")[1]
