"""Saved Triton packages: source, launch table, constants and a cubin + PTX + metadata per arch
and kernel, each with its sha256 in the manifest entries; loading one (no schedule, no codegen)
runs it (here through its stored source under the interpreter, in a child process)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.backends.triton.aot_runner import PACKAGE_CASES
from tests.backends.triton.conftest import start


@pytest.fixture(scope="module")
def aot_results(triton_jobs) -> dict:
    out: dict = {}
    for job in triton_jobs["aot"]:
        out.update(job.results())
    return out


@pytest.fixture(scope="module")
def package_runs(triton_jobs, aot_results) -> dict:
    tmp = triton_jobs["tmp"][0]
    job = start("packages", ["tests.backends.triton.interp_runner",
                             "--packages", str(tmp / "packages")], tmp,
                {"TRITON_INTERPRET": "1"})
    return job.results()


@pytest.mark.parametrize("name", PACKAGE_CASES)
def test_package_files_match_their_hashes(aot_results: dict, name: str) -> None:
    r = aot_results[name]
    assert r["ok"], r.get("error")
    entries = r["package"]
    folder = Path(r["package_dir"])
    assert entries["target"] == "triton" and set(entries["archs"]) == {"sm_80", "sm_90"}
    for rel, digest in entries["files"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest, rel
    table = json.loads((folder / "triton" / "launches.json").read_text())
    for arch in ("sm_80", "sm_90"):
        for launch in table["launches"]:
            meta = json.loads((folder / "triton" / arch / f"{launch['fn']}.json").read_text())
            assert meta["num_params"] >= len(launch["args"])
            assert (folder / "triton" / arch / f"{launch['fn']}.cubin").stat().st_size > 0
            assert f".target sm_{arch[3:]}" in (
                folder / "triton" / arch / f"{launch['fn']}.ptx").read_text()


@pytest.mark.parametrize("name", PACKAGE_CASES)
def test_loaded_package_runs(package_runs: dict, name: str) -> None:
    r = package_runs[f"package:{name}"]
    assert r["ok"], f"{r['error']}\n{r.get('traceback', '')}"


def test_package_never_pickles(aot_results: dict) -> None:
    import numpy as np

    for name in PACKAGE_CASES:
        folder = Path(aot_results[name]["package_dir"])
        assert folder.is_dir()
        for path in folder.rglob("*"):
            assert path.suffix not in (".pkl", ".pickle"), path
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:  # raises if it needs pickles
                    assert all(z[k].dtype != object for k in z.files)
