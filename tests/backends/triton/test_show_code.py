"""`graphc show MODEL --target triton --code` prints one @triton.jit function per kernel, each
naming its graph nodes, without importing triton or torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_show_code_prints_every_kernel_without_importing_triton() -> None:
    code = ("import sys; from graphc.cli import main; rc = main(['show', 'examples/cnn.py', "
            "'--target', 'triton', '--code', '--kernels']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('triton', 'torch')]; "
            "print('IMPORTED', bad); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    kernels = [line.split()[1] for line in out.splitlines()
               if line.strip().startswith("kernel k") and "(" in line]
    assert kernels and out.count("@triton.jit") == len(set(kernels))
    for k in set(kernels):
        assert f"def {k}(" in out
    assert "%conv2d0.conv" in out.split("@triton.jit", 1)[1]
    assert "IMPORTED []" in out
