"""The collector's thresholds during a compile: relaxed inside, restored after, also when
blocks nest, overlap across threads or end in an exception."""

from __future__ import annotations

import gc
import threading

import pytest

from graphc.collector import RELAXED, fewer_collections


@pytest.fixture
def default_thresholds():
    old = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield (700, 10, 10)
    gc.set_threshold(*old)


def test_relaxed_inside_restored_after_nesting_and_errors(default_thresholds):
    with fewer_collections():
        assert gc.get_threshold() == RELAXED
        with fewer_collections():
            assert gc.get_threshold() == RELAXED
        assert gc.get_threshold() == RELAXED  # the outer block still runs
    assert gc.get_threshold() == default_thresholds
    with pytest.raises(ZeroDivisionError), fewer_collections():
        1 / 0  # noqa: B018
    assert gc.get_threshold() == default_thresholds


def test_a_higher_user_setting_is_kept(default_thresholds):
    gc.set_threshold(500_000, 5, 5)
    with fewer_collections():
        assert gc.get_threshold() == (500_000, 50, 100)
    assert gc.get_threshold() == (500_000, 5, 5)


def test_overlapping_blocks_in_threads_restore_the_setting_from_before(default_thresholds):
    inside, release = threading.Barrier(3), threading.Event()

    def work():
        with fewer_collections():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert gc.get_threshold() == RELAXED
    release.set()
    for t in threads:
        t.join()
    assert gc.get_threshold() == default_thresholds


def test_compile_runs_under_the_relaxed_collector(default_thresholds, monkeypatch):
    import graphc
    from graphc import compiler

    seen = []
    real = compiler.run_pipeline

    def spy(*args, **kwargs):
        seen.append(gc.get_threshold())
        return real(*args, **kwargs)

    monkeypatch.setattr(compiler, "run_pipeline", spy)
    b = graphc.Builder("g")
    graph = b.build(outputs={"y": b.input("x", (3,)).exp()})
    graphc.compile(graph, target="reference", cache=False)
    assert seen == [RELAXED]
    assert gc.get_threshold() == default_thresholds
