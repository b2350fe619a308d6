"""The benchmarks keep the load generator's garbage collections out of the timed phases and
freeze start-up objects as the serving process does."""

from __future__ import annotations

import gc

import pytest

from llmflow.bench_gateway import _generator_gc_paused


def test_collections_are_paused_while_timing_and_restored_after() -> None:
    assert gc.isenabled()
    with _generator_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _generator_gc_paused():
        raise RuntimeError("a failed phase")
    assert gc.isenabled()


def test_a_caller_that_had_collections_off_keeps_them_off() -> None:
    gc.disable()
    try:
        with _generator_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_benchmarks_freeze_start_up_objects_as_the_server_does() -> None:
    from llmflow.bench_gc import startup_frozen

    before = gc.get_freeze_count()  # an app's lifespan earlier in this process may freeze
    with startup_frozen():
        assert gc.get_freeze_count() > max(before, 1000)  # pytest's and llmflow's modules
        assert gc.isenabled()  # what the timed calls allocate is still collected
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), startup_frozen():
        raise RuntimeError("a failed phase")
    assert gc.get_freeze_count() == 0
