"""The viewer in a real browser: headless Chromium opens the generated HTML file from disk.

With `?selftest=1` the page draws every stage, counts what it drew, clicks (real DOM events) a
node, a group box and a kernel box, and writes the results as JSON into
`<pre id="selftest-result">`, which `--dump-dom` hands back. The counts are checked against the
graphs here in Python. Each model also gets a screenshot (PNG). Skipped where Chromium is
absent (CI installs Debian's `chromium`).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from graphc import inspect
from graphc.io import load_graph
from graphc.ir.text import Namer, print_graph
from graphc.viz import write_html

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install "
                                "chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--mute-audio", "--enable-logging=stderr", "--v=0", "--window-size=1600,1000"]


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=90)


def selftest(page: Path, profile: Path) -> dict:
    run = chromium(page.as_uri() + "?selftest=1", profile, "--dump-dom")
    m = re.search(r'<pre id="selftest-result">(.*?)</pre>', run.stdout, re.S)
    assert m, f"no self-test result; stderr:\n{run.stderr[-2000:]}"
    uncaught = [line for line in run.stderr.splitlines() if "Uncaught" in line]
    assert not uncaught, uncaught
    return json.loads(html.unescape(m.group(1)))


def screenshot(page: Path, profile: Path, out: Path, query: str = "") -> Path:
    run = chromium(page.as_uri() + query, profile, f"--screenshot={out}")
    assert out.exists(), run.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1600, 1000)  # IHDR width, height
    assert len(data) > 20_000  # a drawn graph, not a blank page
    return out


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: $GRAPHC_SCREENSHOTS if set (to look at them), else a temp dir."""
    where = os.environ.get("GRAPHC_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        return Path(where)
    return tmp_path_factory.mktemp("screenshots")


def check_counts(result: dict, stages: list) -> None:
    """Every stage drew exactly the graph's nodes and outputs, and each default view all of
    its items; no error reached the console."""
    assert result["errors"] == []
    assert [r["name"] for r in result["stages"]] == [s.name for s in stages]
    for r, stage in zip(result["stages"], stages, strict=True):
        g = stage.graph
        assert r["drawnNodes"] == len(g.all_nodes()), r
        assert r["drawnOutputs"] == len(g.outputs), r
        assert r["drawnItems"] == r["items"], r
        if stage.schedule is not None:
            assert r["drawnKernels"] == len(stage.schedule.kernels)


def check_click(result: dict, stage) -> None:
    """The clicked node's details show its name, op, type and bytes."""
    click = result["click"]
    assert click["selected"] == click["id"] and click["highlighted"] == 1
    namer = Namer()
    print_graph(stage.graph, namer)
    node = next(n for n in stage.graph.all_nodes() if namer.name(n) == click["id"])
    assert click["title"] == f"%{click['id']}"
    assert node.op in click["text"] and str(node.types[0]) in click["text"]
    assert "bytes" in click["text"]


def build(model: str, tmp_path: Path, train: bool, **kwargs) -> tuple[list, Path]:
    stages = inspect.pipeline_stages(load_graph(EXAMPLES / f"{model}.py", **kwargs),
                                     train=train, codegen=model == "two_two_one")
    page = write_html(stages, tmp_path / f"{model}.html", title=model)
    return stages, page


def test_two_two_one(tmp_path, shots):
    stages, page = build("two_two_one", tmp_path, train=False)
    result = selftest(page, tmp_path / "profile")
    check_counts(result, stages)
    check_click(result, stages[-2] if stages[-1].schedule is not None else stages[-1])
    assert result["groupClick"] is None  # small enough to open with every group expanded
    if stages[-1].schedule is not None:
        kernel = result["kernelClick"]
        assert "Kernel IR" in kernel["text"]
        # one tab per available code generator, the first one's source shown
        assert kernel["targets"] == sorted(stages[-1].code)
        if kernel["targets"]:
            first = stages[-1].code[kernel["targets"][0]]
            assert kernel["code"] == first[kernel["id"][len("kernel:"):]][:200]
    screenshot(page, tmp_path / "profile", shots / "two_two_one-as-built.png", "?stage=as-built")
    screenshot(page, tmp_path / "profile", shots / "two_two_one-gradients.png",
               "?stage=with-gradients")


def test_cnn_training_graph(tmp_path, shots):
    stages, page = build("cnn", tmp_path, train=True)
    assert len(stages[2].graph.nodes) > 150
    result = selftest(page, tmp_path / "profile")
    check_counts(result, stages)
    check_click(result, stages[2])
    group = result["groupClick"]  # a layer box opens in place
    assert group["view"] == f"f:{group['id']}" and group["after"] > group["before"]
    assert group["hull"] >= 1
    default = result["stages"][2]
    assert default["view"] == "top" and default["items"] < 60  # one box per layer
    screenshot(page, tmp_path / "profile", shots / "cnn-training.png", "?stage=with-gradients")
    if stages[-1].schedule is not None:
        screenshot(page, tmp_path / "profile", shots / "cnn-fused-memory.png",
                   "?stage=fused&memory=1")


def test_lstm_sixteen_steps(tmp_path, shots):
    stages, page = build("lstm", tmp_path, train=True, steps=16)
    result = selftest(page, tmp_path / "profile")
    check_counts(result, stages)
    check_click(result, stages[2])
    group = result["groupClick"]
    assert group["after"] > group["before"]
    screenshot(page, tmp_path / "profile", shots / "lstm.png", "?stage=with-gradients")
    screenshot(page, tmp_path / "profile", shots / "lstm-step.png",
               "?stage=with-gradients&view=f:lstm0.t3")
