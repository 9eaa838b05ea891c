"""Graphviz DOT for people who prefer it: `graphc viz MODEL -o model.dot --format dot`.

One `digraph` per stage, one after the other in the same file (`dot -Tsvg` renders each).
Nodes are labelled with their op (and name) and output type, edges with the tensor type they
carry, colours follow the roles of `scene.py`, and groups (name scopes, or kernels in the fused
stage) become nested clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from graphc.inspect import Stage

from .scene import Scene, build_scene

FILL = {"forward": "#eef4ff", "backward": "#fff0e0", "sum": "#ffe3e3", "update": "#e6f6ea",
        "input": "#fff8d6", "param": "#f1edff"}
LINE = {"forward": "#4a6fa5", "backward": "#d9822b", "sum": "#c92a2a", "update": "#2f9e44",
        "input": "#a07d00", "param": "#6f4fd8"}


def quote(text: str) -> str:
    """A DOT string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_line(scene: Scene, nid: str, indent: str) -> str:
    n = scene.nodes[nid]
    shape = "ellipse" if n.kind in ("input", "param") else "box"
    attrs = [f"label={quote(n.label + chr(10) + n.sub)}", f"shape={shape}"]
    if n.kind == "output":
        attrs += ['style="rounded,dashed"', 'color="#495057"']
    else:
        attrs += ['style="rounded,filled"', f'fillcolor="{FILL[n.role]}"',
                  f'color="{LINE[n.role]}"']
        if n.role == "sum":
            attrs.append("penwidth=2.5")
    return f"{indent}{quote(nid)} [{', '.join(attrs)}];"


def _cluster(scene: Scene, gid: str, indent: str, counter: list[int]) -> list[str]:
    grp = scene.groups[gid]
    counter[0] += 1
    lines = [f"{indent}subgraph cluster_{counter[0]} {{",
             f"{indent}  label={quote(f'{gid} ({grp.size} nodes)')};",
             f'{indent}  style="rounded,dashed"; color="{LINE.get(grp.role, "#888888")}";']
    for c in grp.children:
        lines += _cluster(scene, c, indent + "  ", counter)
    lines += [_node_line(scene, nid, indent + "  ") for nid in grp.nodes]
    lines.append(f"{indent}}}")
    return lines


def scene_dot(scene: Scene, title: str) -> str:
    """One digraph for one scene."""
    lines = [f"digraph {quote(title)} {{", "  rankdir=TB;", f"  label={quote(title)};",
             '  labelloc=t; fontname="DejaVu Sans";',
             '  node [fontname="DejaVu Sans", fontsize=11];',
             '  edge [fontname="DejaVu Sans Mono", fontsize=9, color="#8a949e"];']
    counter = [0]
    for gid in scene.top_groups():
        lines += _cluster(scene, gid, "  ", counter)
    lines += [_node_line(scene, nid, "  ") for nid, n in scene.nodes.items() if n.group is None]
    for src, dst, label in scene.edges:
        lines.append(f"  {quote(src)} -> {quote(dst)} [label={quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(stages: Sequence[Stage]) -> str:
    """Every stage as a digraph, one after the other."""
    out = []
    for s in stages:
        kernels = None
        if s.schedule is not None:
            from .html import schedule_json

            kernels = schedule_json(s.schedule)["node_kernel"]
        scene = build_scene(s.graph, kernels=kernels)
        out.append(scene_dot(scene, f"{s.graph.name}: {s.name} ({s.node_count} nodes)"))
    return "\n".join(out)


def write_dot(stages: Sequence[Stage], path: str | Path) -> Path:
    """Write `to_dot(stages)` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_dot(stages), encoding="utf-8")
    return path
