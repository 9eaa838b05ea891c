"""`graphc show --print-after-all / --after / --diff / --dump-dir` and the stage list behind them.

Golden tests: the expected headers and diffs below are written by hand from the graphs (what
decompose, autodiff and simplify must do to them); times are masked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from graphc import inspect
from graphc.cli import main
from graphc.ir.builder import Builder
from graphc.ir.errors import GraphError
from graphc.ir.text import parse_graph, print_graph
from graphc.passes import autodiff, decompose, simplify

# relu(x * 1 + 0): simplify must leave relu(x)
IDENTITIES = """graph ident(%x: f32[3]) {
  %one = constant() {value=1.0} : f32[]
  %a = mul(%x, %one) : f32[3]
  %zero = constant() {value=0.0} : f32[]
  %b = add(%a, %zero) : f32[3]
  %c = relu(%b) : f32[3]
  return c=%c
}
"""

# one dense layer, relu, summed: a loss, so the stages include gradients
DENSE = """graph tiny(%x: f32[2, 3]) params(%w: f32[3, 4], %b: f32[4]) {
  %h = dense(%x, %w, %b) : f32[2, 4]
  %r = relu(%h) : f32[2, 4]
  %loss = reduce_sum(%r) {axes=(0, 1)} : f32[]
  return loss=%loss
}
"""

TIME = re.compile(r"\d+\.\d+ (ms|s)")


def masked(text: str) -> str:
    return TIME.sub("T", text)


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / f"{name}.gir"
    path.write_text(text)
    return path


def headers(text: str) -> list[str]:
    return [masked(line) for line in text.splitlines() if line.startswith("// =====")]


def has_schedule() -> bool:
    return inspect._schedule_passes() is not None


def test_print_after_all_headers_golden(tmp_path, capsys):
    path = write(tmp_path, IDENTITIES, "ident")
    assert main(["show", str(path), "--print-after-all"]) == 0
    expected = [
        "// ===== as built, 5 nodes, T =====",
        "// ===== after decompose: decomposed, 5 nodes, T =====",
        "// ===== after simplify: simplified, 1 node, T =====",
    ]
    if has_schedule():  # relu alone is one pointwise kernel
        expected.append("// ===== after fuse: fused, 1 node, 1 kernel, T =====")
    assert headers(capsys.readouterr().out) == expected


def test_print_after_all_headers_with_gradients(tmp_path, capsys):
    path = write(tmp_path, DENSE, "tiny")
    assert main(["show", str(path), "--print-after-all"]) == 0
    out = capsys.readouterr().out
    g = parse_graph(DENSE)
    # node counts from the passes run directly
    n_dec = len(decompose(g).nodes)
    n_grad = len(autodiff(g, "loss").nodes)
    n_simp = len(simplify(autodiff(g, "loss")).nodes)
    assert (n_dec, n_grad) == (4, 13)  # dense = matmul + add; 9 backward nodes (see the diff)
    assert headers(out)[:4] == [
        "// ===== as built, 3 nodes, T =====",
        f"// ===== after decompose: decomposed, {n_dec} nodes, T =====",
        f"// ===== after autodiff: with gradients, {n_grad} nodes, T =====",
        f"// ===== after simplify: simplified, {n_simp} nodes, T =====",
    ]


def test_print_after_all_sections_parse_back(tmp_path, capsys):
    """Each section is a `.gir` text (the header is a comment) with the node count it claims."""
    path = write(tmp_path, DENSE, "tiny")
    assert main(["show", str(path), "--print-after-all"]) == 0
    out = capsys.readouterr().out
    sections = re.split(r"(?m)^(?=// =====)", out)[1:]
    assert len(sections) >= 4
    for section in sections:
        count = int(re.search(r", (\d+) nodes?,", section).group(1))
        graph_text = section.split("\nschedule ", 1)[0]  # the fused stage appends kernels
        g = parse_graph(graph_text)
        assert len(g.nodes) == count
        assert print_graph(g) in graph_text


def test_train_stage_is_a_training_step(tmp_path, capsys):
    path = write(tmp_path, DENSE, "tiny")
    assert main(["show", str(path), "--train", "--after", "train_step"]) == 0
    out = capsys.readouterr().out
    assert masked(out.splitlines()[0]).startswith("// ===== after train_step: with gradients")
    g = parse_graph(out)
    assert {"loss", "new.w", "new.b"} <= set(g.output_names)


def test_diff_simplify_golden(tmp_path, capsys):
    path = write(tmp_path, IDENTITIES, "ident")
    assert main(["show", str(path), "--diff", "simplify"]) == 0
    assert masked(capsys.readouterr().out) == """\
// ===== diff simplify: decomposed (5 nodes) -> simplified (1 node), T =====
// 0 added, 4 removed, 1 rewritten, 0 unchanged
// removed
- %one = constant() {value=1.0} : f32[]
- %a = mul(%x, %one) : f32[3]
- %zero = constant() {value=0.0} : f32[]
- %b = add(%a, %zero) : f32[3]
// rewritten
~ %c = relu(%x) : f32[3]
  was %c = relu(%b) : f32[3]
"""


def test_diff_decompose_golden(tmp_path, capsys):
    path = write(tmp_path, DENSE, "tiny")
    assert main(["show", str(path), "--diff", "decompose"]) == 0
    assert masked(capsys.readouterr().out) == """\
// ===== diff decompose: as built (3 nodes) -> decomposed (4 nodes), T =====
// 2 added, 1 removed, 1 rewritten, 1 unchanged
// removed
- %h = dense(%x, %w, %b) : f32[2, 4]
// added
+ %h.matmul = matmul(%x, %w) : f32[2, 4]
+ %h.add = add(%h.matmul, %b) : f32[2, 4]
// rewritten
~ %r = relu(%h.add) : f32[2, 4]
  was %r = relu(%h) : f32[2, 4]
"""


def test_diff_autodiff_adds_backward_nodes_and_gradient_outputs(tmp_path, capsys):
    path = write(tmp_path, DENSE, "tiny")
    assert main(["show", str(path), "--diff", "autodiff"]) == 0
    out = capsys.readouterr().out
    assert "// 9 added, 0 removed, 0 rewritten, 4 unchanged" in out
    added = [line for line in out.splitlines() if line.startswith("+ %")]
    # every new node but the loss seed is named by autodiff: grad.<node>.<op>
    assert sum(1 for line in added if line.startswith("+ %grad.")) == len(added) - 1
    assert "+ return grad.w=%grad.h.matmul.matmul : f32[3, 4]" in out
    assert "+ return grad.b=%grad.h.add.reduce_sum : f32[4]" in out


def test_diff_of_identical_graphs_is_empty():
    g = parse_graph(DENSE)
    d = inspect.diff_graphs(g, g)
    assert (d.added, d.removed, d.rewritten) == ((), (), ())
    assert d.unchanged == len(g.nodes)


def test_after_prints_one_stage_that_parses(tmp_path, capsys):
    path = write(tmp_path, DENSE, "tiny")
    assert main(["show", str(path), "--after", "simplified"]) == 0
    out = capsys.readouterr().out
    assert masked(out.splitlines()[0]).startswith("// ===== after simplify: simplified")
    expected = simplify(autodiff(parse_graph(DENSE), "loss"))
    assert print_graph(parse_graph(out)) == print_graph(expected)


def test_unknown_pass_is_a_one_line_error(tmp_path, capsys):
    path = write(tmp_path, DENSE, "tiny")
    assert main(["show", str(path), "--after", "vectorize"]) == 2
    err = capsys.readouterr().err
    assert "no stage 'vectorize'" in err and "decompose (decomposed)" in err
    assert main(["show", str(path), "--diff", "build"]) == 2
    assert "nothing to diff" in capsys.readouterr().err


def test_train_needs_a_loss_it_can_find():
    b = Builder("two_losses")
    x = b.input("x", (3,))
    g = b.build(outputs={"a": x.sum(), "b": (x * x).sum()})
    with pytest.raises(GraphError, match="cannot tell which output is the loss"):
        inspect.pipeline_stages(g, train=True)
    assert [s.name for s in inspect.pipeline_stages(g, schedule=False)] == [
        "as built", "decomposed", "simplified"]


def test_a_model_that_returns_its_gradients_is_shown_as_it_is():
    """A model with a `loss` that already returns `grad.*` outputs (autodiff applied by its
    author) is not differentiated again: that would clash with its own gradient outputs."""
    b = Builder("has_grads")
    w = b.param("w", (3,), init="ones")
    g = autodiff(b.build(outputs={"loss": (w * w).sum()}), "loss")
    stages = inspect.pipeline_stages(g, schedule=False)
    assert [s.name for s in stages] == ["as built", "decomposed", "simplified"]
    assert sorted(n for n, _ in stages[-1].graph.outputs) == ["grad.w", "loss"]


def test_a_dilated_input_convolution_shows_its_phase_split():
    """A transposed convolution's stage list includes conv_phases, whose graph has four
    stride-1 convolutions over the undilated input in place of the dilated one."""
    b = Builder("up")
    y = b.op("conv", b.input("x", (1, 4, 5, 5)), b.input("w", (3, 4, 2, 2)),
             padding=((1, 1), (1, 1)), lhs_dilation=(2, 2))
    stages = inspect.pipeline_stages(b.build(outputs={"y": y}), schedule=False)
    assert [s.name for s in stages] == ["as built", "decomposed", "phase-split convolutions",
                                        "simplified"]
    convs = [n for n in stages[2].graph.nodes if n.op == "conv"]
    assert len(convs) == 4 and all(n.attrs["lhs_dilation"] == (1, 1) for n in convs)


def test_dump_dir_writes_one_file_per_stage(tmp_path, capsys):
    path = write(tmp_path, DENSE, "tiny")
    out_dir = tmp_path / "dump"
    assert main(["show", str(path), "--dump-dir", str(out_dir)]) == 0
    names = sorted(p.name for p in out_dir.iterdir())
    for stem in ("01-as-built", "02-decomposed", "03-with-gradients", "04-simplified"):
        assert f"{stem}.gir" in names
        parse_graph((out_dir / f"{stem}.gir").read_text())  # each stage is valid IR
    index = (out_dir / "index.txt").read_text().splitlines()
    assert index[2].startswith("03-with-gradients\tpass=autodiff\tnodes=13\t")
    if has_schedule():
        assert "05-fused.kernels.txt" in names
        assert "kernel k0" in (out_dir / "05-fused.kernels.txt").read_text()
        assert "05-fused.memory.txt" in names
        fused = inspect.pipeline_stages(parse_graph(DENSE))[-1]
        suffix = {"llvm": "ll", "triton": "triton.py"}
        for target in fused.code:  # the source of every code generator that is available
            assert f"05-fused.{suffix[target]}" in names


def test_stage_lookup_by_pass_stage_or_slug():
    stages = inspect.pipeline_stages(parse_graph(DENSE), schedule=False)
    for key in ("autodiff", "with gradients", "with-gradients", "gradients"):
        assert stages[inspect.find_stage(stages, key)].name == "with gradients"
    assert inspect.find_stage(stages, "simplify") == 3


def test_split_functions_finds_each_kernel():
    source = ('import triton\n\n\n@triton.jit\ndef k0(x_ptr):\n    # kernel k0\n    pass\n\n\n'
              '@triton.jit\ndef k1(y_ptr):\n    pass\n')
    parts = inspect.split_functions(source, {"k0": "k0", "k1": "k1", "k9": "k9"})
    assert parts["k0"].startswith("@triton.jit\ndef k0(") and "k1" not in parts["k0"]
    assert parts["k1"] == "@triton.jit\ndef k1(y_ptr):\n    pass\n"
    assert "k9" not in parts
    llvm = 'declare float @expf(float)\n\ndefine void @"k0"(ptr %a) {\n  ret void\n}\n'
    assert inspect.split_functions(llvm, {"k0": "k0"})["k0"].startswith('define void @"k0"')
