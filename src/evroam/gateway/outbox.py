"""Store-and-forward: what the gateway must deliver survives outages and restarts.

A small SQLite file per gateway. Messages leave in the order they were written;
a message is deleted only after the utility acknowledged it, so a crash between send
and delete re-sends it, which the utility's idempotency keys make harmless. A message the
utility refuses is set aside as a dead letter with its reason, for a person to look at and
re-queue; the sessions still plugged in are kept here too, so a restarted gateway can end
them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from evroam.core.messages import IntervalReading, SessionReport

BATCH = 1000


class DeadLetter(NamedTuple):
    seq: int
    kind: str
    payload: str
    reason: str


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
        # Sessions plugged in and not yet reported: what a restarted gateway resumes.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS open_sessions ("
            " session_id TEXT PRIMARY KEY, state TEXT NOT NULL)"
        )

    def put_reading(self, reading: IntervalReading, session_state: str | None = None) -> None:
        """Queue a reading and, in the same transaction, the session's new state."""
        self._db.execute("BEGIN")
        self._db.execute(
            "INSERT INTO outbox (kind, payload) VALUES ('reading', ?)", (reading.model_dump_json(),)
        )
        if session_state is not None:
            self._save_session(reading.session_id, session_state)
        self._db.execute("COMMIT")

    def put_report(self, report: SessionReport) -> None:
        """Queue the report and forget the open session, at once: never both, never neither."""
        self._db.execute("BEGIN")
        self._db.execute(
            "INSERT INTO outbox (kind, payload) VALUES ('report', ?)", (report.model_dump_json(),)
        )
        self._db.execute("DELETE FROM open_sessions WHERE session_id = ?", (report.session_id,))
        self._db.execute("COMMIT")

    def save_session(self, session_id: str, state: str) -> None:
        self._save_session(session_id, state)

    def _save_session(self, session_id: str, state: str) -> None:
        self._db.execute(
            "INSERT INTO open_sessions (session_id, state) VALUES (?, ?)"
            " ON CONFLICT (session_id) DO UPDATE SET state = excluded.state",
            (session_id, state),
        )

    def open_sessions(self) -> list[tuple[str, str]]:
        return list(self._db.execute("SELECT session_id, state FROM open_sessions"))

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
        """Move a refused run (the head of the queue) out of the way so later messages flow."""
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO dead_letters (seq, kind, payload, reason) VALUES (?, ?, ?, ?)",
            [(seq, kind, payload, reason) for seq, payload in run],
        )
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (run[-1][0],))
        self._db.execute("COMMIT")

    def dead_letters(self) -> list[DeadLetter]:
        return [
            DeadLetter(*row)
            for row in self._db.execute(
                "SELECT seq, kind, payload, reason FROM dead_letters ORDER BY seq"
            )
        ]

    def requeue(self, seqs: Sequence[int] | None = None) -> int:
        """Put dead letters (all, or those numbered) back at the end of the queue, in their
        original order; the utility's idempotency makes a re-sent message harmless."""
        where = ""
        args: tuple[int, ...] = ()
        if seqs is not None:
            where = f" WHERE seq IN ({','.join('?' * len(seqs))})"
            args = tuple(seqs)
        self._db.execute("BEGIN")
        rows = self._db.execute(
            f"SELECT seq, kind, payload FROM dead_letters{where} ORDER BY seq", args
        ).fetchall()
        self._db.executemany(
            "INSERT INTO outbox (kind, payload) VALUES (?, ?)", [(k, p) for _, k, p in rows]
        )
        self._db.executemany("DELETE FROM dead_letters WHERE seq = ?", [(s,) for s, _, _ in rows])
        self._db.execute("COMMIT")
        return len(rows)

    def close(self) -> None:
        self._db.close()


def decode_readings(run: list[tuple[int, str]]) -> list[IntervalReading]:
    return [IntervalReading.model_validate_json(payload) for _, payload in run]


def decode_report(run: list[tuple[int, str]]) -> SessionReport:
    return SessionReport.model_validate_json(run[0][1])
