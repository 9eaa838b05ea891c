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
    outputs = run_graph(graph, inputs)
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {len(outputs)} outputs to {args.output}")
    for name, arr in outputs.items():
        summary = np.array2string(arr, precision=5, threshold=12, edgeitems=2)
        print(f"{name}: {arr.dtype}{list(arr.shape)} = {summary}")
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
    r.add_argument("--inputs", help=".npz with one array per graph input")
    r.add_argument("-o", "--output", help="write outputs to this .npz")
    r.set_defaults(fn=cmd_run)
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
