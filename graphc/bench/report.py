"""Presenting a benchmark run: the terminal table, the JSON document, the README's markdown
section and a plot of speedups.

The JSON document (schema "graphc-bench/2", produced by `runner.run_bench`; documents of
"graphc-bench/1", which lack the fields marked (2), are still read and rendered):

    schema      "graphc-bench/2"
    machine     date, cpu, logical_cpus, usable_cpus, memory_gib, platform,
                transparent_hugepages, load_average, versions{...}, graphc_commit,
                numpy_blas{internal_api, version, num_threads, architecture, ...},
                openblas_env{action, removed, present}
    config      target, threads[], quick, workloads[], repeats, warmup, compile_peers,
                min_sample_s, budget_s, min_samples, isolate (2: auto | always | never), ...
    anchors[]   threads, copy{bytes, samples_s[], gbps_median, gbps_best},
                sgemm{n, samples_s[], gflops_median, gflops_best},
                peak (2, absent without LLVM: then peak_unavailable){vector_bits, lanes,
                    accumulators, flops_per_call, samples_s[], gflops_best, gflops_median,
                    per_core_gflops_best},
                isolation (2){mode: in-process | process, pids{numpy, peak}},
                rounds (2: measured before and after the workloads, samples pooled),
                load_average (2){before, after}
    results[]   workload, description, threads, kind, sizes, bytes, flops, notes,
                isolation (2: in-process | process),
                graph{fused|unfused|reference: {kernels, arena_bytes, naive_bytes,
                lower_bound_bytes, ...}},
                speedups{unfused, reference, numpy, torch, torch.compile, onnxruntime},
                contenders[]: name, family, role (main | allocator | anchor), threads, config,
                    status (ok | wrong | error | skipped), reason,
                    check{ran, passed, compared[], max_rel_err, rtol, errors{}, problems[]},
                    compile{cold_s, cached_s | session_s}, stats{}, first_call_s, inner,
                    samples_s[] (seconds per call), capped,
                    core_checks (2, above one thread: per round, the per-thread FMA rate
                    on all threads as a share of one thread's; or why not measured),
                    shared_samples_s[] (2, rounds on shared cores, kept out of the median),
                    cores_shared (2, too few other samples: the shared ones are in samples_s),
                    isolation (2){mode: in-process | process, group, pid},
                    median_s, min_s, max_s,
                    rate{gbps | gflops | us_per_call, of, pct, pct_peak (2, compute-bound)}
    targets[]   id, text, workload, threads, metric, bound, target, measured, interval
                ([lo, hi], 90 % bootstrap; speedup and bandwidth targets), met, note,
                at_peak (2, speedup targets that declare FLOPs){flops, peer_s, peak_gflops,
                    needed_gflops, max_speedup, attainable},
                memory_floor (2, speedup targets that name a floor workload){workload,
                    floor_s, by, peer_s, needed_s, max_speedup, attainable}
    elapsed_s

Speedups are peer median / graphc fused median: above 1, graphc is faster.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .runner import RATIO_PEERS, SCHEMA

SCHEMAS = ("graphc-bench/1", SCHEMA)   # every version this module reads

SPEEDUP_HEADERS = {"unfused": "vs unfused", "numpy": "vs numpy", "torch": "vs torch",
                   "torch.compile": "vs t.compile", "onnxruntime": "vs ORT",
                   "reference": "vs ref"}


# -- formatting -----------------------------------------------------------------------------------


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def fmt_speedup(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_rate(rate: dict[str, Any] | None) -> str:
    if not rate:
        return ""
    if "gbps" in rate:
        return f"{rate['gbps']:.3g} GB/s ({rate['pct']:.0f}% bw)"
    if "gflops" in rate:
        peak = f", {rate['pct_peak']:.0f}% peak" if "pct_peak" in rate else ""
        return f"{rate['gflops']:.3g} GFLOP/s ({rate['pct']:.0f}% gemm{peak})"
    return ""


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A fixed-width text table; columns in `right` are right-aligned."""
    right = right or set()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- pieces shared by the terminal and markdown forms ---------------------------------------------


def machine_lines(doc: dict[str, Any]) -> list[str]:
    m, cfg = doc["machine"], doc["config"]
    v = m["versions"]
    blas = m.get("numpy_blas") or {}
    lines = [
        f"date {m['date']}; graphc {v.get('graphc')} ({m.get('graphc_commit') or 'no git'}); "
        f"target {cfg['target']}; threads {', '.join(map(str, cfg['threads']))}"
        + ("; QUICK (smoke-test sizes, not comparable)" if cfg["quick"] else ""),
        *([f"target choice: {cfg['target_note']}"] if cfg.get("target_note") else []),
        f"cpu {m['cpu']}; {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable); "
        f"{m.get('memory_gib')} GiB; last-level cache "
        f"{fmt_bytes(m.get('last_level_cache_bytes'))}; THP {m.get('transparent_hugepages')}; "
        f"load {', '.join(f'{x:.2f}' for x in (m.get('load_average') or []))}",
        f"numpy {v.get('numpy')} with {blas.get('internal_api', '?')} {blas.get('version', '')}"
        f" (kernel {blas.get('architecture', '?')}); OpenBLAS env: "
        f"{m['openblas_env']['action']}"
        + (f" {m['openblas_env']['removed'] or m['openblas_env']['present']}"
           if m['openblas_env']['removed'] or m['openblas_env']['present'] else ""),
        "peers: " + ", ".join(f"{k} {v.get(k) or 'not installed'}"
                              for k in ("torch", "onnxruntime", "onnx", "llvmlite")),
        f"python {v.get('python')}; {m['platform']}",
    ]
    for a in doc["anchors"]:
        lines.append(anchor_line(a))
    modes = sorted({r.get("isolation", "in-process") for r in doc["results"]})
    if "process" in modes:
        by = {r["threads"]: r.get("isolation", "in-process") for r in doc["results"]}
        lines.append("isolation: " + "; ".join(
            f"{n} thread(s) " + ("one worker process per runtime" if m == "process"
                                 else "all contenders in one process")
            for n, m in sorted(by.items())))
    checked = core_check_summary(doc)
    if checked:
        lines.append(checked)
    return lines


def core_check_summary(doc: dict[str, Any]) -> str:
    """How many multi-threaded sampling rounds found the cores shared (`cores.py`), per thread
    count, each worker's rounds counted once ("" when the run had no core check)."""
    from .cores import SHARED_SHARE

    parts = []
    for n in sorted({r["threads"] for r in doc["results"] if r["threads"] > 1}):
        rounds: dict[Any, list[float]] = {}
        for r in doc["results"]:
            for c in r["contenders"] if r["threads"] == n else ():
                if isinstance(c.get("core_checks"), list):
                    worker = (r["workload"], (c.get("isolation") or {}).get("pid"))
                    rounds.setdefault(worker, c["core_checks"])
        if rounds:
            shares = [s for v in rounds.values() for s in v]
            shared = sum(s < SHARED_SHARE for s in shares)
            parts.append(f"{n} thread(s): {shared} of {len(shares)} sampling rounds on shared "
                         f"cores, set apart (per-thread share of the solo FMA rate "
                         f"{min(shares):.2f}-{max(shares):.2f})")
    return "core check: " + "; ".join(parts) if parts else ""


def anchor_line(a: dict[str, Any]) -> str:
    """One anchors line: copy bandwidth, numpy sgemm and (where measured) the FMA peak."""
    peak = a.get("peak")
    peak_text = (f"; FMA peak {peak['gflops_best']:.3g} GFLOP/s ({peak['vector_bits']}-bit, "
                 f"{peak['per_core_gflops_best']:.3g} per core)" if peak else "")
    where = " [worker processes]" if (a.get("isolation") or {}).get("mode") == "process" else ""
    load = a.get("load_average")
    if isinstance(load, dict) and load.get("before") and load.get("after"):
        where += f" [load {load['before'][0]:.2f} before, {load['after'][0]:.2f} after]"
    return (f"anchors, {a['threads']} thread(s){where}: copy {a['copy']['gbps_best']:.3g} "
            f"GB/s (median {a['copy']['gbps_median']:.3g}); numpy sgemm {a['sgemm']['n']}^3 "
            f"{a['sgemm']['gflops_best']:.3g} GFLOP/s (median "
            f"{a['sgemm']['gflops_median']:.3g}){peak_text}; "
            f"{'% bw, % gemm and % peak' if peak else '% bw and % gemm'} are of the best")


def contender_cells(r: dict[str, Any]) -> list[str]:
    thr = "-" if r["threads"] is None else str(r["threads"])
    if r["status"] != "ok":
        what = {"wrong": "WRONG RESULT, not timed", "error": "ERROR",
                "skipped": "skipped"}.get(r["status"], r["status"])
        return [r["name"], thr, what, "", "", r["reason"][:90]]
    span = f"{fmt_time(r['min_s'])} - {fmt_time(r['max_s'])}"
    n = len(r["samples_s"])
    check = f"ok (err {r['check']['max_rel_err']:.0e}), n={n}" + (" capped" if r["capped"]
                                                                  else "")
    if r.get("cores_shared"):
        check += ", cores shared"
    elif r.get("shared_samples_s"):
        check += f" (+{len(r['shared_samples_s'])} on shared cores, set apart)"
    return [r["name"], thr, fmt_time(r["median_s"]), span, fmt_rate(r.get("rate")), check]


def plan_line(result: dict[str, Any]) -> str:
    g = result["graph"]
    parts = []
    if g:
        parts.append("kernels " + ", ".join(f"{k} {s.get('kernels', '?')}" for k, s in g.items()))
    f = g.get("fused") or {}
    if "arena_bytes" in f:
        parts.append(f"memory plan (fused): arena {fmt_bytes(f['arena_bytes'])}, naive "
                     f"{fmt_bytes(f['naive_bytes'])}, lower bound "
                     f"{fmt_bytes(f['lower_bound_bytes'])}")
    return "; ".join(parts)


def speedup_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in SPEEDUP_HEADERS if any(r["speedups"].get(c) for r in doc["results"])]
    headers = ["workload", "thr", "graphc fused", "fused rate",
               *(SPEEDUP_HEADERS[c] for c in cols)]
    rows = []
    for r in doc["results"]:
        fused = next((c for c in r["contenders"] if c["name"] == "graphc fused"), None)
        t = fmt_time(fused.get("median_s")) if fused and fused["status"] == "ok" else (
            fused["status"] if fused else "-")
        rate = fmt_rate(fused.get("rate")) if fused else ""
        rows.append([r["workload"], str(r["threads"]), t, rate,
                     *(fmt_speedup(r["speedups"].get(c)) for c in cols)])
    return headers, rows


RUNTIME_NOTE = ("graphc's cold compile excludes its runtime library (the GEMM, compiled once per "
                "machine and cached on disk); 'runtime lib' is what making it available took "
                "just before: about a second the first time on a machine, milliseconds "
                "from the disk cache, 0 once loaded in the process.")


def compile_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["workload", "fused cold", "fused cached", "of which passes", "unfused cold",
               "runtime lib", "torch.compile 1st call", "ORT session"]
    rows = []

    def get(by: dict[str, Any], name: str, key: str) -> str:
        c = by.get(name)
        return fmt_time(c["compile"].get(key)) if c and c["compile"] else "-"

    for r in doc["results"]:
        by = {c["name"]: c for c in r["contenders"]}
        tc = by.get("torch.compile")
        passes = (by.get("graphc fused") or {}).get("stats", {}).get("pipeline_seconds")
        rows.append([r["workload"], get(by, "graphc fused", "cold_s"),
                     get(by, "graphc fused", "cached_s"), fmt_time(passes),
                     get(by, "graphc unfused", "cold_s"), get(by, "graphc fused", "runtime_s"),
                     fmt_time(tc["first_call_s"]) if tc and tc.get("first_call_s") else "-",
                     get(by, "onnxruntime", "session_s")])
    return headers, rows


def plan_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["workload", "kernels fused", "kernels unfused", "arena (fused)", "naive (fused)",
               "lower bound (fused)", "arena (unfused)", "naive (unfused)"]
    rows, seen = [], set()
    for r in doc["results"]:
        if r["workload"] in seen:
            continue
        seen.add(r["workload"])
        f, u = r["graph"].get("fused", {}), r["graph"].get("unfused", {})
        rows.append([r["workload"], str(f.get("kernels", "-")), str(u.get("kernels", "-")),
                     fmt_bytes(f.get("arena_bytes")), fmt_bytes(f.get("naive_bytes")),
                     fmt_bytes(f.get("lower_bound_bytes")), fmt_bytes(u.get("arena_bytes")),
                     fmt_bytes(u.get("naive_bytes"))])
    return headers, rows


def allocator_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each '(alloc)' row next to its preallocated main row."""
    headers = ["workload", "thr", "contender", "preallocated", "fresh outputs", "fresh / prealloc"]
    rows = []
    for r in doc["results"]:
        by = {c["name"]: c for c in r["contenders"]}
        for c in r["contenders"]:
            if c["role"] != "allocator" or not c.get("median_s"):
                continue
            main = by.get(c["name"].removesuffix(" (alloc)"), {})
            ratio = c["median_s"] / main["median_s"] if main.get("median_s") else None
            rows.append([r["workload"], str(r["threads"]), main.get("name", "?"),
                         fmt_time(main.get("median_s")), fmt_time(c["median_s"]),
                         fmt_speedup(ratio)])
    return headers, rows


def fmt_measured(t: dict[str, Any]) -> str:
    """The measured value, with its 90 % interval where the run has one."""
    v, spread = t["measured"], t.get("interval")
    if v is None:
        return "-"
    if t["metric"] == "speedup":
        return f"{v:.2f}x" + (f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else "")
    if t["metric"] == "bandwidth_pct":
        return f"{v:.0f}%" + (f" ({spread[0]:.0f}-{spread[1]:.0f})" if spread else "")
    return fmt_time(v)


def target_rows(doc: dict[str, Any], marks: tuple[str, str, str], measured_only: bool = False
                ) -> list[list[str]]:
    met, short, none = marks
    return [[t["text"], t["workload"], str(t["threads"]), t["target"], fmt_measured(t),
             met if t["met"] else (none if t["met"] is None else short), t["note"]]
            for t in doc["targets"] if not measured_only or t["measured"] is not None]


def terminal_targets(doc: dict[str, Any]) -> list[str]:
    """The targets the run measured (a run of some workloads, or of the user's model, does not
    list the rest one by one)."""
    rows = target_rows(doc, ("met", "SHORT", "-"), measured_only=True)
    if not rows:
        return ["Targets: none measured (their workloads were not in this run)", ""]
    left = len(doc["targets"]) - len(rows)
    note = [f"({left} target rows left out: their workloads were not in this run)"] if left else []
    return ["Targets", table(TARGET_HEADERS, rows), *note, ""]


TARGET_HEADERS = ["target", "workload", "thr", "goal", "measured", "status", "note"]


# -- terminal -------------------------------------------------------------------------------------


def terminal_report(doc: dict[str, Any]) -> str:
    out = ["graphc bench", *("  " + line for line in machine_lines(doc)), ""]
    for r in doc["results"]:
        out.append(f"== {r['workload']} ({r['threads']} thread{'s' if r['threads'] > 1 else ''})"
                   f": {r['description']}")
        out.append("   sizes: " + ", ".join(f"{k} {v}" for k, v in r["sizes"].items())
                   + f"; {fmt_bytes(r['bytes'])} moved at least, {r['flops'] / 1e9:.3g} GFLOP")
        if r["graph"]:
            out.append("   " + plan_line(r))
        if r["notes"]:
            out.append("   note: " + r["notes"])
        rows = [contender_cells(c) for c in r["contenders"]]
        body = table(["contender", "thr", "median", "min - max", "rate", "check"], rows, {1, 2})
        out += ["   " + line for line in body.splitlines()] + [""]
    out.append("Speedup of graphc fused = peer median / graphc fused median (> 1: graphc faster)")
    out += [table(*speedup_rows(doc)), ""]
    h, rows = allocator_rows(doc)
    if rows:
        out += ["Allocator effects: fresh outputs vs preallocated", table(h, rows), ""]
    out += ["Compile times (apart from run times)", table(*compile_rows(doc)), RUNTIME_NOTE, ""]
    out += terminal_targets(doc)
    out.append(summary_line(doc))
    return "\n".join(out) + "\n"


def summary_line(doc: dict[str, Any]) -> str:
    rows = [c for r in doc["results"] for c in r["contenders"]]
    count = {s: sum(c["status"] == s for c in rows) for s in ("ok", "wrong", "error", "skipped")}
    checked = sum(bool(c["check"].get("ran")) for c in rows)
    return (f"{len(doc['results'])} workload runs, {len(rows)} contenders: {count['ok']} ok, "
            f"{count['wrong']} wrong, {count['error']} errors, {count['skipped']} skipped; "
            f"{checked} correctness checks ran; {doc['elapsed_s']:.1f} s")


# -- markdown (the README's performance section) --------------------------------------------------


def markdown_report(doc: dict[str, Any], source: str = "") -> str:
    """The README's performance section, generated from one JSON run."""
    m = doc["machine"]
    out = ["## Performance", "",
           f"Generated by `scripts/perf_table.py` from `graphc bench --json` "
           f"{('(' + source + ') ') if source else ''}on {m['date'][:10]}. "
           "Speedup = peer median time / graphc fused median time: above 1, graphc is faster. "
           "Every contender's output was checked against the reference before it was timed.",
           ""]
    out += ["```", *machine_lines(doc), "```", ""]
    if doc["config"]["quick"]:
        out += ["**This run used --quick smoke-test sizes: its numbers say nothing about the "
                "targets.**", ""]
    h, rows = speedup_rows(doc)
    out += ["### Speedups", "", md_table(h, rows), ""]
    out += ["### Targets", "",
            "Targets of the LLVM backend beside the measured values (one thread unless noted); "
            "✗ marks where we fall short. In brackets: the 90 % bootstrap interval of the "
            "measured value (samples resampled, medians recomputed); where it contains the "
            "bound, the note says the verdict is within this run's noise. Where a target "
            "declares its FLOPs, the note says when it is unattainable even at the measured FMA "
            "peak; where it names a workload with the same memory traffic and no arithmetic, "
            "when the bound is below the time of that traffic alone.", "",
            md_table(TARGET_HEADERS, target_rows(doc, ("✓", "✗", "not measured"))), ""]
    out += ["### Kernels and memory plan", "",
            "Arena: the planned buffer; naive: every intermediate in its own buffer; lower "
            "bound: the most bytes live at once (`exe.stats()`).", "",
            md_table(*plan_rows(doc)), ""]
    out += ["### Compile times", "", md_table(*compile_rows(doc)), "", RUNTIME_NOTE, ""]
    h, rows = allocator_rows(doc)
    if rows:
        out += ["### Allocator effects", "",
                "The same peer with fresh outputs instead of preallocated ones (page faults on "
                "new buffers; transparent huge pages: "
                f"{m.get('transparent_hugepages')}).", "", md_table(h, rows), ""]
    return "\n".join(out)


# -- JSON -----------------------------------------------------------------------------------------


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def write_json(doc: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(doc, indent=1, default=_plain) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    doc = json.loads(Path(path).read_text())
    problems = validate_document(doc)
    if problems:
        from graphc.ir.errors import GraphError

        raise GraphError(f"{path}: not a graphc bench document: {'; '.join(problems[:5])}")
    return doc


TOP_KEYS = ("schema", "machine", "config", "anchors", "results", "targets", "elapsed_s")
RESULT_KEYS = ("workload", "description", "threads", "kind", "sizes", "bytes", "flops",
               "graph", "contenders", "speedups")
CONTENDER_KEYS = ("name", "family", "role", "threads", "config", "status", "reason", "check",
                  "compile", "stats", "first_call_s", "inner", "samples_s", "capped")
STATUSES = ("ok", "wrong", "error", "skipped")


def validate_document(doc: Any) -> list[str]:
    """Problems with a document's shape (empty when it follows the schema above)."""
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    problems = [f"missing key {k!r}" for k in TOP_KEYS if k not in doc]
    if doc.get("schema") not in SCHEMAS:
        problems.append(f"schema {doc.get('schema')!r} not one of {SCHEMAS}")
    current = doc.get("schema") == SCHEMA
    for r in doc.get("results", []):
        where = f"result {r.get('workload')!r}"
        problems += [f"{where}: missing {k!r}" for k in RESULT_KEYS if k not in r]
        problems += [f"{where}: speedups lack {k!r}" for k in RATIO_PEERS
                     if k not in r.get("speedups", {})]
        for c in r.get("contenders", []):
            cw = f"{where} / {c.get('name')!r}"
            problems += [f"{cw}: missing {k!r}" for k in CONTENDER_KEYS if k not in c]
            if current and "isolation" not in c:
                problems.append(f"{cw}: missing 'isolation'")
            if c.get("status") not in STATUSES:
                problems.append(f"{cw}: status {c.get('status')!r}")
            if c.get("status") == "ok":
                problems += [f"{cw}: ok without {k!r}" for k in ("median_s", "min_s", "max_s")
                             if k not in c]
                if not c.get("check", {}).get("passed"):
                    problems.append(f"{cw}: ok but its check did not pass")
    return problems


# -- plot -----------------------------------------------------------------------------------------


def plot_speedups(doc: dict[str, Any], path: str | Path) -> None:
    """Grouped bars: per workload, graphc fused's speedup over each peer (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        from graphc.ir.errors import GraphError

        raise GraphError("--plot needs matplotlib (pip install matplotlib)") from e
    results = doc["results"]
    cols = [c for c in SPEEDUP_HEADERS if any(r["speedups"].get(c) for r in results)]
    labels = [f"{r['workload']} x{r['threads']}" for r in results]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.6 * len(results) * max(1, len(cols)) / 2), 5))
    width = 0.8 / max(1, len(cols))
    for i, col in enumerate(cols):
        xs = [j + i * width for j in range(len(results))]
        ys = [r["speedups"].get(col) or float("nan") for r in results]
        ax.bar(xs, ys, width, label=SPEEDUP_HEADERS[col])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speedup of graphc fused (peer time / graphc time)")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))])
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    title = f"graphc bench: {doc['machine']['cpu']}, target {doc['config']['target']}"
    ax.set_title(title + (" (quick sizes)" if doc["config"]["quick"] else ""), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
