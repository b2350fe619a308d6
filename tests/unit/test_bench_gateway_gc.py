"""The gateway bench keeps its own garbage collections out of the timed phases."""

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
