"""`graphc demo` end to end on the LLVM target: real digits, a compiled training step, ≥ 95 %
held-out accuracy, and an AOT package that loads and agrees with the reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")


def test_demo_trains_to_95_percent_and_writes_package(tmp_path):
    from graphc.demo import DemoConfig, load_digits_split, run_demo
    from graphc.models import digits_cnn

    result = run_demo(DemoConfig(target="llvm", out=tmp_path, quiet=True))
    assert result["accuracy"] >= 0.95
    assert result["kernels_fused"] < result["kernels_unfused"]
    assert result["lower_bound_bytes"] <= result["arena_bytes"] <= result["naive_bytes"]
    pkg = Path(result["package"])
    assert (pkg / "manifest.json").is_file()
    assert sorted(p.name for p in (tmp_path / "ir").iterdir())[:3] == [
        "0-built.gir", "1-simplified.gir", "2-schedule.txt"]

    # The package runs in a fresh process without llvmlite and equals the reference backend
    # evaluated on the same (trained) parameters.
    _, _, xte, yte = load_digits_split(0)
    np.savez(tmp_path / "in.npz", x=xte, labels=yte)
    code = (
        "import sys, json, numpy as np, graphc\n"
        f"exe = graphc.load({str(pkg)!r})\n"
        f"d = np.load({str(tmp_path / 'in.npz')!r})\n"
        "out = exe({'x': d['x'], 'labels': d['labels']})\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, out['logits'])\n"
        f"np.savez({str(tmp_path / 'params.npz')!r}, **dict(exe.params))\n"
        "print(json.dumps('llvmlite' in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) is False
    logits = np.load(tmp_path / "logits.npy")
    with np.load(tmp_path / "params.npz") as p:
        params = {k: p[k] for k in p.files}
    import graphc

    g = digits_cnn(batch=len(xte), training=False)
    want = graphc.run_reference(g, {"x": xte, "labels": yte}, params)["logits"]
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    assert (logits.argmax(1) == yte).mean() == pytest.approx(result["accuracy"])
