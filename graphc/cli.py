"""The `graphc` command line. Each subcommand is a small function; errors in the user's model
print as one line naming the culprit (exit status 2), never as a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from graphc.ir.errors import GraphError


def _load(path: str):
    from graphc.io import load_graph

    return load_graph(path)


def cmd_show(args: argparse.Namespace) -> int:
    from graphc.ir.text import print_graph
    from graphc.passes import decompose

    graph = _load(args.model)
    if args.decompose:
        graph = decompose(graph)
    sys.stdout.write(print_graph(graph))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from graphc.backends.reference import run_graph

    graph = _load(args.model)
    inputs: dict[str, np.ndarray] = {}
    if args.inputs:
        path = Path(args.inputs)
        if not path.exists():
            raise GraphError(f"inputs file {args.inputs!r} does not exist")
        with np.load(path, allow_pickle=False) as data:
            inputs = {k: data[k] for k in data.files}
    elif graph.inputs:
        from graphc.io import load_example_inputs

        inputs = load_example_inputs(args.model) or {}
        if not inputs:
            raise GraphError(f"model {args.model!r} has inputs {graph.input_names}: give them "
                             "with --inputs FILE.npz")
    outputs = run_graph(graph, inputs)
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {len(outputs)} outputs to {args.output}")
    for name, arr in outputs.items():
        summary = np.array2string(arr, precision=5, threshold=12, edgeitems=2)
        print(f"{name}: {arr.dtype}{list(arr.shape)} = {summary}")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from graphc.gradcheck import GradcheckFailure, gradcheck

    graph = _load(args.model)
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
        if not Path(args.inputs).exists():
            raise GraphError(f"inputs file {args.inputs!r} does not exist")
        with np.load(args.inputs, allow_pickle=False) as data:
            inputs = {k: data[k] for k in data.files}
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
    s.add_argument("model", help="a .gir file, or a .py file with build() returning a Graph")
    s.add_argument("--decompose", action="store_true", help="after decomposition into primitives")
    s.set_defaults(fn=cmd_show)

    r = sub.add_parser("run", help="run a model on the reference backend")
    r.add_argument("model")
    r.add_argument("--inputs", help=".npz with one array per graph input (default: the model "
                   "file's example_inputs(), if it has one)")
    r.add_argument("-o", "--output", help="write outputs to this .npz")
    r.set_defaults(fn=cmd_run)
    gc = sub.add_parser("gradcheck", help="compare autodiff with float64 finite differences")
    gc.add_argument("model")
    gc.add_argument("--loss", help="the scalar output to differentiate (default: 'loss')")
    gc.add_argument("--wrt", nargs="+", help="parameters/inputs to check (default: trainable)")
    gc.add_argument("--inputs", help=".npz with inputs (default: seeded random)")
    gc.add_argument("--eps", type=float, default=1e-6)
    gc.add_argument("--rtol", type=float, default=1e-5)
    gc.add_argument("--max-coords", type=int, default=16, help="coordinates per parameter")
    gc.add_argument("--seed", type=int, default=0)
    gc.set_defaults(fn=cmd_gradcheck)
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
