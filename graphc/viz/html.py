"""`graphc viz`: every stage of a model as one self-contained, offline HTML file.

Note: what goes into the file
=============================

One HTML document with no external reference at all (no CDN, no font, no network): the CSS
(`viewer.css`) and the JavaScript (`viewer.js`) beside this module are inlined, and the data is
one JSON block. The JSON holds, per stage (as built, decomposed, with gradients, simplified,
fused):

- `nodes`: every node of the stage's graph (and one per graph output) with its op, role, types,
  bytes, attributes, IR line and group; `groups`: the collapsible scopes;
- `views`: precomputed layouts, all computed here in Python (`layout.py`): `all` (every group
  open), `top` (one box per top-level group: a layer), `f:<group>` (the top view with that
  group and its ancestors open) and, for the fused stage, `kernels` (one box per kernel). The
  viewer switches between them: clicking a box opens its `f:` view, so no layout code runs in
  the browser;
- for the fused stage: the kernels (member nodes, kernel-IR text, generated code per target)
  and the memory plan (buffer offsets and lifetimes, arena, lower bound, naive total).

`viewer.js` draws a view as SVG (zoom and pan), shows a node's or group's details on click,
and, with `?selftest=1` in the URL, checks itself and writes the result into
`<pre id="selftest-result">` (tests read it with headless Chromium's `--dump-dom`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from graphc.inspect import Stage

from .layout import layered_layout
from .scene import Scene, View, build_scene, main_role, op_summary

ASSETS = Path(__file__).parent
KERNEL_PREFIX = "kernel:"
SMALL_GRAPH = 110  # drawn items up to which a stage opens with every group expanded
ALL_VIEW_LIMIT = 2500  # nodes above which the fully expanded view is not laid out
LABEL_CHAR_W = 7.0
SUB_CHAR_W = 6.3
NODE_H = 38.0
GROUP_H = 46.0
OUTPUT_H = 32.0


# -- box sizes -------------------------------------------------------------------------------------


def _width(label: str, sub: str, extra: float = 0.0) -> float:
    w = max(len(label) * LABEL_CHAR_W, len(sub) * SUB_CHAR_W) + 22 + extra
    return round(min(max(w, 64.0), 320.0), 1)


def group_sub(scene: Scene, gid: str) -> str:
    grp = scene.groups[gid]
    return f"{grp.size} nodes · {grp.ops}"[:44]


def item_size(scene: Scene, item: str, kernels: Mapping[str, dict[str, Any]]
              ) -> tuple[float, float]:
    if item in scene.groups:
        grp = scene.groups[item]
        return _width("▸ " + grp.label, group_sub(scene, item), 8), GROUP_H
    if item.startswith(KERNEL_PREFIX):
        k = kernels[item[len(KERNEL_PREFIX):]]
        return _width(k["label"], k["sub"], 8), GROUP_H
    n = scene.nodes[item]
    return _width(n.label, n.sub), OUTPUT_H if n.kind == "output" else NODE_H


# -- views -----------------------------------------------------------------------------------------


def layout_view(scene: Scene, view: View, expanded: Sequence[str] = (),
                kernels: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One view as JSON: boxes, edges (with routes) and the open groups."""
    sizes = {i: item_size(scene, i, kernels or {}) for i in view.items}
    lay = layered_layout(sizes, [(a, b) for a, b, _, _ in view.edges], view.items,
                         floating=view.floating)
    routes = {(r.src, r.dst): r.points for r in lay.edges}
    return {
        "w": lay.width, "h": lay.height, "open": list(expanded),
        "items": [[i, *lay.boxes[i]] for i in view.items],
        "edges": [[a, b, label, count, [c for p in routes[(a, b)] for c in p]]
                  for a, b, label, count in view.edges if (a, b) in routes],
    }


def scope_view(scene: Scene, expanded: Sequence[str]) -> dict[str, Any]:
    return layout_view(scene, scene.view(expanded), expanded)


def scene_views(scene: Scene) -> tuple[dict[str, dict[str, Any]], str]:
    """All views of a scene (see the module note) and the name of the one to open with."""
    views: dict[str, dict[str, Any]] = {}
    if len(scene.nodes) <= ALL_VIEW_LIMIT:
        views["all"] = scope_view(scene, list(scene.groups))
    views["top"] = scope_view(scene, [])
    for gid in scene.groups:
        views[f"f:{gid}"] = scope_view(scene, scene.ancestors(gid))
    small = len(scene.nodes) <= SMALL_GRAPH and "all" in views
    return views, "all" if small or not scene.groups else "top"


# -- stages ----------------------------------------------------------------------------------------


def _node_json(n) -> dict[str, Any]:
    return {"id": n.id, "k": n.kind, "op": n.op, "name": n.name, "role": n.role,
            "label": n.label, "sub": n.sub, "types": n.types, "bytes": n.nbytes,
            "attrs": n.attrs, "ins": n.operands, "uses": n.uses, "ir": n.ir, "g": n.group,
            "kernel": n.kernel, "kernels": n.kernels}


def _group_json(scene: Scene, gid: str) -> dict[str, Any]:
    g = scene.groups[gid]
    return {"id": gid, "label": g.label, "parent": g.parent, "size": g.size, "role": g.role,
            "ops": g.ops, "sub": group_sub(scene, gid), "children": g.children,
            "nodes": g.nodes}


def stage_json(stage: Stage, index: int, same_graph_as: int | None = None) -> dict[str, Any]:
    """Everything the viewer needs about one stage. `same_graph_as`: the index of an earlier
    stage with the very same graph (the fused stage's), whose views the viewer reuses."""
    sched = schedule_json(stage.schedule, stage.code) if stage.schedule is not None else None
    scene = build_scene(stage.graph, kernels=sched["node_kernel"] if sched else None)
    if same_graph_as is None:
        views, default = scene_views(scene)
    else:
        views, default = {}, "all"
    if sched is not None:
        kernels = describe_kernels(scene, sched)
        views["kernels"] = layout_view(scene, scene.kernel_view(), kernels=kernels)
        default = "kernels"
    graph = stage.graph
    return {
        "index": index, "name": stage.name, "pass": stage.pass_name, "slug": stage.slug,
        "graph": graph.name, "nodeCount": stage.node_count, "seconds": stage.seconds,
        "counts": {"nodes": len(graph.all_nodes()), "body": len(graph.nodes),
                   "outputs": len(graph.outputs),
                   "kernels": len(sched["kernels"]) if sched else 0},
        "nodes": [_node_json(n) for n in scene.nodes.values()],
        "groups": [_group_json(scene, g) for g in scene.groups],
        "views": views, "defaultView": default, "sameViewsAs": same_graph_as,
        "roles": _role_counts(scene),
        "schedule": sched,
    }


def _role_counts(scene: Scene) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in scene.nodes.values():
        if n.kind != "output":
            out[n.role] = out.get(n.role, 0) + 1
    return out


# -- the schedule (fused kernels and memory plan) --------------------------------------------------


def schedule_json(sched: Any, code: Mapping[str, Mapping[str, str]] | None = None
                  ) -> dict[str, Any]:
    """Kernels (members, kernel IR, generated code per target) and the memory plan of a
    schedule (`graphc.ir.kernel.Schedule`); `code[target][kernel]` is generated source."""
    kernels = []
    node_kernel: dict[str, list[str]] = {}
    for i, k in enumerate(sched.kernels):
        origin = [o.lstrip("%") for o in getattr(k, "origin", ())]
        for o in origin:
            node_kernel.setdefault(o, []).append(k.name)
        kernels.append({"name": k.name, "index": i, "kind": getattr(k, "kind", ""),
                        "origin": origin, "ir": kernel_text(k),
                        "code": {t: src[k.name] for t, src in (code or {}).items()
                                 if k.name in src}})
    return {"kernels": kernels, "node_kernel": node_kernel, "targets": sorted(code or {}),
            "memory": memory_json(sched), "text": str(sched)}


def describe_kernels(scene: Scene, sched: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Adds each kernel's box label, role and op summary (from its member nodes)."""
    out = {}
    for k in sched["kernels"]:
        members = [scene.nodes[o] for o in k["origin"] if o in scene.nodes]
        k["size"] = len(members)
        k["role"] = main_role(members)
        k["label"] = f"▸ {k['name']} · {k['kind']}"
        k["sub"] = f"{len(members)} nodes · {op_summary(members)}"[:44]
        out[k["name"]] = k
    return out


def kernel_text(kernel: Any) -> str:
    """The kernel-IR text of one kernel (the kernel printer, when there is one)."""
    try:
        from graphc.ir import kernel_text as printer
    except ImportError:
        return str(kernel)
    fn = getattr(printer, "print_kernel", None)
    return fn(kernel) if fn is not None else str(kernel)


def memory_json(sched: Any) -> dict[str, Any] | None:
    """Buffers as [name, offset, bytes, first kernel, last kernel] and the plan's three
    numbers; None before memory planning."""
    plan = getattr(sched, "memory", None)
    if plan is None:
        return None
    buffers = []
    for name, offset in plan.offsets.items():
        start, end = plan.lifetimes.get(name, (0, len(sched.kernels) - 1))
        buffers.append([name, int(offset), int(sched.buffers[name].nbytes), int(start),
                        int(end), plan.aliases.get(name)])
    return {"buffers": buffers, "arena": int(plan.arena_bytes),
            "lowerBound": int(plan.lower_bound), "naive": int(plan.naive_bytes),
            "kernels": [k.name for k in sched.kernels]}


# -- the document ----------------------------------------------------------------------------------


def viewer_data(stages: Sequence[Stage], title: str) -> dict[str, Any]:
    """The JSON block of the viewer (see the module note)."""
    first: dict[int, int] = {}
    out = []
    for i, s in enumerate(stages):
        out.append(stage_json(s, i, first.get(id(s.graph))))
        first.setdefault(id(s.graph), i)
    return {"title": title, "stages": out}


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no `</`, no HTML comment openers."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(stages: Sequence[Stage], title: str = "graphc") -> str:
    """The viewer for `stages` as one self-contained HTML document."""
    css = (ASSETS / "viewer.css").read_text()
    js = (ASSETS / "viewer.js").read_text()
    data = _script_json(viewer_data(stages, title))
    safe_title = (title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return TEMPLATE.format(title=safe_title, css=css, js=js, data=data)


def write_html(stages: Sequence[Stage], path: str | Path, title: str | None = None) -> Path:
    """Write the viewer for `stages` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(stages, title or stages[0].graph.name), encoding="utf-8")
    return path


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>graphc · {title}</title>
<style>
{css}
</style>
</head>
<body>
<header id="top">
  <div class="brand">graphc <span id="model-title">{title}</span></div>
  <nav id="tabs" role="tablist"></nav>
  <div id="toolbar">
    <button id="btn-fit" title="fit to window (f)">Fit</button>
    <button id="btn-zoom-in" title="zoom in (+)">+</button>
    <button id="btn-zoom-out" title="zoom out (-)">−</button>
    <button id="btn-expand" title="open every group (e)">Expand all</button>
    <button id="btn-collapse" title="one box per layer (c)">Collapse</button>
    <button id="btn-memory" title="memory plan chart (m)" hidden>Memory</button>
  </div>
</header>
<div id="stage-info"></div>
<main>
  <div id="canvas"><svg id="graph" tabindex="0"><defs><marker id="arrow" viewBox="0 0 10 10"
    refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
    <path d="M0,1 L9,5 L0,9 z" fill="#8a949e"></path></marker></defs><g id="viewport"></g></svg>
    <div id="legend"></div>
    <div id="crumbs"></div>
  </div>
  <aside id="details"><p class="hint">Click a node for its attributes, types and bytes; click
  a box to open it. Drag to pan, wheel to zoom.</p></aside>
</main>
<section id="memory" hidden></section>
<pre id="selftest-result" hidden></pre>
<script type="application/json" id="graphc-data">{data}</script>
<script>
{js}
</script>
</body>
</html>
"""
