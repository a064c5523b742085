"""The billing run's small helpers: the sort of its readings, the collector pause, and the
sessions JSON of a bill line."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from evroam.utility.batch_rating import _by_session_then_time, collector_paused
from evroam.utility.bill_store import _json_strings


def _rows(*rows: tuple[int, int, int, int]) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def test_readings_are_ordered_by_session_then_start() -> None:
    readings = _rows(
        (2, 1_772_000_900, 900, 5),
        (0, 1_772_001_800, 900, 6),
        (2, 1_772_000_000, 900, 7),
        (0, 1_772_000_000, 900, 8),
        (1, 1_772_000_000, 900, 9),
    )
    ordered = readings[_by_session_then_time(readings)]
    assert ordered[:, 3].tolist() == [8, 6, 9, 7, 5]


def test_readings_spanning_more_than_the_packed_key_sort_the_same_way() -> None:
    # starts 2**32 s apart cannot share the combined key: the two-key sort is used instead
    readings = _rows((1, 5_000_000_000, 900, 1), (1, 100, 900, 2), (0, 4_294_967_396, 900, 3))
    ordered = readings[_by_session_then_time(readings)]
    assert ordered[:, 3].tolist() == [3, 2, 1]
    assert _by_session_then_time(_rows()).tolist() == []


def test_the_collector_is_paused_for_the_batch_and_restored_after_it() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a failed batch")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "ids", [(), ("S1",), ("S0000001", "S0000002"), ('quote"d', "back\\slash", "é", "tab\t")]
)
def test_line_sessions_are_written_as_json_dumps_writes_them(ids: tuple[str, ...]) -> None:
    assert _json_strings(ids) == json.dumps(list(ids))
    assert json.loads(_json_strings(ids)) == list(ids)
