"""Migration 0020 (clearinghouse identity): a token A held before it gets its issue time,
and counts as used when the member already exchanged it; the downgrade forgets the tokens B
it cannot hold (encrypted), keeps the others, and drops what 0020 added."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Engine, String, column, inspect, select, table

from evroam.db.migrate import alembic_config, upgrade
from evroam.db.types import UtcDateTime

OLD_MEMBERS = table(
    "ch_members",
    column("utility_id", String),
    column("token_a_sha256", String),
    column("token_c_sha256", String),
    column("token_b", String),
    column("url", String),
    column("registered_at", UtcDateTime()),
    column("credentials_at", UtcDateTime()),
)
REGISTERED = datetime(2026, 3, 1, 9, tzinfo=UTC)
CONNECTED = datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_tokens_a_held_before_0020_keep_their_state_and_the_downgrade_gives_back(
    engine: Engine,
) -> None:
    command.downgrade(alembic_config(engine), "0019")
    with engine.begin() as conn:
        conn.execute(
            OLD_MEMBERS.insert(),
            [
                {  # registered and connected: its A was spent
                    "utility_id": "PGX",
                    "token_a_sha256": "a" * 64,
                    "token_c_sha256": "c" * 64,
                    "token_b": "b-of-pgx",
                    "url": "http://pgx.test",
                    "registered_at": REGISTERED,
                    "credentials_at": CONNECTED,
                },
                {  # issued an A it has not used yet
                    "utility_id": "MHE",
                    "token_a_sha256": "d" * 64,
                    "token_c_sha256": None,
                    "token_b": None,
                    "url": None,
                    "registered_at": REGISTERED,
                    "credentials_at": None,
                },
                {  # known, no token at all
                    "utility_id": "XYZ",
                    "token_a_sha256": None,
                    "token_c_sha256": None,
                    "token_b": None,
                    "url": None,
                    "registered_at": REGISTERED,
                    "credentials_at": None,
                },
            ],
        )
    upgrade(engine)
    members = table(
        "ch_members",
        column("utility_id", String),
        column("token_b", String),
        column("token_a_issued_at", UtcDateTime()),
        column("token_a_used_at", UtcDateTime()),
    )
    with engine.connect() as conn:
        rows = conn.execute(select(members).order_by(members.c.utility_id)).all()
    assert [tuple(r) for r in rows] == [
        ("MHE", None, REGISTERED, None),
        ("PGX", "b-of-pgx", REGISTERED, CONNECTED),
        ("XYZ", None, None, None),
    ]
    assert "ch_locations" in inspect(engine).get_table_names()

    sealed = "fernet:" + "x" * 400  # as TokenBox writes it: longer than 0018's 300
    with engine.begin() as conn:
        conn.execute(members.update().where(members.c.utility_id == "MHE").values(token_b=sealed))
    command.downgrade(alembic_config(engine), "0019")
    with engine.connect() as conn:
        kept = conn.execute(select(OLD_MEMBERS.c.utility_id, OLD_MEMBERS.c.token_b)).all()
    assert sorted(tuple(r) for r in kept) == [("MHE", None), ("PGX", "b-of-pgx"), ("XYZ", None)]
    names = inspect(engine)
    assert "ch_locations" not in names.get_table_names()
    columns = {c["name"]: c for c in names.get_columns("ch_members")}
    assert "token_a_used_at" not in columns and columns["token_b"]["type"].length == 300
    upgrade(engine)
