"""Background jobs for the Triton tiers: the interpreter matrix and the AOT compiles each run in
a child process (the Triton interpreter is process-wide; compiling keeps this process free of
triton), started together when the first Triton test asks, so they overlap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
AOT_SHARDS = 2


@dataclass
class Job:
    """A runner subprocess writing its results to `out`."""

    name: str
    proc: subprocess.Popen
    out: Path
    log: Path

    def results(self, timeout: float = 900) -> dict:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"{self.name} runner timed out after {timeout} s")
        if not self.out.exists():
            pytest.fail(f"{self.name} runner crashed (exit {self.proc.returncode}):\n"
                        f"{self.log.read_text()[-6000:]}")
        return json.loads(self.out.read_text())


def start(name: str, args: list[str], tmp: Path, env: dict[str, str]) -> Job:
    out, log = tmp / f"{name}.json", tmp / f"{name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", *args, "--out", str(out)], cwd=ROOT,
                                env={**os.environ, "TRITON_DEFAULT_FP_FUSION": "1", **env},
                                stdout=f, stderr=subprocess.STDOUT)
    return Job(name, proc, out, log)


@pytest.fixture(scope="session")
def triton_jobs(request, tmp_path_factory) -> dict[str, list[Job]]:
    pytest.importorskip("triton")
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("triton_jobs")
    modules = {Path(str(item.fspath)).stem for item in request.session.items}
    jobs: dict[str, list[Job]] = {"packages_dir": [], "interp": [], "aot": []}
    if "test_interpret" in modules:
        jobs["interp"].append(start("interp", [
            "tests.backends.triton.interp_runner", "--cache-dir", str(tmp / "cache-interp")],
            tmp, {"TRITON_INTERPRET": "1"}))
    if modules & {"test_aot", "test_package"}:
        for i in range(AOT_SHARDS):
            jobs["aot"].append(start(f"aot{i}", [
                "tests.backends.triton.aot_runner", "--shard", f"{i}/{AOT_SHARDS}",
                "--packages", str(tmp / "packages"), "--cache-dir", str(tmp / "cache-aot")],
                tmp, {"TRITON_INTERPRET": "0"}))
    request.addfinalizer(lambda: [j.proc.kill() for js in jobs.values() for j in js
                                  if isinstance(j, Job) and j.proc.poll() is None])
    jobs["tmp"] = [tmp]  # type: ignore[list-item]
    return jobs
