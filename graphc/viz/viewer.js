// graphc viz: the viewer (inlined into the HTML file by graphc/viz/html.py).
//
// Every layout was computed in Python; this script only draws the chosen precomputed view as
// SVG, handles zoom, pan and clicks, and shows details. Views of a stage: "all" (every group
// open), "top" (one box per top-level group) and "f:<group>" (that group and its ancestors
// open). With ?selftest=1 the page checks itself and writes JSON into #selftest-result;
// ?stage=<index|slug> picks the stage to open, ?view=<name> the view, ?select=<node id> a node.
"use strict";
(function () {
  const errors = [];
  window.addEventListener("error", (e) => errors.push(String(e.message || e)));
  const consoleError = console.error.bind(console);
  console.error = (...args) => { errors.push(args.map(String).join(" ")); consoleError(...args); };

  const DATA = JSON.parse(document.getElementById("graphc-data").textContent);
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  const svg = $("graph");
  const viewport = $("viewport");
  const state = { stage: 0, view: null, scale: 1, tx: 0, ty: 0, selected: null };
  const ROLE_NAMES = {
    forward: "forward", backward: "backward", sum: "Σ fan-out sum", update: "optimizer update",
    input: "input", param: "parameter",
  };

  // -- helpers -------------------------------------------------------------------------------
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ESC[c]);
  function fmtBytes(b) {
    if (b < 1024) return b + " B";
    if (b < 1048576) return (b / 1024).toFixed(b < 10240 ? 2 : 1) + " KiB";
    return (b / 1048576).toFixed(2) + " MiB";
  }
  function fmtSeconds(s) { return s < 1 ? (s * 1000).toFixed(1) + " ms" : s.toFixed(2) + " s"; }
  function stage() { return DATA.stages[state.stage]; }
  function kernelColor(index) { return "hsl(" + ((index * 137.5) % 360).toFixed(0) + ", 70%, 86%)"; }
  function kernelLine(index) { return "hsl(" + ((index * 137.5) % 360).toFixed(0) + ", 55%, 42%)"; }

  function indexStage(st) {
    if (st._nodes) return;
    if (st.sameViewsAs !== null && st.sameViewsAs !== undefined) {
      // the same graph as an earlier stage (the fused one): its layouts, plus our own views
      st.views = Object.assign({}, DATA.stages[st.sameViewsAs].views, st.views);
    }
    st._nodes = new Map(st.nodes.map((n) => [n.id, n]));
    st._groups = new Map(st.groups.map((g) => [g.id, g]));
    st._users = new Map();
    for (const n of st.nodes) {
      for (const src of n.ins) {
        if (!st._users.has(src)) st._users.set(src, []);
        st._users.get(src).push(n.id);
      }
    }
    st._kernels = new Map();
    if (st.schedule) st.schedule.kernels.forEach((k) => st._kernels.set(k.name, k));
  }
  function ancestors(st, gid) {
    const out = [];
    while (gid) { out.unshift(gid); gid = st._groups.get(gid).parent; }
    return out;
  }
  function itemAncestors(st, id) {
    if (st._groups.has(id)) return ancestors(st, st._groups.get(id).parent);
    const n = st._nodes.get(id);
    return n ? ancestors(st, n.g) : [];
  }

  // -- tabs and stage info -------------------------------------------------------------------
  function buildTabs() {
    const tabs = $("tabs");
    tabs.innerHTML = DATA.stages.map((st, i) =>
      '<button role="tab" data-stage="' + i + '" title="pass ' + esc(st.pass) + '">' +
      esc(st.name) + '<span class="count">' + st.nodeCount + "</span></button>").join("");
    tabs.addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (b) showStage(Number(b.dataset.stage));
    });
  }
  function stageInfo(st) {
    const r = st.roles;
    const parts = ["<b>" + esc(st.name) + "</b>", "pass <b>" + esc(st.pass) + "</b>",
      "<b>" + st.nodeCount + "</b> nodes", fmtSeconds(st.seconds),
      (r.forward || 0) + " forward"];
    if (r.backward || r.sum) parts.push((r.backward || 0) + (r.sum || 0) + " backward (" +
      (r.sum || 0) + " Σ fan-out sums)");
    if (r.update) parts.push(r.update + " optimizer updates");
    if (st.schedule) parts.push("<b>" + st.schedule.kernels.length + "</b> kernels");
    if (st.schedule && st.schedule.memory) parts.push("arena " + fmtBytes(st.schedule.memory.arena));
    $("stage-info").innerHTML = parts.join(" · ");
  }
  function buildLegend(st) {
    const present = new Set(st.nodes.map((n) => n.role));
    const order = ["input", "param", "forward", "backward", "sum", "update"];
    let html = order.filter((r) => present.has(r)).map((r) =>
      '<span><i style="background:var(--' + cssVar(r) + '-fill);border-color:var(--' +
      cssVar(r) + '-line)"></i>' + esc(ROLE_NAMES[r]) + "</span>").join("");
    html += '<span><i style="background:var(--out-fill);border-color:var(--out-line);' +
      'border-style:dashed"></i>output</span>';
    if (st.groups.length) html += "<span>▸ box = collapsed group (click to open)</span>";
    $("legend").innerHTML = html;
  }
  function cssVar(role) {
    return { forward: "fwd", backward: "bwd", sum: "sum", update: "upd", input: "in", param: "par" }[role];
  }

  function showStage(i, viewName) {
    state.stage = i;
    const st = stage();
    indexStage(st);
    for (const b of $("tabs").querySelectorAll("button")) {
      b.classList.toggle("active", Number(b.dataset.stage) === i);
    }
    stageInfo(st);
    buildLegend(st);
    const mem = st.schedule && st.schedule.memory;
    $("btn-memory").hidden = !mem;
    $("btn-expand").disabled = !st.views.all || !st.groups.length;
    $("btn-collapse").disabled = !st.groups.length;
    if (!mem) $("memory").hidden = true;
    else if (!$("memory").hidden) renderMemory(st);
    state.selected = null;
    showView(viewName && st.views[viewName] ? viewName : st.defaultView, true);
    $("details").innerHTML = '<p class="hint">Click a node for its attributes, types and ' +
      "bytes; click a box to open it. Drag to pan, wheel to zoom.</p>";
  }

  // -- drawing -------------------------------------------------------------------------------
  function edgePath(p) {
    let d = "M" + p[0] + "," + p[1];
    for (let i = 2; i < p.length; i += 2) {
      const px = p[i - 2], py = p[i - 1], x = p[i], y = p[i + 1];
      const my = (py + y) / 2;
      d += " C" + px + "," + my + " " + x + "," + my + " " + x + "," + y;
    }
    return d;
  }
  function itemRole(st, id) {
    const g = st._groups.get(id) || st._kernels.get(id.replace(/^kernel:/, ""));
    if (g) return g.role;
    const n = st._nodes.get(id);
    return n ? n.role : "forward";
  }

  function drawNode(st, n, x, y, w, h) {
    const kind = n.k;
    let style = "";
    let dot = "";
    if (n.kernel && st._kernels.has(n.kernel)) {
      const k = st._kernels.get(n.kernel);
      style = ' style="fill:' + kernelColor(k.index) + ";stroke:" + kernelLine(k.index) + '"';
      dot = "";
    }
    const rx = kind === "input" || kind === "param" ? h / 2 : 6;
    return '<g class="item kind-' + kind + " role-" + n.role + '" data-id="' + esc(n.id) +
      '" data-kind="' + kind + '" transform="translate(' + x + "," + y + ')">' +
      '<title>' + esc(n.ir) + "</title>" +
      '<rect width="' + w + '" height="' + h + '" rx="' + rx + '"' + style + "></rect>" + dot +
      '<text class="l1" x="' + w / 2 + '" y="' + (kind === "output" ? 14 : 16) + '">' +
      esc(n.label) + "</text>" +
      '<text class="l2" x="' + w / 2 + '" y="' + (kind === "output" ? 26 : 30) + '">' +
      esc(n.sub) + "</text></g>";
  }
  function drawGroup(st, g, x, y, w, h) {
    return '<g class="item kind-group role-' + g.role + '" data-id="' + esc(g.id) +
      '" data-kind="group" transform="translate(' + x + "," + y + ')">' +
      "<title>" + esc(g.id) + " (" + g.size + " nodes): click to open</title>" +
      '<rect class="box" width="' + w + '" height="' + h + '" rx="8"></rect>' +
      '<rect class="band" width="6" height="' + h + '" rx="3"></rect>' +
      '<text class="l1" x="' + w / 2 + '" y="19">▸ ' + esc(g.label) + "</text>" +
      '<text class="l2" x="' + w / 2 + '" y="35">' + esc(g.sub) + "</text></g>";
  }
  function drawKernel(st, k, x, y, w, h) {
    const style = ' style="fill:' + kernelColor(k.index) + ";stroke:" + kernelLine(k.index) + '"';
    return '<g class="item kind-group kind-kernel role-' + k.role + '" data-id="kernel:' +
      esc(k.name) + '" data-kind="kernel" transform="translate(' + x + "," + y + ')">' +
      "<title>kernel " + esc(k.name) + " (" + k.size + " nodes): click for its kernel IR</title>" +
      '<rect class="box" width="' + w + '" height="' + h + '" rx="8"' + style + "></rect>" +
      '<text class="l1" x="' + w / 2 + '" y="19">' + esc(k.label) + "</text>" +
      '<text class="l2" x="' + w / 2 + '" y="35">' + esc(k.sub) + "</text></g>";
  }
  function drawHulls(st, v) {
    if (!v.open.length || state.view === "all") return ["", ""];
    const boxes = new Map();
    for (const [id, x, y, w, h] of v.items) {
      for (const g of itemAncestors(st, id)) {
        const b = boxes.get(g) || [Infinity, Infinity, -Infinity, -Infinity];
        boxes.set(g, [Math.min(b[0], x), Math.min(b[1], y), Math.max(b[2], x + w), Math.max(b[3], y + h)]);
      }
    }
    // the open groups' outlines go under everything, their labels over everything
    let rects = "", labels = "";
    for (const gid of v.open) {
      const b = boxes.get(gid);
      if (!b) continue;
      const depth = ancestors(st, gid).length;
      const pad = 6 + 8 * (4 - Math.min(depth, 3));
      const g = st._groups.get(gid);
      rects += '<g class="hull" data-group="' + esc(gid) + '"><rect x="' + (b[0] - pad) +
        '" y="' + (b[1] - pad - 14) + '" width="' + (b[2] - b[0] + 2 * pad) + '" height="' +
        (b[3] - b[1] + 2 * pad + 14) + '" rx="10"></rect></g>';
      labels += '<g class="hull"><text x="' + (b[0] - pad + 6) + '" y="' + (b[1] - pad - 2) +
        '" data-close="' + esc(gid) + '">▾ ' + esc(g.id) + " (" + g.size +
        " nodes) — click to close</text></g>";
    }
    return [rects, labels];
  }
  function drawEdges(st, v) {
    // each value's type is written once, just below the box that produces it (a value read by
    // several nodes would otherwise repeat its type on every edge)
    const paths = [], labels = [], written = new Map(), fanout = new Map();
    for (const e of v.edges) fanout.set(e[0], (fanout.get(e[0]) || 0) + 1);
    for (const [a, b, label, count, pts] of v.edges) {
      const role = itemRole(st, b);
      // a value read by many boxes (a weight read at every time step) draws faint edges
      const cls = "edge e-" + role + (count > 1 ? " multi" : "") + (fanout.get(a) > 5 ? " fan" : "");
      paths.push('<path class="' + cls + '" data-src="' + esc(a) + '" data-dst="' + esc(b) +
        '" d="' + edgePath(pts) + '" marker-end="url(#arrow)"></path>');
      if (pts.length < 4 || pts[3] < pts[1]) continue;
      const seen = written.get(a) || new Set();
      written.set(a, seen);
      if (seen.has(label)) continue;
      seen.add(label);
      const x = pts[0] + 5, y = pts[1] + 10 + 11 * (seen.size - 1);
      labels.push('<rect class="elabel-bg" x="' + (x - 1) + '" y="' + (y - 8.5) + '" width="' +
        (label.length * 5.75 + 2) + '" height="10.5"></rect><text class="elabel" x="' + x +
        '" y="' + y + '">' + esc(label) + "</text>");
    }
    return paths.join("") + labels.join("");
  }
  function render(v) {
    const st = stage();
    const [hulls, hullLabels] = drawHulls(st, v);
    const parts = [hulls, drawEdges(st, v)];
    for (const [id, x, y, w, h] of v.items) {
      const g = st._groups.get(id);
      if (g) parts.push(drawGroup(st, g, x, y, w, h));
      else if (id.startsWith("kernel:")) parts.push(drawKernel(st, st._kernels.get(id.slice(7)), x, y, w, h));
      else parts.push(drawNode(st, st._nodes.get(id), x, y, w, h));
    }
    parts.push(hullLabels);
    viewport.innerHTML = parts.join("");
  }
  function crumbs(v) {
    const st = stage();
    const open = v.open.length && state.view !== "all" ? v.open : [];
    let html = "";
    if (state.view === "all") html = "<button data-view=\"top\">◂ collapse groups</button>";
    if (st.views.kernels) {
      html = (state.view === "kernels" ? "<button data-view=\"all\">show the nodes ▸</button>"
        : "<button data-view=\"kernels\">◂ one box per kernel</button>") + html;
    }
    else if (open.length) {
      html = '<button data-view="top">◂ top</button>' + open.map((g) =>
        '<button data-view="f:' + esc(g) + '">' + esc(st._groups.get(g).label) + "</button>").join("");
    }
    $("crumbs").innerHTML = st.groups.length || st.views.kernels ? html : "";
  }
  function showView(name, fit) {
    const st = stage();
    const v = st.views[name];
    if (!v) return false;
    state.view = name;
    render(v);
    crumbs(v);
    if (state.selected) markSelected(state.selected);
    if (fit) fitView();
    return true;
  }

  // -- zoom and pan --------------------------------------------------------------------------
  function applyTransform() {
    viewport.setAttribute("transform", "translate(" + state.tx + "," + state.ty + ") scale(" +
      state.scale + ")");
    svg.classList.toggle("far", state.scale < 0.55);
    svg.classList.toggle("veryfar", state.scale < 0.22);
  }
  function fitBox(x, y, w, h, maxScale) {
    const r = svg.getBoundingClientRect();
    const W = r.width || 1000, H = r.height || 700;
    const s = Math.min((W - 40) / Math.max(w, 1), (H - 60) / Math.max(h, 1), maxScale);
    state.scale = s;
    state.tx = (W - w * s) / 2 - x * s;
    state.ty = Math.max(36, (H - h * s) / 2) - y * s;
    applyTransform();
  }
  function fitView() {
    const v = stage().views[state.view];
    const r = svg.getBoundingClientRect();
    const W = r.width || 1000, H = r.height || 700;
    const s = Math.min((W - 40) / v.w, (H - 60) / v.h, 1.2);
    if (s >= 0.6) { fitBox(0, 0, v.w, v.h, 1.2); return; }
    // too big to read when fitted whole: readable scale, top of the graph (zoom out with -)
    state.scale = Math.max(0.6, Math.min(1, (W - 40) / v.w));
    state.tx = v.w * state.scale <= W ? (W - v.w * state.scale) / 2 : 20;
    state.ty = 36;
    applyTransform();
  }
  function zoomAt(factor, cx, cy) {
    const s = Math.min(4, Math.max(0.03, state.scale * factor));
    const k = s / state.scale;
    state.tx = cx - (cx - state.tx) * k;
    state.ty = cy - (cy - state.ty) * k;
    state.scale = s;
    applyTransform();
  }
  function centerOn(id) {
    const v = stage().views[state.view];
    const it = v.items.find((i) => i[0] === id);
    if (!it) return;
    const r = svg.getBoundingClientRect();
    state.scale = Math.max(state.scale, 0.8);
    state.tx = (r.width || 1000) / 2 - (it[1] + it[3] / 2) * state.scale;
    state.ty = (r.height || 700) / 2 - (it[2] + it[4] / 2) * state.scale;
    applyTransform();
  }
  let drag = null;
  svg.addEventListener("mousedown", (e) => {
    drag = { x: e.clientX, y: e.clientY, tx: state.tx, ty: state.ty, moved: false };
    svg.classList.add("panning");
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
    state.tx = drag.tx + dx;
    state.ty = drag.ty + dy;
    applyTransform();
  });
  window.addEventListener("mouseup", () => {
    svg.classList.remove("panning");
    if (drag) setTimeout(() => { drag = null; }, 0);
  });
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });

  // -- clicks and details --------------------------------------------------------------------
  svg.addEventListener("click", (e) => {
    if (drag && drag.moved) return;
    const close = e.target.closest("[data-close]");
    if (close) { closeGroup(close.dataset.close); return; }
    const item = e.target.closest(".item");
    if (!item) return;
    if (item.dataset.kind === "group") openGroup(item.dataset.id);
    else if (item.dataset.kind === "kernel") selectKernel(item.dataset.id.slice(7));
    else select(item.dataset.id);
  });
  $("crumbs").addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    showView(b.dataset.view, true);
  });
  function openGroup(gid) {
    const st = stage();
    showView("f:" + gid, false);
    showGroupDetails(st, st._groups.get(gid));
    const v = st.views[state.view];
    const members = v.items.filter((i) => itemAncestors(st, i[0]).includes(gid));
    if (!members.length) { fitView(); return; }
    const x0 = Math.min(...members.map((i) => i[1])), y0 = Math.min(...members.map((i) => i[2]));
    const x1 = Math.max(...members.map((i) => i[1] + i[3]));
    const y1 = Math.max(...members.map((i) => i[2] + i[4]));
    fitBox(x0 - 60, y0 - 60, x1 - x0 + 120, y1 - y0 + 120, 1.1);
  }
  function closeGroup(gid) {
    const st = stage();
    const parent = st._groups.get(gid).parent;
    showView(parent ? "f:" + parent : "top", true);
  }
  function markSelected(id) {
    for (const el of viewport.querySelectorAll(".item.selected")) el.classList.remove("selected");
    for (const el of viewport.querySelectorAll(".edge.hot")) el.classList.remove("hot");
    for (const el of viewport.querySelectorAll(".item")) {
      if (el.dataset.id === id) el.classList.add("selected");
    }
    for (const el of viewport.querySelectorAll(".edge")) {
      if (el.dataset.src === id || el.dataset.dst === id) el.classList.add("hot");
    }
  }
  function visibleItem(st, id) {
    // the item showing node `id` in the current view, switching to a view that shows it
    const has = (v) => v.items.some((i) => i[0] === id);
    if (has(st.views[state.view])) return id;
    const n = st._nodes.get(id);
    const target = n && n.g ? "f:" + n.g : "top";
    if (st.views[target] && has(st.views[target])) { showView(target, false); return id; }
    if (st.views.all) { showView("all", false); return id; }
    return null;
  }
  function select(id, center) {
    const st = stage();
    const n = st._nodes.get(id);
    if (!n) return;
    state.selected = id;
    if (center && visibleItem(st, id)) centerOn(id);
    markSelected(id);
    showNodeDetails(st, n);
  }
  function selectKernel(name) {
    const st = stage();
    const k = st._kernels.get(name);
    if (!k) return;
    state.selected = "kernel:" + name;
    markSelected(state.selected);
    $("details").innerHTML = '<div class="details"><h2>kernel ' + esc(k.name) + "</h2>" +
      '<span class="badge role-' + k.role + '">' + esc(ROLE_NAMES[k.role] || k.role) + "</span>" +
      '<span class="badge plain">' + esc(k.kind) + "</span><table><tr><td>position</td><td>" +
      k.index + " of " + st.schedule.kernels.length + "</td></tr><tr><td>nodes</td><td>" + k.size +
      "</td></tr></table>" + kernelSection(st, name) + "</div>";
  }
  function link(id, text) { return '<a data-goto="' + esc(id) + '">' + esc(text || id) + "</a>"; }
  function operandType(st, use, src) {
    const m = /#(\d+)$/.exec(use);
    const p = st._nodes.get(src);
    return p ? p.types[m ? Number(m[1]) : 0] : "";
  }
  function kernelSection(st, kname) {
    const k = st._kernels.get(kname);
    if (!k) return "";
    let html = "<h3>Kernel " + esc(k.name) + " (" + esc(k.kind) + ", #" + k.index + ")</h3>" +
      "<div>" + k.origin.length + " nodes: " + k.origin.slice(0, 12).map((o) =>
        link(o.replace(/^%/, ""), o)).join(", ") + (k.origin.length > 12 ? ", …" : "") + "</div>" +
      "<h3>Kernel IR</h3><pre>" + esc(k.ir) + "</pre>";
    const targets = st.schedule.targets || Object.keys(k.code || {});
    if (targets.length) {
      const code = (t) => k.code[t] !== undefined ? k.code[t]
        : "// no separate function for " + k.name + " in the " + t + " module";
      html += "<h3>Generated code</h3><div class=\"codetabs\">" + targets.map((t, i) =>
        '<button data-target="' + esc(t) + '"' + (i ? "" : ' class="active"') + ">" + esc(t) +
        "</button>").join("") + "</div>" + targets.map((t, i) => '<pre class="code" data-target="' +
        esc(t) + '"' + (i ? " hidden" : "") + ">" + esc(code(t)) + "</pre>").join("");
    } else {
      html += "<h3>Generated code</h3><p class=\"hint\">no code generator in this build</p>";
    }
    return html;
  }
  function showNodeDetails(st, n) {
    const rows = [["kind", n.k], ["op", n.op], ["role", ROLE_NAMES[n.role] || n.role],
      [n.types.length > 1 ? "types" : "type", n.types.join(", ")], ["bytes", fmtBytes(n.bytes)]];
    if (n.name && n.name !== n.id) rows.push(["name hint", n.name]);
    if (n.g) rows.push(["group", link("group:" + n.g, n.g)]);
    if (n.kernel) {
      rows.push([n.kernels.length > 1 ? "kernels" : "kernel", n.kernels.map((k) =>
        link("kernel:" + k, k)).join(", ") + (n.kernels.length > 1 ? " (recomputed in each)" : "")]);
    }
    let html = '<div class="details"><h2>' + esc(n.k === "output" ? n.label : "%" + n.id) + "</h2>" +
      '<span class="badge role-' + n.role + '">' + esc(ROLE_NAMES[n.role] || n.role) + "</span>" +
      '<span class="badge plain">' + esc(n.op) + "</span>" +
      (n.role === "sum" ? '<p class="hint">Σ fan-out sum: ' + esc(n.name.slice(5, -4)) +
        " is read by several nodes; its gradient is the sum of one contribution per use.</p>"
        : "") +
      '<pre class="ir">' + esc(n.ir) + "</pre><table>" +
      rows.map(([k, v]) => "<tr><td>" + esc(k) + "</td><td>" + (k === "group" || k.startsWith("kernel") ? v : esc(v)) +
        "</td></tr>").join("") + "</table>";
    const attrs = Object.entries(n.attrs);
    if (attrs.length) {
      html += "<h3>Attributes</h3><table>" + attrs.map(([k, v]) => "<tr><td>" + esc(k) +
        "</td><td><code>" + esc(v) + "</code></td></tr>").join("") + "</table>";
    }
    if (n.ins.length) {
      html += "<h3>Operands</h3><ul>" + n.ins.map((src, i) => "<li>" + link(src, n.uses[i]) +
        " : " + esc(operandType(st, n.uses[i], src)) + "</li>").join("") + "</ul>";
    }
    const users = st._users.get(n.id) || [];
    if (users.length) {
      html += "<h3>Users (" + users.length + ")</h3><ul>" + users.slice(0, 40).map((u) =>
        "<li>" + link(u, st._nodes.get(u).k === "output" ? st._nodes.get(u).label : "%" + u) +
        "</li>").join("") + (users.length > 40 ? "<li>…</li>" : "") + "</ul>";
    }
    if (n.kernel) html += kernelSection(st, n.kernel);
    $("details").innerHTML = html + "</div>";
  }
  function showGroupDetails(st, g) {
    const isOpen = stage().views[state.view].open.includes(g.id);
    let html = '<div class="details"><h2>' + esc(g.id) + "</h2>" +
      '<span class="badge role-' + g.role + '">' + esc(ROLE_NAMES[g.role] || g.role) + "</span>" +
      '<span class="badge plain">scope</span>' +
      "<table><tr><td>nodes</td><td>" + g.size + "</td></tr><tr><td>ops</td><td>" +
      esc(g.ops) + "</td></tr>" + (g.parent ? "<tr><td>inside</td><td>" +
      link("group:" + g.parent, g.parent) + "</td></tr>" : "") + "</table>" +
      '<p><button data-toggle="' + esc(g.id) + '">' + (isOpen ? "Close" : "Open") +
      " group</button></p>";
    if (g.children.length) {
      html += "<h3>Groups inside</h3><ul>" + g.children.map((c) => "<li>" +
        link("group:" + c, st._groups.get(c).label) + " (" + st._groups.get(c).size +
        ")</li>").join("") + "</ul>";
    }
    if (g.nodes.length) {
      html += "<h3>Nodes</h3><ul>" + g.nodes.slice(0, 60).map((id) => "<li>" + link(id, "%" + id) +
        " = " + esc(st._nodes.get(id).op) + "</li>").join("") +
        (g.nodes.length > 60 ? "<li>…</li>" : "") + "</ul>";
    }
    $("details").innerHTML = html + "</div>";
  }
  $("details").addEventListener("click", (e) => {
    const a = e.target.closest("[data-goto]");
    if (a) {
      const id = a.dataset.goto;
      const st = stage();
      if (id.startsWith("group:")) openGroup(id.slice(6));
      else if (id.startsWith("kernel:")) selectKernel(id.slice(7));
      else select(id, true);
      return;
    }
    const t = e.target.closest("[data-toggle]");
    if (t) {
      const gid = t.dataset.toggle;
      if (stage().views[state.view].open.includes(gid)) closeGroup(gid); else openGroup(gid);
      return;
    }
    const tab = e.target.closest("[data-target]");
    if (tab && tab.tagName === "BUTTON") {
      for (const b of $("details").querySelectorAll(".codetabs button")) {
        b.classList.toggle("active", b === tab);
      }
      for (const p of $("details").querySelectorAll("pre.code")) {
        p.hidden = p.dataset.target !== tab.dataset.target;
      }
    }
  });

  // -- memory plan chart ---------------------------------------------------------------------
  function renderMemory(st) {
    const m = st.schedule.memory;
    const K = Math.max(m.kernels.length, 1);
    const W = Math.max(640, Math.min(1400, K * 14 + 160)), H = 260, L = 70, T = 14, B = 30;
    const top = Math.max(m.arena, m.lowerBound, 1);
    const sx = (W - L - 170) / K, sy = (H - T - B) / top;
    const y = (b) => H - B - b * sy;
    let g = '<line class="maxis" x1="' + L + '" y1="' + (H - B) + '" x2="' + (L + K * sx) + '" y2="' + (H - B) + '"></line>' +
      '<line class="maxis" x1="' + L + '" y1="' + T + '" x2="' + L + '" y2="' + (H - B) + '"></line>' +
      '<text class="mtext" x="' + (L + K * sx + 20) + '" y="' + (H - B + 15) + '">kernel order →</text>' +
      '<text class="mtext" x="4" y="' + (T + 8) + '">' + fmtBytes(top) + "</text>" +
      '<text class="mtext" x="4" y="' + (H - B) + '">0</text>';
    const step = Math.max(1, Math.round(K / 12));
    for (let k = 0; k < K; k += step) {
      g += '<line class="maxis" x1="' + (L + (k + 0.5) * sx) + '" x2="' + (L + (k + 0.5) * sx) +
        '" y1="' + (H - B) + '" y2="' + (H - B + 4) + '"></line><text class="mtext" x="' +
        (L + (k + 0.5) * sx - 6) + '" y="' + (H - B + 15) + '">' + esc(m.kernels[k]) + "</text>";
    }
    m.buffers.forEach(([name, off, size, start, end, alias], i) => {
      const x = L + start * sx, w = Math.max((end - start + 1) * sx, 2);
      g += '<rect class="mbar" x="' + x + '" y="' + y(off + size) + '" width="' + w +
        '" height="' + Math.max(size * sy, 1) + '" fill="' + kernelColor(i).replace("86%", "70%") +
        '"><title>' + esc(name) + ": " + fmtBytes(size) + " at offset " + off + ", kernels " +
        start + "–" + end + (alias ? " (in place of " + esc(alias) + ")" : "") + "</title></rect>";
    });
    const line = (v, color, text) => '<line class="mline" x1="' + L + '" x2="' + (L + K * sx) +
      '" y1="' + y(v) + '" y2="' + y(v) + '" stroke="' + color + '" stroke-dasharray="6 3"></line>' +
      '<text class="mtext" x="' + (L + K * sx + 6) + '" y="' + (y(v) + 4) + '" fill="' + color + '">' +
      text + " " + fmtBytes(v) + "</text>";
    if (Math.abs(y(m.arena) - y(m.lowerBound)) < 13) {
      g += line(m.arena, "#c92a2a", m.arena === m.lowerBound ? "peak = lower bound" : "peak ≈ lower bound");
    } else g += line(m.arena, "#c92a2a", "peak (arena)") + line(m.lowerBound, "#2f9e44", "lower bound");
    // the three numbers side by side, to one scale (the naive total is usually far above)
    const bx = W + 20, bh = H - T - B, most = Math.max(m.naive, m.arena, m.lowerBound, 1);
    const bars = [["naive", m.naive, "#868e96"], ["planned", m.arena, "#c92a2a"],
      ["lower bound", m.lowerBound, "#2f9e44"]];
    bars.forEach(([label, v, color], i) => {
      const h = v / most * bh;
      g += '<rect x="' + (bx + i * 70) + '" y="' + (H - B - h) + '" width="44" height="' + h +
        '" fill="' + color + '" opacity=".75"></rect><text class="mtext" x="' + (bx + i * 70) +
        '" y="' + (H - B + 14) + '">' + label + '</text><text class="mtext" x="' + (bx + i * 70) +
        '" y="' + (H - B - h - 4) + '">' + fmtBytes(v) + "</text>";
    });
    $("memory").innerHTML = "<h2>Memory plan: " + m.buffers.length + " buffers in one arena of " +
      fmtBytes(m.arena) + " (lower bound " + fmtBytes(m.lowerBound) + ", naive " +
      fmtBytes(m.naive) + ")</h2><svg width=\"" + (W + 240) + "\" height=\"" + H + "\">" + g +
      "</svg>";
  }
  $("btn-memory").addEventListener("click", () => {
    const sec = $("memory");
    sec.hidden = !sec.hidden;
    if (!sec.hidden) renderMemory(stage());
  });

  // -- toolbar and keys ----------------------------------------------------------------------
  $("btn-fit").addEventListener("click", () => fitView());
  $("btn-zoom-in").addEventListener("click", () => zoomAt(1.25, svg.clientWidth / 2, svg.clientHeight / 2));
  $("btn-zoom-out").addEventListener("click", () => zoomAt(0.8, svg.clientWidth / 2, svg.clientHeight / 2));
  $("btn-expand").addEventListener("click", () => showView("all", true));
  $("btn-collapse").addEventListener("click", () => showView("top", true));
  svg.addEventListener("dblclick", (e) => { if (!e.target.closest(".item")) fitView(); });
  window.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT") return;
    const r = svg.getBoundingClientRect();
    if (e.key === "f") fitView();
    else if (e.key === "+" || e.key === "=") zoomAt(1.25, r.width / 2, r.height / 2);
    else if (e.key === "-") zoomAt(0.8, r.width / 2, r.height / 2);
    else if (e.key === "e" && stage().views.all) showView("all", true);
    else if (e.key === "c") showView("top", true);
    else if (e.key === "m" && !$("btn-memory").hidden) $("btn-memory").click();
  });

  // -- self test -----------------------------------------------------------------------------
  function drawn(kinds) {
    let n = 0;
    for (const el of viewport.querySelectorAll(".item")) if (kinds.includes(el.dataset.kind)) n++;
    return n;
  }
  const NODE_KINDS = ["input", "param", "node"];
  function click(el) {
    el.dispatchEvent(new MouseEvent("click", { bubbles: true, cancelable: true, view: window }));
  }
  function selftest(startStage) {
    const res = { stages: [], click: null, groupClick: null };
    DATA.stages.forEach((st, i) => {
      showStage(i);
      const v = st.views[state.view];
      const r = { name: st.name, view: state.view, items: v.items.length,
        drawnItems: drawn(NODE_KINDS.concat(["group", "output", "kernel"])),
        expectedNodes: st.counts.nodes, expectedOutputs: st.counts.outputs,
        groups: st.groups.length, expectedKernels: st.counts.kernels };
      if (st.views.kernels) {
        showView("kernels", true);
        r.drawnKernels = drawn(["kernel"]);
      }
      if (st.views.all) {
        showView("all", true);
        r.drawnNodes = drawn(NODE_KINDS);
        r.drawnOutputs = drawn(["output"]);
        r.drawnGroups = drawn(["group"]);
        r.drawnEdges = viewport.querySelectorAll(".edge").length;
      }
      res.stages.push(r);
    });
    const fused = DATA.stages.findIndex((st) => st.views.kernels);
    if (fused >= 0) {
      showStage(fused, "kernels");
      const kbox = viewport.querySelector('.item[data-kind="kernel"]');
      click(kbox);
      const code = $("details").querySelector("pre.code:not([hidden])");
      res.kernelClick = { id: kbox.dataset.id,
        text: $("details").textContent.replace(/\s+/g, " ").slice(0, 400),
        targets: Array.from($("details").querySelectorAll(".codetabs button")).map((b) => b.textContent),
        code: code ? code.textContent.slice(0, 200) : null };
    }
    showStage(startStage);
    const first = viewport.querySelector('.item[data-kind="node"]');
    if (first) {
      click(first);
      const d = $("details");
      res.click = { id: first.dataset.id, selected: state.selected,
        title: (d.querySelector("h2") || {}).textContent || "",
        text: d.textContent.replace(/\s+/g, " ").slice(0, 600),
        highlighted: viewport.querySelectorAll(".item.selected").length };
    }
    const box = viewport.querySelector('.item[data-kind="group"]');
    if (box) {
      const before = drawn(NODE_KINDS.concat(["group", "output"]));
      click(box);
      res.groupClick = { id: box.dataset.id, view: state.view, before: before,
        after: drawn(NODE_KINDS.concat(["group", "output"])),
        hull: viewport.querySelectorAll(".hull").length };
    }
    return res;
  }

  // -- start ---------------------------------------------------------------------------------
  function stageFromParam() {
    const p = params.get("stage");
    if (p === null) {
      // open on the most interesting stage: the gradients if any, else the decomposed graph
      const g = DATA.stages.findIndex((s) => s.name === "with gradients");
      return g >= 0 ? g : Math.min(1, DATA.stages.length - 1);
    }
    const i = DATA.stages.findIndex((s, k) => String(k) === p || s.slug === p || s.pass === p);
    return i >= 0 ? i : 0;
  }
  buildTabs();
  const start = stageFromParam();
  let report = null;
  if (params.get("selftest")) {
    try { report = selftest(start); } catch (e) { errors.push(String(e && e.stack || e)); }
  }
  try {
    showStage(start, params.get("view"));
    if (params.get("select")) select(params.get("select"), true);
    if (params.get("memory") && !$("btn-memory").hidden) $("btn-memory").click();
  } catch (e) { errors.push(String(e && e.stack || e)); }
  if (params.get("selftest")) {
    report = report || {};
    report.errors = errors.slice();
    $("selftest-result").textContent = JSON.stringify(report);
    $("selftest-result").hidden = false;
  }
  window.graphcViewer = { state, showStage, showView, select, openGroup, errors };
})();
