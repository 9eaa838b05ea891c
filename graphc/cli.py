"""The `graphc` command line. Each subcommand is a small function; errors in the user's model
print as one line naming the culprit (exit status 2), never as a traceback."""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

from graphc.cli_args import positive_int
from graphc.ir.errors import GraphError


def load_npz(name: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz file the user named; a missing or unreadable one is a GraphError
    naming it."""
    path = Path(name)
    if not path.exists():
        raise GraphError(f"inputs file {name!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        # numpy reads any file that is not a zip or .npy as a pickle, which it refuses
        raise GraphError(f"inputs file {name!r} is not an .npz of arrays") from None


def _load(args: argparse.Namespace):
    """The model file, with the symbolic dimensions --dim and --shape bind (.onnx only)."""
    from graphc.io import load_bound, parse_bindings

    return load_bound(args.model, *parse_bindings(args.dim, args.shape))


def _model_argument(parser: argparse.ArgumentParser, **kwargs) -> None:
    """The MODEL positional, with --dim/--shape for the symbolic dimensions of ONNX models."""
    parser.add_argument("model", **kwargs)
    parser.add_argument("--dim", action="append", metavar="NAME=N",
                        help=".onnx: bind a symbolic input dimension by name (repeatable)")
    parser.add_argument("--shape", action="append", metavar="INPUT=AxBxC",
                        help=".onnx: give an input's whole shape (repeatable)")


def cmd_show(args: argparse.Namespace) -> int:
    from graphc.ir.text import print_graph
    from graphc.passes import decompose

    graph = _load(args)
    if args.print_after_all or args.after or args.diff or args.dump_dir:
        return _show_stages(graph, args)
    if args.kernels or args.explain or args.memory or args.code:
        return _show_kernels(graph, args)
    if args.decompose:
        graph = decompose(graph)
    sys.stdout.write(print_graph(graph))
    return 0


def _show_kernels(graph, args: argparse.Namespace) -> int:
    """`show --kernels/--explain/--memory`: the fused schedule of the decomposed model."""
    from graphc.ir.kernel_text import print_schedule
    from graphc.passes import decompose
    from graphc.passes.fuse import fuse
    from graphc.passes.memory import memory_report, plan_memory

    graph = decompose(graph)
    if args.train:
        from graphc.optim import SGD
        from graphc.train import train_step

        graph = train_step(graph, "loss", SGD(0.01))
    schedule = plan_memory(fuse(graph, fuse=not args.no_fuse))
    if args.kernels or args.explain:
        sys.stdout.write(print_schedule(schedule, explain=args.explain))
    if args.memory:
        sys.stdout.write(memory_report(schedule))
    if args.code:
        sys.stdout.write(_generated_source(schedule, args.target))
    return 0


def _generated_source(schedule, target: str) -> str:
    """`show --code`: the source a code generator emits for the schedule."""
    import importlib

    from graphc.inspect import CODE_GENERATORS

    cg = CODE_GENERATORS[target]
    try:
        generate = getattr(importlib.import_module(cg.module), cg.function)
    except (ImportError, AttributeError) as e:
        raise GraphError(f"no {target} code generator available: {e}") from None
    return str(getattr(generate(schedule), cg.text))


def _show_stages(graph, args: argparse.Namespace) -> int:
    from graphc import inspect

    stages = inspect.pipeline_stages(graph, train=args.train)
    if args.dump_dir:
        files = inspect.dump_stages(stages, args.dump_dir)
        print(f"wrote {len(files)} files to {args.dump_dir}", file=sys.stderr)
    if args.print_after_all:
        sys.stdout.write(inspect.print_after_all(stages))
    if args.after:
        sys.stdout.write(inspect.format_stage(stages[inspect.find_stage(stages, args.after)]))
    if args.diff:
        i = inspect.find_stage(stages, args.diff)
        if i == 0:
            raise GraphError(f"stage {args.diff!r} is the model as built: nothing to diff")
        sys.stdout.write(inspect.format_diff(stages[i - 1], stages[i]))
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from graphc import inspect
    from graphc.viz import write_dot, write_html

    graph = _load(args)
    stages = inspect.pipeline_stages(graph, train=args.train)
    if args.format == "dot":
        write_dot(stages, args.output)
    else:
        write_html(stages, args.output, title=Path(args.model).name)
    print(f"wrote {args.output} ({', '.join(s.name for s in stages)})")
    return 0


def _inputs(args: argparse.Namespace, graph, seeded: bool) -> dict[str, np.ndarray]:
    """--inputs FILE.npz, else the model file's example_inputs(), else (with `seeded`) random
    ones: standard normal floats, zero integers, random booleans."""
    if args.inputs:
        return load_npz(args.inputs)
    if not graph.inputs:
        return {}
    from graphc.io import load_example_inputs

    inputs = load_example_inputs(args.model) or {}
    if not inputs and seeded:
        from graphc.bench.workloads_user import seeded_inputs

        inputs = seeded_inputs(graph)
    if not inputs:
        raise GraphError(f"model {args.model!r} has inputs {graph.input_names}: give them "
                         "with --inputs FILE.npz")
    return inputs


def cmd_run(args: argparse.Namespace) -> int:
    """Run a model file on a target (the reference by default), or an AOT package as it is."""
    if Path(args.model).is_dir():  # a package written by `graphc compile -o`
        import graphc

        if args.dim or args.shape:
            raise GraphError("--dim and --shape bind a model file's dimensions; a package's "
                             "shapes were fixed when it was compiled")
        exe = graphc.load(args.model)
        if not args.inputs and exe.input_names:
            raise GraphError(f"package {args.model!r} has inputs {exe.input_names}: give them "
                             "with --inputs FILE.npz")
        outputs = exe(_inputs(args, None, seeded=False) if args.inputs else {})
    else:
        graph = _load(args)
        inputs = _inputs(args, graph, seeded=False)
        if args.target == "reference":
            from graphc.backends.reference import run_graph

            outputs = run_graph(graph, inputs)
        else:
            from graphc.compiler import compile as compile_graph

            outputs = compile_graph(graph, target=args.target)(inputs)
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {len(outputs)} outputs to {args.output}")
    for name, arr in outputs.items():
        summary = np.array2string(arr, precision=5, threshold=12, edgeitems=2)
        print(f"{name}: {arr.dtype}{list(arr.shape)} = {summary}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from graphc.compiler import compile as compile_graph

    graph = _load(args)
    inputs = _inputs(args, graph, seeded=True)
    exe = compile_graph(graph, target=args.target, fuse=not args.no_fuse, threads=args.threads,
                        profile=True)
    exe(inputs)  # the first call also fills caches (prepacked weights): not counted
    exe.profile(reset=True)
    for _ in range(max(args.runs, 1)):
        exe(inputs)
    prof = exe.profile()
    print(prof.table(top=args.top))
    if args.json:
        Path(args.json).write_text(json.dumps(prof.to_json(), indent=1))
        print(f"wrote {args.json}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from graphc.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(target=args.target, epochs=args.epochs, batch=args.batch,
                                 out=Path(args.out), threads=args.threads, seed=args.seed))
    return 0 if result["accuracy"] >= args.min_accuracy else 1


def cmd_compile(args: argparse.Namespace) -> int:
    import time

    from graphc.compiler import compile as compile_graph

    graph = _load(args)
    options = {"fuse": not args.no_fuse, "threads": args.threads, "portable": args.portable}
    if args.arch:
        options["arch"] = tuple(a for spec in args.arch for a in spec.split(","))
    cold = time.perf_counter()
    exe = compile_graph(graph, target=args.target, **options)
    cold = time.perf_counter() - cold
    warm = time.perf_counter()
    compile_graph(graph, target=args.target, **options)
    warm = time.perf_counter() - warm
    stats = exe.stats()
    print(f"compiled {graph.name!r} for {args.target}: {stats.get('kernels', '?')} kernels; "
          f"compile {cold * 1e3:.0f} ms (first), {warm * 1e3:.0f} ms (again"
          f"{', cached' if exe.info.get('cache_hit') is not None else ''})")
    if "arena_bytes" in stats:
        print(f"memory: arena {stats['arena_bytes']} bytes, naive {stats['naive_bytes']}, "
              f"lower bound {stats['lower_bound_bytes']}")
    if args.output:
        exe.save(args.output)
        print(f"wrote package {args.output}")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from graphc.gradcheck import GradcheckFailure, gradcheck

    graph = _load(args)
    loss = args.loss
    if loss is None:
        scalars = [n for n, v in graph.outputs if v.shape == () and v.type.is_float]
        loss = "loss" if "loss" in graph.output_names else (scalars[0] if len(scalars) == 1
                                                             else None)
        if loss is None:
            raise GraphError(f"model {args.model!r}: say which output is the loss with --loss "
                             f"(outputs: {graph.output_names})")
    inputs = None
    if args.inputs:
        inputs = load_npz(args.inputs)
    try:
        report = gradcheck(graph, loss, args.wrt, inputs=inputs, eps=args.eps, rtol=args.rtol,
                           max_coords=args.max_coords, seed=args.seed)
    except GradcheckFailure as e:
        sys.stdout.write(e.report.table())
        print(f"graphc: gradcheck failed: {', '.join(r.name for r in e.report.failures())} "
              f"above tolerance", file=sys.stderr)
        return 1
    sys.stdout.write(report.table())
    print(f"gradcheck of {loss!r}: {len(report.rows)} parameters ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphc", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("show", help="print a model's IR")
    _model_argument(s, help="a .gir file, a .py file with build() returning a Graph, or an "
                    ".onnx file")
    s.add_argument("--decompose", action="store_true", help="after decomposition into primitives")
    s.add_argument("--print-after-all", action="store_true",
                   help="print the IR after every pass, each with a header (pass, nodes, time)")
    s.add_argument("--after", metavar="PASS", help="print the IR after one pass (or stage)")
    s.add_argument("--diff", metavar="PASS", help="show the nodes a pass added, removed, rewrote")
    s.add_argument("--dump-dir", metavar="DIR", help="write one file per stage into DIR")
    s.add_argument("--train", action="store_true",
                   help="stages include a whole SGD training step instead of plain gradients")
    s.add_argument("--kernels", action="store_true", help="print the fused kernel schedule")
    s.add_argument("--explain", action="store_true",
                   help="with each kernel, its member nodes and the merges fusion refused")
    s.add_argument("--memory", action="store_true",
                   help="the memory plan: naive, planned arena and lower-bound bytes")
    s.add_argument("--no-fuse", action="store_true",
                   help="with --kernels/--memory: one kernel per primitive")
    s.add_argument("--code", action="store_true",
                   help="print the generated code of every kernel (see --target)")
    s.add_argument("--target", choices=("triton", "llvm"), default="triton",
                   help="the code generator for --code (default triton)")
    s.set_defaults(fn=cmd_show)

    v = sub.add_parser("viz", help="draw a model at every stage as one offline HTML file")
    _model_argument(v)
    v.add_argument("-o", "--output", required=True, help="the file to write (model.html)")
    v.add_argument("--format", choices=("html", "dot"), default="html")
    v.add_argument("--train", action="store_true",
                   help="draw a whole SGD training step instead of plain gradients")
    v.set_defaults(fn=cmd_viz)

    d = sub.add_parser("demo", help="train the seed's CNN on 8x8 digits with a compiled step")
    d.add_argument("--target", default="llvm", choices=["llvm", "reference", "triton"])
    d.add_argument("--epochs", type=positive_int, default=12)
    d.add_argument("--batch", type=positive_int, default=32)
    d.add_argument("--threads", type=positive_int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="demo_out", help="folder for the AOT package and IR dump")
    d.add_argument("--min-accuracy", type=float, default=0.0,
                   help="exit with status 1 below this test accuracy (0..1)")
    d.set_defaults(fn=cmd_demo)

    c = sub.add_parser("compile", help="compile a model ahead of time into a package folder")
    _model_argument(c)
    c.add_argument("--target", default="llvm", choices=["llvm", "triton", "reference"])
    c.add_argument("-o", "--output", help="package folder to write (e.g. model.gcpkg)")
    c.add_argument("--arch", action="append", help="triton: GPU arch(s), e.g. sm_90 or "
                   "sm_80,sm_90")
    c.add_argument("--portable", action="store_true",
                   help="llvm: build for x86-64-v3 instead of this CPU")
    c.add_argument("--threads", type=positive_int, default=None)
    c.add_argument("--no-fuse", action="store_true", help="one kernel per primitive")
    c.set_defaults(fn=cmd_compile)

    r = sub.add_parser("run", help="run a model (on the reference backend unless --target says "
                                   "otherwise) or a compiled package")
    _model_argument(r, help="a model file, or a package folder from `graphc compile -o`")
    r.add_argument("--target", default="reference", choices=["reference", "llvm", "triton"])
    r.add_argument("--inputs", help=".npz with one array per graph input (default: the model "
                   "file's example_inputs(), if it has one)")
    r.add_argument("-o", "--output", help="write outputs to this .npz")
    r.set_defaults(fn=cmd_run)
    pr = sub.add_parser("profile", help="time every kernel of a compiled model")
    _model_argument(pr)
    pr.add_argument("--target", default="llvm", choices=["llvm", "reference"])
    pr.add_argument("--inputs", help=".npz with one array per graph input (default: the model "
                    "file's example_inputs(), else seeded random inputs)")
    pr.add_argument("--runs", type=positive_int, default=10,
                    help="profiled calls after a warm-up call")
    pr.add_argument("--threads", type=positive_int, default=None)
    pr.add_argument("--no-fuse", action="store_true", help="one kernel per primitive")
    pr.add_argument("--top", type=positive_int, default=None,
                    help="show only the N slowest kernels")
    pr.add_argument("--json", help="also write the profile to this JSON file")
    pr.set_defaults(fn=cmd_profile)
    gc = sub.add_parser("gradcheck", help="compare autodiff with float64 finite differences")
    _model_argument(gc)
    gc.add_argument("--loss", help="the scalar output to differentiate (default: 'loss')")
    gc.add_argument("--wrt", nargs="+", help="parameters/inputs to check (default: trainable)")
    gc.add_argument("--inputs", help=".npz with inputs (default: seeded random)")
    gc.add_argument("--eps", type=float, default=1e-6)
    gc.add_argument("--rtol", type=float, default=1e-5)
    gc.add_argument("--max-coords", type=positive_int, default=16, help="coordinates per parameter")
    gc.add_argument("--seed", type=int, default=0)
    gc.set_defaults(fn=cmd_gradcheck)

    from graphc.bench.command import add_bench_parser

    add_bench_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except GraphError as e:
        print(f"graphc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
