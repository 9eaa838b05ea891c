"""`graphc viz`: layouts, roles, groups, the viewer's data, the offline HTML file and DOT."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from graphc import inspect
from graphc.cli import main
from graphc.io import load_graph
from graphc.ir.builder import Builder
from graphc.ir.text import Namer, print_graph
from graphc.viz import build_scene, layered_layout, render_html, to_dot
from graphc.viz.html import viewer_data

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def cnn_train():
    return inspect.pipeline_stages(load_graph(EXAMPLES / "cnn.py", batch=4), train=True,
                                   codegen=False)


@pytest.fixture(scope="module")
def cnn_data(cnn_train):
    return viewer_data(cnn_train, "cnn")


def random_dag(rng, n: int, p: float) -> list[tuple[str, str]]:
    return [(f"n{i}", f"n{j}") for i in range(n) for j in range(i + 1, n) if rng.random() < p]


# -- layout ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_layout_points_down_and_never_overlaps(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    edges = random_dag(rng, n, 0.12)
    sizes = {f"n{i}": (float(rng.integers(40, 160)), float(rng.choice([32, 38, 46])))
             for i in range(n)}
    lay = layered_layout(sizes, edges)
    for u, v in edges:
        ux, uy, uw, uh = lay.boxes[u]
        vx, vy, vw, vh = lay.boxes[v]
        assert vy > uy + uh, f"edge {u}->{v} does not point down"
    boxes = list(lay.boxes.values())
    for i, (x0, y0, w0, h0) in enumerate(boxes):
        for x1, y1, w1, h1 in boxes[i + 1:]:
            overlap_y = y0 < y1 + h1 and y1 < y0 + h0
            overlap_x = x0 < x1 + w1 and x1 < x0 + w0
            assert not (overlap_x and overlap_y)
    routes = {(r.src, r.dst): r.points for r in lay.edges}
    for u, v in edges:
        pts = routes[(u, v)]
        ux, uy, uw, uh = lay.boxes[u]
        vx, vy, vw, vh = lay.boxes[v]
        assert abs(pts[0][0] - (ux + uw / 2)) <= 1 and abs(pts[0][1] - (uy + uh)) <= 1
        assert abs(pts[-1][0] - (vx + vw / 2)) <= 1 and abs(pts[-1][1] - vy) <= 1
    assert layered_layout(sizes, edges) == lay  # deterministic


def test_layout_of_a_cycle_draws_the_back_edge_upwards():
    sizes = {k: (60.0, 30.0) for k in "abc"}
    lay = layered_layout(sizes, [("a", "b"), ("b", "c"), ("c", "a")], order="abc")
    route = next(r for r in lay.edges if (r.src, r.dst) == ("c", "a"))
    assert route.points[0][1] > route.points[-1][1]
    assert lay.boxes["a"][1] < lay.boxes["b"][1] < lay.boxes["c"][1]


def test_weights_sit_next_to_their_user():
    # x -> a -> b -> c and a weight read only by c: the weight goes just above c
    sizes = {k: (60.0, 30.0) for k in ("x", "a", "b", "c", "w")}
    lay = layered_layout(sizes, [("x", "a"), ("a", "b"), ("b", "c"), ("w", "c")],
                         order=["x", "w", "a", "b", "c"])
    assert lay.boxes["w"][1] == lay.boxes["b"][1]


def test_two_two_one_looks_like_the_seed_figure():
    """As built: x1 and x2 on one row, unit 3 on the left and unit 4 on the right, each
    hidden pair on one row, then in5, yhat and the loss below."""
    g = load_graph(EXAMPLES / "two_two_one.py")
    scene = build_scene(g)
    view = scene.view(scene.groups)
    sizes = {i: (80.0, 38.0) for i in view.items}
    lay = layered_layout(sizes, [(a, b) for a, b, _, _ in view.edges], view.items,
                         floating=view.floating)
    x = {k: b[0] + b[2] / 2 for k, b in lay.boxes.items()}
    y = {k: b[1] for k, b in lay.boxes.items()}
    assert y["x1"] == y["x2"] and x["x1"] < x["x2"]
    assert y["in3"] == y["in4"] and x["in3"] < x["in4"]
    assert y["h3"] == y["h4"] and x["h3"] < x["h4"]
    assert y["h3"] < y["in5"] < y["yhat"] < y["loss"]
    assert x["h3"] < x["in5"] < x["h4"]


# -- roles and groups ------------------------------------------------------------------------------


def test_fanout_sums_and_backward_nodes_are_marked():
    b = Builder("fanout", seed=0)
    x = b.input("x", (3,))
    w = b.param("w", (3,))
    h = (w * x).named("h")
    loss = (h * h + h.sigmoid()).sum().named("loss")  # h feeds three uses
    g = inspect.pipeline_stages(b.build(outputs={"loss": loss}), schedule=False)[2].graph
    scene = build_scene(g)
    names = Namer()
    print_graph(g, names)
    sums = {names.name(n) for n in g.nodes if n.op == "add" and n.name
            and n.name.startswith("grad.h") and n.name.endswith(".sum")}
    assert len(sums) == 2  # three contributions to dL/dh: two adds
    assert {nid for nid, n in scene.nodes.items() if n.role == "sum"} == sums
    grads = {names.name(n) for n in g.nodes if n.name and n.name.startswith("grad.")}
    backward = {nid for nid, n in scene.nodes.items() if n.role in ("backward", "sum")}
    assert grads <= backward
    assert all(scene.nodes[names.name(n)].role == "forward" for n in g.nodes
               if n.name in ("h", "loss"))


def test_training_graph_groups_are_the_layers(cnn_train):
    g = cnn_train[2].graph
    scene = build_scene(g)
    top = set(scene.top_groups())
    assert {"conv2d0", "batch_norm0", "res", "loss", "grad.loss", "grad.res",
            "grad.batch_norm0", "grad.conv2d0", "update.res", "update.dense"} <= top
    body_names = [n.name or "" for n in g.nodes]
    for gid in ("res", "batch_norm0", "grad.res", "update.res"):
        # a scope holds every node whose name hint is under it
        assert scene.groups[gid].size == sum(1 for s in body_names if s.startswith(gid + "."))
    assert scene.groups["grad.res"].role == "backward"
    assert scene.groups["update.dense"].role == "update"


def test_every_view_shows_every_node_once(cnn_data, cnn_train):
    st = cnn_data["stages"][2]
    nodes = {n["id"]: n for n in st["nodes"]}
    groups = {g["id"]: g for g in st["groups"]}

    def shown_by(nid: str, items: set[str]) -> list[str]:
        chain, g = [], nodes[nid]["g"]
        while g:
            chain.append(g)
            g = groups[g]["parent"]
        return [i for i in [nid, *chain] if i in items]

    graph = cnn_train[2].graph
    assert len(nodes) == len(graph.all_nodes()) + len(graph.outputs)
    for name, view in st["views"].items():
        items = {it[0] for it in view["items"]}
        for nid, n in nodes.items():
            hits = shown_by(nid, items)
            if n["k"] in ("input", "param") and not hits:
                continue  # a source drawn inside the one closed box that reads it
            assert len(hits) == 1, (name, nid, hits)
    all_view = st["views"]["all"]
    pairs = {(v.node, n) for n in graph.nodes for v in n.inputs}
    assert len(all_view["edges"]) == len(pairs) + len(graph.outputs)
    assert {it[0] for it in all_view["items"]} == set(nodes)


def test_default_views(cnn_data):
    by_name = {s["name"]: s for s in cnn_data["stages"]}
    assert by_name["as built"]["defaultView"] == "all"  # small: everything open
    assert by_name["with gradients"]["defaultView"] == "top"  # 175 nodes: one box per layer
    top = by_name["with gradients"]["views"]["top"]
    assert len(top["items"]) < len(by_name["with gradients"]["nodes"]) / 3


# -- the fused stage -------------------------------------------------------------------------------


def test_kernels_and_memory_plan(cnn_train, cnn_data):
    fused = cnn_train[-1]
    if fused.schedule is None:
        pytest.skip("no fusion pass in this build")
    st = cnn_data["stages"][-1]
    sched = fused.schedule
    nodes = {n["id"]: n for n in st["nodes"]}
    for k in sched.kernels:
        for origin in k.origin:
            assert k.name in nodes[origin]["kernels"]
    kernel_items = [it for it in st["views"]["kernels"]["items"] if it[0].startswith("kernel:")]
    assert len(kernel_items) == len(sched.kernels)
    mem = st["schedule"]["memory"]
    plan = sched.memory
    assert (mem["arena"], mem["lowerBound"], mem["naive"]) == (
        plan.arena_bytes, plan.lower_bound, plan.naive_bytes)
    for name, offset, size, start, end, _ in mem["buffers"]:
        assert offset == plan.offsets[name] and size == sched.buffers[name].nbytes
        assert (start, end) == tuple(plan.lifetimes[name])
        assert offset + size <= plan.arena_bytes
    assert st["sameViewsAs"] == 3  # the simplified stage's graph: its layouts are reused
    assert all(k["ir"].lstrip().startswith(f"kernel {k['name']}")
               for k in st["schedule"]["kernels"])


# -- the document ----------------------------------------------------------------------------------

EXTERNAL = re.compile(r"(https?:|ftp:|wss?:)//|//[a-z0-9-]+\.[a-z]{2,}/|@import|"
                      r"(?<![-\w])(src|href|action)\s*=\s*[\"'](?!#)|url\((?!#)", re.IGNORECASE)


def test_html_is_self_contained(cnn_train):
    text = render_html(cnn_train, "cnn")
    assert not EXTERNAL.search(text), EXTERNAL.search(text).group(0)
    js = (Path(inspect.__file__).parent / "viz" / "viewer.js").read_text()
    assert js.strip()[:200] in text and "<script src" not in text
    data = json.loads(re.search(r'<script type="application/json" id="graphc-data">(.*?)'
                                r"</script>", text, re.S).group(1))
    assert [s["name"] for s in data["stages"]] == [s.name for s in cnn_train]


def test_cli_viz_writes_html_and_dot(tmp_path, capsys):
    out = tmp_path / "net.html"
    assert main(["viz", str(EXAMPLES / "two_two_one.py"), "-o", str(out)]) == 0
    assert "with gradients" in capsys.readouterr().out
    assert out.read_text().startswith("<!DOCTYPE html>")
    dot = tmp_path / "sub" / "net.dot"
    assert main(["viz", str(EXAMPLES / "two_two_one.py"), "-o", str(dot), "--format",
                 "dot"]) == 0
    assert dot.read_text().count("digraph ") >= 4


def test_dot_has_every_node_and_edge(cnn_train):
    text = to_dot(cnn_train[:3])
    graphs = text.split("digraph ")[1:]
    assert len(graphs) == 3
    for stage, body in zip(cnn_train[:3], graphs, strict=True):
        g = stage.graph
        declared = re.findall(r'^\s*"[^"]+" \[label=', body, re.M)
        assert len(declared) == len(g.all_nodes()) + len(g.outputs)
        uses = sum(len(n.inputs) for n in g.nodes) + len(g.outputs)
        assert body.count(" -> ") == uses
        assert body.count("{") == body.count("}")
    assert "subgraph cluster_" in graphs[2] and 'label="res (' in graphs[2]
