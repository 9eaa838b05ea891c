"""Compile every kernel of the op matrix (a shard of it) to cubin for named GPU archs, in a
process of its own (Triton's real compiler; no GPU needed), and write one JSON result per case.
With `--packages DIR`, also save a package folder for the cases in PACKAGE_CASES.

    python -m tests.backends.triton.aot_runner --out res.json --archs sm_80,sm_90 --shard 0/2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

PACKAGE_CASES = ("model.cnn", "model.lstm", "take.axis0", "scatter_add.duplicates",
                 "random_uniform.i64_seed", "batch_norm.train")


def vectorization(opts, archs) -> dict:
    """The PTX of a long fused elementwise chain and of a row-fitting softmax moves 16 bytes
    per load and store (the copy-bandwidth promise rests on it)."""
    import re

    from graphc.backends.triton import generate
    from graphc.backends.triton.aot import compile_module
    from graphc.ir.builder import Builder
    from graphc.passes import decompose
    from graphc.passes.fuse import fuse
    from graphc.passes.memory import plan_memory

    b = Builder("vec")
    x, z = b.input("x", (1 << 16,)), b.input("z", (1 << 16,))
    sm = b.softmax(b.input("s", (64, 512)))
    g = b.build(outputs={"y": ((x * 1.5 + 0.25).exp() - z).relu() * x.sigmoid(), "sm": sm})
    gen = generate(plan_memory(fuse(decompose(g))), opts)
    out = {"ok": True, "seconds": 0.0}
    try:
        aot = compile_module(gen, archs[:1], opts)
        for fn, kb in aot.binaries[archs[0]].items():
            ops = set(re.findall(r"(?:ld|st)\.global[\w.]*", kb.ptx))
            out[fn] = sorted(ops)
            if not ops or any(".v4." not in op for op in ops):
                out["ok"] = False
                out["error"] = f"{fn}: not every global access is 16 bytes wide: {sorted(ops)}"
    except Exception as e:  # noqa: BLE001
        out.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--archs", default="sm_80,sm_90")
    ap.add_argument("--shard", default="0/1")
    ap.add_argument("--packages", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"
    from graphc.backends.triton import TritonOptions, TritonProgram, generate
    from graphc.backends.triton.aot import compile_module
    from tests.backends.op_matrix import CASES_BY_NAME, OP_MATRIX, case_schedule

    index, count = (int(x) for x in args.shard.split("/"))
    names = args.names or [c.name for c in OP_MATRIX]
    names = names[index::count]
    archs = tuple(a for a in args.archs.split(",") if a)
    opts = TritonOptions(archs=archs,
                         cache_dir=args.cache_dir or tempfile.mkdtemp(prefix="graphc-aot-"))
    memo: dict = {}
    results = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            sched = case_schedule(CASES_BY_NAME[name])
            gen = generate(sched, opts)
            aot = compile_module(gen, archs, opts, memo)
            sizes = {arch: {fn: len(b.cubin) for fn, b in table.items()}
                     for arch, table in aot.binaries.items()}
            ok = all(size > 0 for table in sizes.values() for size in table.values())
            r = {"ok": ok, "kernels": len(gen.launches), "archs": sorted(aot.binaries),
                 "seconds": time.perf_counter() - t0,
                 "shared": max((b.shared for t in aot.binaries.values() for b in t.values()),
                               default=0)}
            if not ok:
                r["error"] = f"empty cubin: {sizes}"
            if args.packages and name in PACKAGE_CASES:
                folder = os.path.join(args.packages, name)
                r["package"] = TritonProgram(sched, gen, opts, aot).save(folder)
                r["package_dir"] = folder
        except Exception as e:  # noqa: BLE001 - the test process reports it
            r = {"ok": False, "seconds": time.perf_counter() - t0,
                 "error": f"{type(e).__name__}: {e}"[:4000],
                 "traceback": traceback.format_exc()[-6000:]}
        results[name] = r
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['seconds']:6.2f}s {name}", flush=True)
    if index == 0:
        results["vectorized"] = vectorization(opts, archs)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
