"""ordered_map: results in input order for any number of workers, and a worker that dies costs only its item."""

from __future__ import annotations

import os

import pytest

from neurolm.data.workers import ordered_map


def square_or_die(x: int) -> int:
    if x == 3:
        os._exit(9)  # a worker killed mid-item (the OOM killer, a segfault in a reader library)
    return x * x


def test_results_come_in_input_order_and_a_dying_worker_costs_only_its_item():
    items = list(range(8))
    assert list(ordered_map(square_or_die, [x for x in items if x != 3], workers=1)) == [0, 1, 4, 16, 25, 36, 49]
    got = list(ordered_map(square_or_die, items, workers=2, ahead=1, crashed=lambda x: f"crashed {x}"))
    assert got == [0, 1, 4, "crashed 3", 16, 25, 36, 49]


def test_without_a_crash_handler_a_dying_worker_is_an_error():
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        list(ordered_map(square_or_die, range(6), workers=2))
