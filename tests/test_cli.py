"""The graphc command line: show, run, and one-line errors naming the culprit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphc.cli import main

GIR = """graph tiny(%x: f32[3]) params(%w: f32[3]) {
  %p = mul(%x, %w) : f32[3]
  %y = sigmoid(%p) : f32[3]
  return y=%y
}
"""


def write_model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gir"
    path.write_text(GIR)
    np.savez(tmp_path / "tiny.npz", w=np.array([1.0, -2.0, 0.5], np.float32))
    return path


def test_show_prints_the_ir(tmp_path, capsys):
    path = write_model(tmp_path)
    assert main(["show", str(path)]) == 0
    assert capsys.readouterr().out == GIR


def test_run_writes_outputs(tmp_path, capsys):
    path = write_model(tmp_path)
    x = np.array([1.0, 2.0, 3.0], np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    out = tmp_path / "out.npz"
    assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz"), "-o", str(out)]) == 0
    with np.load(out) as data:
        want = 1 / (1 + np.exp(-(x * np.array([1.0, -2.0, 0.5]))))
        np.testing.assert_allclose(data["y"], want, rtol=1e-6)


def test_errors_are_one_line_naming_the_culprit(tmp_path, capsys):
    bad = tmp_path / "bad.gir"
    bad.write_text(GIR.replace("sigmoid(%p)", "sigmoid(%q)"))
    assert main(["show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphc: error: ") and "bad.gir:3:" in err and "%q" in err
    assert main(["show", str(tmp_path / "missing.gir")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path = write_model(tmp_path)
    np.savez(tmp_path / "in.npz", x=np.zeros(4, np.float32))
    assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz")]) == 2
    assert "input 'x': expected shape (3,)" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_text("not an archive")
    assert main(["run", str(path), "--inputs", str(tmp_path / "junk.npz")]) == 2
    assert "junk.npz' is not an .npz of arrays" in capsys.readouterr().err


def test_a_failing_model_file_is_one_line_naming_its_line(tmp_path, capsys):
    boom = tmp_path / "boom.py"
    boom.write_text("def build():\n    return helper()\n\n\ndef helper():\n    return 1 / 0\n")
    assert main(["show", str(boom)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "boom.py', line 6: ZeroDivisionError" in err
    (tmp_path / "syntax.py").write_text("x = 1\ndef build(:\n")
    assert main(["show", str(tmp_path / "syntax.py")]) == 2
    assert "syntax.py', line 2: SyntaxError" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["profile", "m.gir", "--runs", "0"],
                                  ["demo", "--epochs", "-1"], ["demo", "--threads", "two"],
                                  ["bench", "--repeats", "0"], ["bench", "--warmup", "-1"]])
def test_counts_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "expected a" in capsys.readouterr().err


def test_console_script_entry_point(tmp_path):
    path = write_model(tmp_path)
    res = subprocess.run([sys.executable, "-m", "graphc.cli", "show", str(path)],
                         capture_output=True, text=True, check=True)
    assert "%y = sigmoid(%p) : f32[3]" in res.stdout


def test_import_graphc_stays_light():
    code = ("import sys, graphc; heavy = [m for m in ('torch', 'triton', 'llvmlite') "
            "if m in sys.modules]; print(heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == "[]"


def test_run_on_a_compiled_target_and_from_a_package(tmp_path, capsys):
    """`graphc run --target llvm` and `graphc run PACKAGE` give the reference's outputs."""
    path = write_model(tmp_path)
    x = np.array([1.0, 2.0, 3.0], np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    want = 1 / (1 + np.exp(-(x * np.array([1.0, -2.0, 0.5]))))
    pkg = tmp_path / "m.gcpkg"
    assert main(["compile", str(path), "-o", str(pkg)]) == 0
    for argv in (["run", str(path), "--target", "llvm"], ["run", str(pkg)]):
        out = tmp_path / "out.npz"
        assert main([*argv, "--inputs", str(tmp_path / "in.npz"), "-o", str(out)]) == 0, argv
        with np.load(out) as data:
            np.testing.assert_allclose(data["y"], want, rtol=1e-6, err_msg=str(argv))
    capsys.readouterr()
    assert main(["run", str(pkg)]) == 2
    assert "has inputs ['x']: give them with --inputs" in capsys.readouterr().err
    assert main(["profile", str(pkg)]) == 2
    assert "it is a compiled package: `graphc run` runs it" in capsys.readouterr().err
    assert main(["compile", str(path), "-o", str(path)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
