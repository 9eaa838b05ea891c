"""Inspecting the compiler: the graph after every pass, what a pass changed, and dumps.

Note: stages
============

`pipeline_stages(graph)` runs the pipeline on one model and keeps every intermediate result as a
`Stage` (a display name, the pass that produced it, the graph, its node count and the pass's
time). The stages, in order:

| stage            | pass         | when                                                        |
|------------------|--------------|-------------------------------------------------------------|
| `as built`       | `build`      | always: the model as its builder or `.gir` file made it     |
| `decomposed`     | `decompose`  | always: composites expanded into primitives                 |
| `with gradients` | `autodiff`   | the model has a scalar float output `loss`                  |
|                  | `train_step` | `train=True`: forward, gradients and SGD updates in one graph |
| `simplified`     | `simplify`   | always                                                      |
| `fused`          | `fuse`       | when the fusion pass and memory planner are importable      |

`graphc show --print-after-all / --after / --diff / --dump-dir` and `graphc viz` both read this
list, so the text and the pictures always show the same graphs.

`diff_graphs(before, after)` matches the nodes of two graphs: a node of `after` is *unchanged*
when a node of `before` has the same op, attributes, types and (matched) operands; *rewritten*
when it keeps a node's name hint and op but not its operands or attributes; else *added*.
Unmatched nodes of `before` are *removed*.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphc.ir.errors import GraphError
from graphc.ir.graph import Graph, Node
from graphc.ir.text import Namer, print_graph, print_node

DEFAULT_LR = 0.1


@dataclass(frozen=True)
class Stage:
    """The result of one pipeline step (see the module note).

    `schedule` is the kernel-IR schedule of the `fused` stage (with its memory plan);
    `texts` holds further per-stage text by kind (`kernels`, `memory`, `llvm`, `triton`) and
    `code[target][kernel]` the generated function of each kernel.
    """

    name: str
    pass_name: str
    graph: Graph
    seconds: float
    schedule: Any = None
    texts: dict[str, str] = field(default_factory=dict)
    code: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def node_count(self) -> int:
        return len(self.graph.nodes)

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")


def gradient_loss(graph: Graph, train: bool) -> str | None:
    """The output to differentiate: `loss` if it is a float scalar; with `train`, else the only
    float scalar output. None when the model has no loss and `train` is off, or when it already
    returns gradients (`grad.*` outputs: differentiating it again would clash with them)."""
    if not train and any(n.startswith("grad.") for n, _ in graph.outputs):
        return None
    scalars = [n for n, v in graph.outputs if v.shape == () and v.type.is_float]
    if "loss" in scalars:
        return "loss"
    if not train:
        return None
    if len(scalars) == 1:
        return scalars[0]
    raise GraphError(f"graph {graph.name!r}: cannot tell which output is the loss for a training "
                     f"step (float scalar outputs: {scalars}); name it 'loss'")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def pipeline_stages(graph: Graph, *, train: bool = False, lr: float = DEFAULT_LR,
                    schedule: bool = True, codegen: bool = True) -> list[Stage]:
    """Run the pipeline on `graph`, keeping every stage (see the module note).

    `train` builds a whole training step (gradients and SGD updates with learning rate `lr`)
    instead of plain gradients; `schedule=False` skips fusion and memory planning,
    `codegen=False` the code generators.
    """
    from graphc.passes import autodiff, decompose, simplify, split_dilated_convs

    stages = [Stage("as built", "build", graph, 0.0)]
    g, dt = _timed(lambda: decompose(graph))
    stages.append(Stage("decomposed", "decompose", g, dt))
    loss = gradient_loss(graph, train)
    if loss is not None and train:
        from graphc.optim import SGD
        from graphc.train import train_step

        g, dt = _timed(lambda: train_step(graph, loss, SGD(lr)))
        stages.append(Stage("with gradients", "train_step", g, dt))
    elif loss is not None:
        g, dt = _timed(lambda: autodiff(graph, loss))
        stages.append(Stage("with gradients", "autodiff", g, dt))
    split, dt = _timed(lambda: split_dilated_convs(g))
    if split is not g:  # shown only where a convolution over a dilated input was split
        g = split
        stages.append(Stage("phase-split convolutions", "conv_phases", g, dt))
    g, dt = _timed(lambda: simplify(g))
    stages.append(Stage("simplified", "simplify", g, dt))
    if schedule:
        fused = schedule_stage(g, codegen)
        if fused is not None:
            stages.append(fused)
    return stages


# -- the schedule and generated code ---------------------------------------------------------------

SCHEDULE_PASSES = (("graphc.passes.fuse", "fuse"), ("graphc.passes.memory", "plan_memory"))


@dataclass(frozen=True)
class CodeGenerator:
    """How to ask one backend for its source: `module.function(schedule)` returns an object
    whose attribute `text` is the whole generated module; `functions(generated, schedule)`
    names the generated function of each kernel."""

    module: str
    function: str
    text: str
    functions: Callable[[Any, Any], dict[str, str]]


def _llvm_functions(gen: Any, sched: Any) -> dict[str, str]:
    # identical kernels share one LLVM function; the generator says which one each kernel calls
    return {k.name: gen.kernel_notes[k.name]["function"] for k in sched.kernels
            if "function" in gen.kernel_notes.get(k.name, {})}


def _triton_functions(gen: Any, sched: Any) -> dict[str, str]:
    return {launch.kernel: launch.fn for launch in gen.launches}


CODE_GENERATORS = {
    "llvm": CodeGenerator("graphc.backends.llvm.codegen", "generate_module", "text",
                          _llvm_functions),
    "triton": CodeGenerator("graphc.backends.triton.codegen", "generate", "source",
                            _triton_functions),
}


def _schedule_passes() -> tuple[Callable, Callable] | None:
    """(fuse, plan_memory) when both modules exist, else None."""
    fns = []
    for module, attr in SCHEDULE_PASSES:
        try:
            fn = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            return None
        if fn is None:
            return None
        fns.append(fn)
    return fns[0], fns[1]


def schedule_stage(graph: Graph, codegen: bool = True) -> Stage | None:
    """The `fused` stage of a simplified graph: fusion into kernels, memory planning and (with
    `codegen`) the generated source of every code generator that is available.

    None while the fusion pass or the memory planner is not available.
    """
    passes = _schedule_passes()
    if passes is None:
        return None
    fuse, plan_memory = passes
    sched, dt = _timed(lambda: plan_memory(fuse(graph)))
    texts = {"kernels": str(sched)}
    report = _memory_report(sched)
    if report:
        texts["memory"] = report
    code: dict[str, dict[str, str]] = {}
    if codegen:
        for target, (module, per_kernel) in generated_code(sched).items():
            texts[target] = module
            code[target] = per_kernel
    return Stage("fused", "fuse", graph, dt, schedule=sched, texts=texts, code=code)


def _memory_report(sched: Any) -> str | None:
    try:
        from graphc.passes.memory import memory_report
    except ImportError:
        return None
    return memory_report(sched) if sched.memory is not None else None


def generated_code(sched: Any) -> dict[str, tuple[str, dict[str, str]]]:
    """{target: (module source, {kernel name: its function})} for every code generator that can
    be imported (see CODE_GENERATORS); a generator that fails says why in the module text."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for target, cg in CODE_GENERATORS.items():
        try:
            generate = getattr(importlib.import_module(cg.module), cg.function)
        except (ImportError, AttributeError):
            continue
        try:
            gen = generate(sched)
            source = str(getattr(gen, cg.text))
            fns = cg.functions(gen, sched)
        except Exception as e:  # noqa: BLE001 - showing code is optional: say why, go on
            out[target] = (f"// {target} code generation failed: {type(e).__name__}: {e}\n", {})
            continue
        out[target] = (source, split_functions(source, fns))
    return out


def split_functions(source: str, fns: dict[str, str]) -> dict[str, str]:
    """{kernel: the text of its function} for `fns` = {kernel: function name}: from the comment
    and decorator lines above `def fn(` / `define ... @fn(` to the next such definition."""
    lines = source.splitlines()
    starts = [i for i, line in enumerate(lines) if _defines(line) is not None]
    out = {}
    for kernel, fn in fns.items():
        at = next((i for i in starts if _defines(lines[i]) == fn), None)
        if at is None:
            continue
        begin = at
        while begin > 0 and lines[begin - 1].strip().startswith(("@", "#", ";")):
            begin -= 1
        end = next((i for i in starts if i > at), len(lines))
        while end > at + 1 and lines[end - 1].strip().startswith(("@", "#", ";")):
            end -= 1
        out[kernel] = "\n".join(lines[begin:end]).rstrip() + "\n"
    return out


def _defines(line: str) -> str | None:
    """The name a line defines: `def name(` (Python) or `define ... @name(` (LLVM IR)."""
    if line.startswith("def "):
        return line[4:].split("(", 1)[0].strip()
    if line.startswith("define ") and "@" in line:
        return line.split("@", 1)[1].split("(", 1)[0].strip('"')
    return None


# -- per-pass text ---------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def stage_header(stage: Stage) -> str:
    """`// ===== after decompose: decomposed, 58 nodes, 1.9 ms =====` (the fused stage also
    counts its kernels)."""
    what = "as built" if stage.pass_name == "build" else f"after {stage.pass_name}: {stage.name}"
    count = plural(stage.node_count, "node")
    if stage.schedule is not None:
        count += ", " + plural(len(stage.schedule.kernels), "kernel")
    return f"// ===== {what}, {count}, {format_seconds(stage.seconds)} ====="


def format_stage(stage: Stage) -> str:
    """The stage's header, its graph IR and, for the fused stage, the kernels."""
    text = stage_header(stage) + "\n" + print_graph(stage.graph)
    if "kernels" in stage.texts:
        text += "\n" + stage.texts["kernels"].rstrip("\n") + "\n"
    return text


def print_after_all(stages: Sequence[Stage]) -> str:
    """Every stage's header and IR, one after the other."""
    return "\n".join(format_stage(s) for s in stages)


def find_stage(stages: Sequence[Stage], key: str) -> int:
    """Index of the stage named by a pass name (`decompose`), stage name (`decomposed`) or its
    slug (`with-gradients`); `autodiff`, `train_step` and `gradients` all name the gradient one."""
    k = key.strip().lower().replace("_", "-")
    for i, s in enumerate(stages):
        names = {s.pass_name.replace("_", "-"), s.name, s.slug}
        if s.name == "with gradients":
            names |= {"autodiff", "train-step", "gradients", "grad"}
        if k in names:
            return i
    known = ", ".join(f"{s.pass_name} ({s.name})" for s in stages)
    raise GraphError(f"no stage {key!r} in this pipeline; stages: {known}")


# -- diffs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphDiff:
    """What a pass changed: printed lines of added, removed and rewritten nodes (rewritten: the
    new line and the old one) and of changed outputs, plus the count of unchanged nodes."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    rewritten: tuple[tuple[str, str], ...]
    unchanged: int
    outputs_added: tuple[str, ...]
    outputs_removed: tuple[str, ...]


def _names(graph: Graph) -> Namer:
    namer = Namer()
    print_graph(graph, namer)
    return namer


def _source_key(n: Node) -> tuple:
    return (n.op, n.attrs["name"])


def match_nodes(before: Graph, after: Graph) -> tuple[dict[int, Node], dict[int, str]]:
    """Map each node of `after` (by id) to its counterpart in `before`, and classify it as
    `unchanged` or `rewritten` (unmatched nodes are absent from both maps)."""
    sources = {_source_key(v.node): v.node for v in before.inputs + before.params}
    match: dict[int, Node] = {}
    kind: dict[int, str] = {}
    for v in after.inputs + after.params:
        old = sources.get(_source_key(v.node))
        if old is not None:
            match[id(v.node)], kind[id(v.node)] = old, "unchanged"
    by_key: dict[tuple, list[Node]] = {}
    by_name: dict[tuple, list[Node]] = {}
    for n in before.nodes:
        by_key.setdefault(_structure(n, lambda v: (id(v.node), v.index)), []).append(n)
        by_name.setdefault((n.name, n.op), []).append(n)
    claimed: set[int] = set()

    def take(cands: list[Node], ok: Callable[[Node], bool] = lambda n: True) -> Node | None:
        for c in cands:
            if id(c) not in claimed and ok(c):
                claimed.add(id(c))
                return c
        return None

    for n in after.nodes:
        def mapped(v, _n=n):
            m = match.get(id(v.node))
            return (id(m), v.index) if m is not None else None

        old = take(by_key.get(_structure(n, mapped), []))
        if old is not None:
            match[id(n)], kind[id(n)] = old, "unchanged"
            continue
        same = by_name.get((n.name, n.op), [])
        old = take(same, lambda c, _n=n: _n.name is not None or (
            c.types == _n.types and dict(c.attrs) == dict(_n.attrs)))
        if old is not None:
            match[id(n)], kind[id(n)] = old, "rewritten"
    return match, kind


def _structure(n: Node, operand: Callable) -> tuple:
    return (n.op, tuple(n.attrs.items()), n.types, tuple(operand(v) for v in n.inputs))


def diff_graphs(before: Graph, after: Graph) -> GraphDiff:
    """Compare two graphs node by node (see the module note)."""
    match, kind = match_nodes(before, after)
    old_names, new_names = _names(before), _names(after)
    matched_old = {id(m) for m in match.values()}
    added, rewritten = [], []
    unchanged = 0
    for n in after.nodes:
        k = kind.get(id(n))
        if k is None:
            added.append(print_node(n, new_names))
            continue
        new_line, old_line = print_node(n, new_names), print_node(match[id(n)], old_names)
        # an operand replaced by a new node under the same name reads the same: unchanged text
        if k == "rewritten" and new_line != old_line:
            rewritten.append((new_line, old_line))
        else:
            unchanged += 1
    removed = [print_node(n, old_names) for n in before.nodes if id(n) not in matched_old]
    old_out = {k: _output_repr(v, old_names) for k, v in before.outputs}
    new_out = {k: _output_repr(v, new_names) for k, v in after.outputs}
    return GraphDiff(tuple(added), tuple(removed), tuple(rewritten), unchanged,
                     tuple(f"{k}={new_out[k]}" for k in new_out if k not in old_out),
                     tuple(f"{k}={old_out[k]}" for k in old_out if k not in new_out))


def _output_repr(v, namer: Namer) -> str:
    return f"{namer.use(v)} : {v.type}"


def format_diff(before: Stage, after: Stage) -> str:
    """What the pass that made `after` changed relative to `before`, as text."""
    d = diff_graphs(before.graph, after.graph)
    lines = [f"// ===== diff {after.pass_name}: {before.name} "
             f"({plural(before.node_count, 'node')}) -> {after.name} "
             f"({plural(after.node_count, 'node')}), {format_seconds(after.seconds)} =====",
             f"// {len(d.added)} added, {len(d.removed)} removed, {len(d.rewritten)} rewritten, "
             f"{d.unchanged} unchanged"]
    if d.removed:
        lines.append("// removed")
        lines += [f"- {line}" for line in d.removed]
    if d.added:
        lines.append("// added")
        lines += [f"+ {line}" for line in d.added]
    if d.rewritten:
        lines.append("// rewritten")
        for new, old in d.rewritten:
            lines += [f"~ {new}", f"  was {old}"]
    if d.outputs_removed or d.outputs_added:
        lines.append("// outputs")
        lines += [f"- return {o}" for o in d.outputs_removed]
        lines += [f"+ return {o}" for o in d.outputs_added]
    return "\n".join(lines) + "\n"


# -- dumps -----------------------------------------------------------------------------------------

DUMP_SUFFIXES = {"kernels": "kernels.txt", "memory": "memory.txt", "llvm": "ll",
                 "triton": "triton.py"}


def dump_stages(stages: Sequence[Stage], directory: str | Path) -> list[Path]:
    """Write one file per stage (`NN-<stage>.gir`), one per extra text of a stage (schedule,
    memory plan, generated code) and `index.txt` (pass, node count, seconds, files)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index = []
    for i, s in enumerate(stages, start=1):
        stem = f"{i:02d}-{s.slug}"
        files = [out / f"{stem}.gir"]
        files[0].write_text(print_graph(s.graph))
        for kind, text in s.texts.items():
            path = out / f"{stem}.{DUMP_SUFFIXES.get(kind, kind + '.txt')}"
            path.write_text(text)
            files.append(path)
        written += files
        index.append(f"{stem}\tpass={s.pass_name}\tnodes={s.node_count}\t"
                     f"time={format_seconds(s.seconds)}\t" + " ".join(p.name for p in files))
    (out / "index.txt").write_text("\n".join(index) + "\n")
    return written + [out / "index.txt"]
