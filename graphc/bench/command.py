"""The `graphc bench` subcommand: argument parsing and the run (registered by graphc/cli.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from graphc.cli_args import non_negative_int, positive_int
from graphc.ir.errors import GraphError

DESCRIPTION = """\
Benchmark graphc (fused and unfused) against numpy, PyTorch eager, torch.compile and ONNX
Runtime on the same inputs. Every contender's output is checked against the reference before it
is timed; runs are interleaved round-robin (order shuffled every round) at a fixed thread
count; copy bandwidth, numpy's sgemm rate and the FMA peak of generated code are measured
alongside as anchors. Above one thread, each runtime's contenders run in a worker process of
their own (--isolate), so that no other runtime's idle thread pool competes for the cores.

    graphc bench --quick --json run.json          # < 60 s smoke run at small sizes
    graphc bench --workload 'sgemm_*' --threads 1,2
    graphc bench --target reference --workload softmax --plot speedups.png
    graphc bench --model model.onnx --threads 1,2   # your own model, against ONNX Runtime
    graphc bench --list

--target auto (the default) uses the LLVM backend when it compiles and runs a probe graph here,
else the reference backend, and says which in the header. Started from the command line with
OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE set, the command re-runs itself without them (so numpy's
OpenBLAS picks its kernel for this CPU) unless --keep-openblas-env is given; the header shows
the kernel OpenBLAS reports. python scripts/perf_table.py run.json turns a JSON run into the
README's performance section.
"""


def add_bench_parser(sub: Any) -> None:
    """Add `bench` to the `graphc` subcommand parsers."""
    p = sub.add_parser("bench", help="benchmark graphc against numpy, PyTorch and ONNX Runtime",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="auto", choices=("auto", "llvm", "reference", "triton"),
                   help="graphc target for the fused/unfused contenders (default: llvm if it "
                        "works here, else reference)")
    p.add_argument("--workload", action="append", metavar="NAME",
                   help="only these workloads (glob patterns, repeatable or comma-separated)")
    p.add_argument("--model", action="append", metavar="PATH",
                   help="benchmark your own model (.py, .gir or .onnx; repeatable): against the "
                        "reference, numpy op by op and, for .onnx, ONNX Runtime on the file")
    p.add_argument("--dim", action="append", metavar="NAME=N",
                   help="with --model: bind a symbolic dimension of the .onnx models by name")
    p.add_argument("--shape", action="append", metavar="INPUT=AxBxC",
                   help="with --model: give an input's whole shape in the .onnx models")
    p.add_argument("--threads", default="1", metavar="N[,N...]",
                   help="thread counts to run every workload at (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, few samples, no torch.compile: a smoke run under 60 s")
    p.add_argument("--json", metavar="FILE", help="write every sample and result as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot speedups per workload (matplotlib)")
    p.add_argument("--markdown", metavar="FILE", help="write the README performance section")
    p.add_argument("--repeats", type=positive_int,
                   help="timed samples per contender (default 15, quick 3)")
    p.add_argument("--warmup", type=non_negative_int,
                   help="warm-up calls per contender (default 3, quick 1)")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="sampling time per contender and workload before it stops early")
    p.add_argument("--no-compile-peers", action="store_true",
                   help="skip torch.compile (about 10 s of compilation per graph)")
    p.add_argument("--isolate", default="auto", choices=("auto", "always", "never"),
                   help="run each runtime's contenders (and the anchors) in a worker process "
                        "of its own: auto (default) for thread counts above 1, where idle "
                        "thread pools of other runtimes would steal cores; always; never")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (default: re-run without "
                        "them so numpy's OpenBLAS picks its kernel for this CPU)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.set_defaults(fn=cmd_bench)


def parse_threads(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise GraphError(f"--threads wants positive integers like 1 or 1,2; got {text!r}")
    return out


def probe_target(target: str) -> str | None:
    """None if `target` compiles and runs a tiny graph correctly here, else why not."""
    import numpy as np

    from graphc.ir.builder import Builder

    from .contenders import graphc_compile

    b = Builder("probe", seed=0)
    x = b.input("x", (8,))
    graph = b.build(outputs={"y": b.tanh(x) * 2.0 + 1.0})
    xs = np.linspace(-2, 2, 8, dtype=np.float32)
    try:
        y = graphc_compile()(graph, target=target, threads=1).run({"x": xs})["y"]
    except Exception as e:  # noqa: BLE001 - any failure means "not usable here"
        return f"{type(e).__name__}: {e}"
    if not np.allclose(y, np.tanh(xs) * 2 + 1, rtol=1e-4, atol=1e-5):
        return "wrong result on a probe graph"
    return None


def resolve_target(requested: str) -> tuple[str, str]:
    """(target to use, note for the header)."""
    if requested != "auto":
        return requested, ""
    why = probe_target("llvm")
    if why is None:
        return "llvm", "auto: llvm works here"
    return "reference", f"auto: llvm not usable ({why[:160]}), using reference"


def cmd_bench(args: argparse.Namespace) -> int:
    from .machine import reexec_without_openblas_overrides

    kept = None
    if args.keep_openblas_env:
        kept = "--keep-openblas-env"
    elif sys.argv[1:2] == ["bench"]:
        reexec_without_openblas_overrides(sys.argv[1:])   # returns only if nothing to remove
    else:
        kept = "in-process call: not re-executed"
    from .workloads import all_workloads

    if args.list:
        for w in all_workloads():
            print(f"{w.name:24s} {w.description}")
        return 0
    from . import report
    from .runner import BenchConfig, run_bench
    from .workloads_user import model_name

    target, note = resolve_target(args.target)
    if note:
        print(f"graphc bench: target {note}", file=sys.stderr)
    patterns = [p.strip() for arg in (args.workload or []) for p in arg.split(",") if p.strip()]
    patterns += [model_name(path, args.dim, args.shape) for path in args.model or []]
    cfg = BenchConfig(target=target, threads=parse_threads(args.threads), quick=args.quick,
                      workloads=tuple(patterns), repeats=args.repeats, warmup=args.warmup,
                      budget_s=args.budget, compile_peers=not args.no_compile_peers,
                      progress=not args.no_progress, openblas_kept_reason=kept,
                      isolate=args.isolate)
    doc = run_bench(cfg)
    doc["config"]["target_requested"] = args.target
    doc["config"]["target_note"] = note
    sys.stdout.write(report.terminal_report(doc))
    if args.json:
        report.write_json(doc, args.json)
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown_report(doc, source=args.json or ""))
        print(f"wrote {args.markdown}")
    if args.plot:
        report.plot_speedups(doc, args.plot)
        print(f"wrote {args.plot}")
    return 0
