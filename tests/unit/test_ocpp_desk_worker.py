"""The CSMS's desk worker answers each MeterValues of a group commit with its own outcome:
one message the desk could not store never fails the others of its group (issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from evroam.protocols.ocpp.csms import DeskWorker, NotStored
from evroam.protocols.ocpp.port import SamplesIn


class GroupDesk:
    """Stores every MeterValues but station B's, as a desk's samples_many reports it."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []

    def samples_many(
        self, station_ids: Sequence[str], jobs: Sequence[SamplesIn]
    ) -> list[str | None]:
        self.groups.append(list(station_ids))
        return ["not stored: the database refused it" if s == "B" else None for s in station_ids]


def job(evse_id: int) -> SamplesIn:
    return SamplesIn(None, evse_id, ())


def test_each_message_of_a_group_gets_its_own_answer() -> None:
    desk = GroupDesk()
    worker = DeskWorker(desk, max_batch=100)  # type: ignore[arg-type]
    worker.start()

    async def three_stations() -> list[Any]:
        # sent in one turn of the event loop: one group, one samples_many call
        return await asyncio.gather(
            worker.samples("A", job(1)),
            worker.samples("B", job(1)),
            worker.samples("C", job(1)),
            return_exceptions=True,
        )

    try:
        answers = asyncio.run(three_stations())
    finally:
        worker.stop()
    assert desk.groups == [["A", "B", "C"]]
    assert answers[0] is None and answers[2] is None
    assert isinstance(answers[1], NotStored)
    assert str(answers[1]) == "not stored: the database refused it"


def test_a_desk_that_raises_answers_every_message_not_stored() -> None:
    class Broken:
        def samples_many(self, station_ids: Sequence[str], jobs: Sequence[SamplesIn]) -> None:
            raise RuntimeError("boom")

    worker = DeskWorker(Broken(), max_batch=100)  # type: ignore[arg-type]
    worker.start()

    async def two() -> list[Any]:
        return await asyncio.gather(
            worker.samples("A", job(1)), worker.samples("B", job(1)), return_exceptions=True
        )

    try:
        answers = asyncio.run(two())
    finally:
        worker.stop()
    assert [type(a) for a in answers] == [NotStored, NotStored]
    assert [str(a) for a in answers] == ["not stored: RuntimeError"] * 2
