"""Store-and-forward: what the gateway must deliver survives outages and restarts.

A small SQLite file per gateway. Messages leave in the order they were written;
a message is deleted only after the utility acknowledged it, so a crash between send
and delete re-sends it, which the utility's idempotency keys make harmless.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from evroam.core.messages import IntervalReading, SessionReport

BATCH = 1000


class Outbox:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " kind TEXT NOT NULL CHECK (kind IN ('reading', 'report')),"
            " payload TEXT NOT NULL)"
        )
        # Messages the utility refused (not an outage): kept for a person, never dropped.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dead_letters ("
            " seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL,"
            " reason TEXT NOT NULL)"
        )

    def put_reading(self, reading: IntervalReading) -> None:
        self._db.execute(
            "INSERT INTO outbox (kind, payload) VALUES ('reading', ?)", (reading.model_dump_json(),)
        )

    def put_report(self, report: SessionReport) -> None:
        self._db.execute(
            "INSERT INTO outbox (kind, payload) VALUES ('report', ?)", (report.model_dump_json(),)
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def head(self) -> tuple[str, list[tuple[int, str]]]:
        """The oldest message's kind and the run of same-kind messages from it."""
        first = self._db.execute("SELECT kind FROM outbox ORDER BY seq LIMIT 1").fetchone()
        if first is None:
            return "", []
        kind = first[0]
        limit = BATCH if kind == "reading" else 1
        rows = self._db.execute(
            "SELECT seq, kind, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        run = []
        for seq, k, payload in rows:
            if k != kind:
                break
            run.append((seq, payload))
        return kind, run

    def ack(self, last_seq: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (last_seq,))

    def bury(self, run: list[tuple[int, str]], kind: str, reason: str) -> None:
        """Move a refused run out of the way so later messages still flow."""
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO dead_letters (seq, kind, payload, reason) VALUES (?, ?, ?, ?)",
            [(seq, kind, payload, reason) for seq, payload in run],
        )
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (run[-1][0],))
        self._db.execute("COMMIT")

    def dead_letters(self) -> list[tuple[str, str, str]]:
        return list(self._db.execute("SELECT kind, payload, reason FROM dead_letters ORDER BY seq"))

    def close(self) -> None:
        self._db.close()


def decode_readings(run: list[tuple[int, str]]) -> list[IntervalReading]:
    return [IntervalReading.model_validate_json(payload) for _, payload in run]


def decode_report(run: list[tuple[int, str]]) -> SessionReport:
    return SessionReport.model_validate_json(run[0][1])
