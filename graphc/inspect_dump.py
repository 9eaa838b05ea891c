"""Write the IR of every compilation stage of a graph to a folder (used by `graphc demo`)."""

from __future__ import annotations

from pathlib import Path

from graphc.ir.graph import Graph
from graphc.ir.text import print_graph


def dump_stages(graph: Graph, exe, folder: Path) -> list[Path]:
    """`graph` as built, the compiled graph, its schedule and memory plan, and generated code."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"0-built.gir": print_graph(graph)}
    if exe.graph is not None:
        files["1-simplified.gir"] = print_graph(exe.graph)
    if exe.schedule is not None:
        files["2-schedule.txt"] = str(exe.schedule)
    source = getattr(exe.program, "source", None)
    if source:
        files[f"3-{exe.target}.{'ll' if exe.target == 'llvm' else 'py'}"] = source
    written = []
    for name, text in files.items():
        p = folder / name
        p.write_text(text)
        written.append(p)
    return written
