"""Who may speak to the clearinghouse, and for what (issue 15): registration token A is
single-use and expires, every token is stored as a digest (B sealed), a member rotates and
reads its credentials and the operator revokes them at once, a CDR is accepted once per
authorization, an authorization only at the asking member's own premises, and every body
is bounded before it is parsed."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from evroam.clearinghouse.api import create_app
from evroam.clearinghouse.members import Unauthorized
from evroam.clearinghouse.service import ClearinghouseService
from evroam.cli import app as cli
from evroam.core.clock import FixedClock
from evroam.core.errors import Conflict, Forbidden
from evroam.db import schema as s
from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.messages import (
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)

D = Decimal
T0 = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)
MEMBERS = ("PGX", "MHE", "XYZ")
PREMISES = {"PGX": ["PGX-P-ALICE", "PGX-P-BOB"], "MHE": ["MHE-P-GINA"], "XYZ": ["XYZ-P-1"]}
B = {m: f"token-B-of-{m}-0123456789" for m in MEMBERS}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}


def credentials_body(member: str, token_b: str | None = None) -> dict[str, Any]:
    return {
        "token": token_b or B[member],
        "url": f"http://{member.lower()}.test",
        "roles": [{"role": "OTHER", "party_id": member, "country_code": "US"}],
    }


class Home:
    def __init__(self) -> None:
        self.posted: list[str] = []

    def post_transaction(self, tx: ChargeTransaction) -> PostingAck:
        self.posted.append(tx.id)
        billed = -tx.amount if tx.credit else tx.amount
        return PostingAck(
            transaction_id=tx.id, account_id="MHE-A-1", billed_amount=billed, currency="USD"
        )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def ch(engine: Engine, clock: FixedClock) -> ClearinghouseService:
    service = ClearinghouseService(engine, clock, "CH-WEST", members=MEMBERS)
    for member in MEMBERS:
        service.ensure_member(member)
    service.load_locations(PREMISES)
    return service


@pytest.fixture
def client(ch: ClearinghouseService) -> Iterator[TestClient]:
    app = create_app(ch, "operator-token-0123456789", home_links=lambda: {}, retry_every_s=None)
    with TestClient(app) as c:
        yield c


def register(client: TestClient, ch: ClearinghouseService, member: str) -> tuple[str, str]:
    """(token A, token C) of a member registered over the API."""
    token_a = ch.register_member(member)
    answer = client.post(
        "/ocpi/2.2.1/credentials", headers=auth(token_a), json=credentials_body(member)
    )
    assert answer.status_code == 200, answer.text
    return token_a, str(answer.json()["data"]["token"])


# --- registration token A: single-use, with an expiry --------------------------------------


def test_registration_token_a_works_once(client: TestClient, ch: ClearinghouseService) -> None:
    token_a, token_c = register(client, ch, "PGX")
    again = client.post(
        "/ocpi/2.2.1/credentials", headers=auth(token_a), json=credentials_body("PGX", "b2")
    )
    assert again.status_code == 401
    body = again.json()
    assert body["status_code"] == 2000 and body["data"] is None
    assert body["status_message"].startswith(
        "Authorization: the registration token A of PGX was already used (2026-03-10T18:00:00"
    )
    assert "PUT /credentials" in body["status_message"]
    assert again.headers["WWW-Authenticate"] == "Token"
    assert token_a not in again.text
    # Refused before anything changed: C still works, and B and the URL are as given first.
    assert client.get("/v1/tokens", headers=auth(token_c)).status_code == 200
    assert ch.member_endpoints()["PGX"] == ("http://pgx.test", B["PGX"])


def test_a_configured_token_a_stays_spent_across_restarts(
    engine: Engine, clock: FixedClock
) -> None:
    configured = "A-of-MHE-from-the-environment-0123"
    first = ClearinghouseService(engine, clock, "CH", members=MEMBERS)
    first.register_member("MHE", configured)
    assert first.exchange_credentials(configured, "b", "http://mhe.test") is not None
    # The server restarts with the same EVROAM_CH_REGISTRATION_MHE a day later.
    clock.set(T0 + timedelta(days=1))
    restarted = ClearinghouseService(engine, clock, "CH", members=MEMBERS)
    assert restarted.register_member("MHE", configured) == configured
    with pytest.raises(Unauthorized, match="already used"):
        restarted.exchange_credentials(configured, "b", "http://mhe.test")
    assert [m.token_a for m in restarted.members()] == ["used"]


def test_registration_token_a_expires(engine: Engine, clock: FixedClock) -> None:
    ch = ClearinghouseService(
        engine, clock, "CH", members=MEMBERS, registration_ttl=timedelta(days=7)
    )
    pgx_a = ch.register_member("PGX")  # issued at T0
    clock.set(T0 + timedelta(days=2))
    mhe_a = ch.register_member("MHE")  # issued two days later
    clock.set(T0 + timedelta(days=7) - timedelta(seconds=1))
    assert ch.exchange_credentials(mhe_a, "b", "http://mhe.test") is not None
    clock.set(T0 + timedelta(days=7))
    with pytest.raises(Unauthorized) as expired:
        ch.exchange_credentials(pgx_a, "b", "http://pgx.test")
    assert expired.value.status == 401
    assert "registration token A of PGX expired (2026-03-17T18:00:00+00:00)" in str(expired.value)
    assert {m.utility_id: m.token_a for m in ch.members()} == {"PGX": "expired", "MHE": "used"}
    # A new A from the operator starts a new week.
    renewed = ch.register_member("PGX")
    clock.set(T0 + timedelta(days=14) - timedelta(seconds=1))
    assert ch.exchange_credentials(renewed, "b", "http://pgx.test") is not None


def test_the_ttl_is_a_clearinghouse_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from evroam.clearinghouse.settings import ClearinghouseSettings

    assert ClearinghouseSettings.load().registration_ttl == timedelta(days=7)
    monkeypatch.setenv("EVROAM_REGISTRATION_TTL_DAYS", "1.5")
    assert ClearinghouseSettings.load().registration_ttl == timedelta(hours=36)


# --- tokens at rest ---------------------------------------------------------------------------


def stored_values(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(s.ch_members)).mappings().all()
    return [str(v) for row in rows for v in row.values() if v is not None]


def test_tokens_a_and_c_are_digests_and_b_is_sealed_with_a_key(
    engine: Engine, clock: FixedClock
) -> None:
    ch = ClearinghouseService(
        engine, clock, "CH", members=MEMBERS, token_key="key-for-tokens-B-0123456789"
    )
    token_a = ch.register_member("PGX")
    done = ch.exchange_credentials(token_a, B["PGX"], "http://pgx.test")
    assert done is not None
    stored = stored_values(engine)
    for token in (token_a, done[1], B["PGX"]):
        assert not any(token in value for value in stored)
    with engine.connect() as conn:
        row = conn.execute(select(s.ch_members)).mappings().one()
    assert len(row["token_a_sha256"]) == 64 and len(row["token_c_sha256"]) == 64
    assert row["token_b"].startswith("fernet:")
    assert ch.member_endpoints() == {"PGX": ("http://pgx.test", B["PGX"])}


def test_tokens_b_stored_in_clear_are_sealed_once_a_key_is_set(
    engine: Engine, clock: FixedClock
) -> None:
    before = ClearinghouseService(engine, clock, "CH", members=MEMBERS)  # no key, as before
    for member in ("PGX", "MHE"):
        assert before.exchange_credentials(
            before.register_member(member), B[member], f"http://{member.lower()}.test"
        )
    assert B["PGX"] in stored_values(engine)
    keyed = ClearinghouseService(
        engine, clock, "CH", members=MEMBERS, token_key="key-for-tokens-B-0123456789"
    )
    assert keyed.seal_stored_tokens() == 2
    assert keyed.seal_stored_tokens() == 0
    assert not any(B[m] in v for m in ("PGX", "MHE") for v in stored_values(engine))
    assert keyed.member_endpoints() == {
        "PGX": ("http://pgx.test", B["PGX"]),
        "MHE": ("http://mhe.test", B["MHE"]),
    }


# --- rotation, reading and revocation ----------------------------------------------------------


def test_a_member_rotates_and_reads_its_credentials(
    client: TestClient, ch: ClearinghouseService
) -> None:
    _, c1 = register(client, ch, "PGX")
    read = client.get("/ocpi/2.2.1/credentials", headers=auth(c1))
    assert read.status_code == 200, read.text
    assert read.json()["data"]["token"] == c1
    assert read.json()["data"]["roles"][0] == {
        "role": "HUB",
        "party_id": "CH-WEST",
        "country_code": "US",
        "business_details": {"name": "CH-WEST"},
    }
    rotated = client.put(
        "/ocpi/2.2.1/credentials",
        headers=auth(c1),
        json=credentials_body("PGX", "token-B-2") | {"url": "https://pgx.example"},
    )
    assert rotated.status_code == 200, rotated.text
    c2 = rotated.json()["data"]["token"]
    assert c2 != c1
    assert client.get("/ocpi/2.2.1/credentials", headers=auth(c1)).status_code == 401
    assert client.get("/v1/tokens", headers=auth(c2)).status_code == 200
    assert ch.member_endpoints()["PGX"] == ("https://pgx.example", "token-B-2")
    # OCPI: POST is for token A (405 once registered), PUT for token C.
    post_c = client.post("/ocpi/2.2.1/credentials", headers=auth(c2), json=credentials_body("PGX"))
    assert post_c.status_code == 405
    assert "PUT /credentials" in post_c.json()["status_message"]
    fresh_a = ch.register_member("PGX")
    put_a = client.put(
        "/ocpi/2.2.1/credentials", headers=auth(fresh_a), json=credentials_body("PGX")
    )
    assert put_a.status_code == 401
    assert "rotates with your token C" in put_a.json()["status_message"]
    assert client.get("/v1/tokens", headers=auth(c2)).status_code == 200


def test_a_revoked_member_is_refused_at_its_next_call(
    client: TestClient, ch: ClearinghouseService, engine: Engine, clock: FixedClock
) -> None:
    _, pgx_c = register(client, ch, "PGX")
    _, mhe_c = register(client, ch, "MHE")
    assert client.get("/v1/tokens", headers=auth(pgx_c)).status_code == 200
    # The operator revokes PGX from another process (the CLI), on the same database.
    ClearinghouseService(engine, clock, "CH-WEST").revoke("PGX")
    refused = client.get("/v1/tokens", headers=auth(pgx_c))
    assert refused.status_code == 401
    assert refused.json()["status_message"].startswith("unknown or missing credentials token")
    assert (
        client.put(
            "/ocpi/2.2.1/credentials", headers=auth(pgx_c), json=credentials_body("PGX")
        ).status_code
        == 401
    )
    assert client.get("/v1/tokens", headers=auth(mhe_c)).status_code == 200
    assert set(ch.member_endpoints()) == {"MHE"}  # PGX's B and URL are forgotten
    assert {m.utility_id: (m.connected, m.token_a) for m in ch.members()}["PGX"] == (
        False,
        "none",
    )
    # It comes back only with a new token A from the operator.
    register(client, ch, "PGX")


def test_evroam_clearinghouse_revoke(tmp_path: Path, engine: Engine) -> None:
    db = ["--db", engine.url.render_as_string(hide_password=False)]
    ch = ClearinghouseService(engine, FixedClock(T0), "CH", members=MEMBERS)
    done = ch.exchange_credentials(ch.register_member("PGX"), "b", "http://pgx.test")
    assert done is not None
    runner = CliRunner()
    result = runner.invoke(cli, [*db, "clearinghouse", "revoke", "--utility", "PGX"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "revoked every token of PGX\n"
    assert ch.member_for_token(done[1]) is None
    unknown = runner.invoke(cli, [*db, "clearinghouse", "revoke", "--utility", "NOPE"])
    assert unknown.exit_code == 2
    assert click.unstyle(unknown.stderr).strip() == (
        "error: utility_id: no such member (got 'NOPE')"
    )


# --- a CDR once per authorization ------------------------------------------------------------


def gina() -> RoamingToken:
    return RoamingToken(
        pev_id="MHE-PEV-GINA",
        home_utility="MHE",
        account_id="MHE-A-1",
        home_premise_id="MHE-P-GINA",
        program_id="MHE-TOU",
        last_updated=T0 - timedelta(days=1),
    )


def claim(reference: str, tx_id: str, amount: str, **changes: Any) -> ChargeTransaction:
    fields: dict[str, Any] = {
        "id": tx_id,
        "roaming_utility": "PGX",
        "home_utility": "MHE",
        "authorization_reference": reference,
        "pev_id": "MHE-PEV-GINA",
        "premise_id": "PGX-P-ALICE",
        "session_id": "S1",
        "billing_option": "guest",
        "start_at": T0 - timedelta(hours=1),
        "end_at": T0,
        "energy_wh": 10_000,
        "amount": D(amount),
        "currency": "USD",
        "tariff_id": "PGX-GUEST",
    }
    return ChargeTransaction(**(fields | changes))


def test_a_cdr_is_accepted_once_per_authorization(ch: ClearinghouseService) -> None:
    ch.publish_tokens("MHE", [gina()])
    ask = AuthorizationRequest(
        pev_id="MHE-PEV-GINA", premise_id="PGX-P-ALICE", roaming_utility="PGX", session_id="S1"
    )
    reference = ch.authorize("PGX", ask).authorization_reference
    first = claim(reference, "PGX-T1", "3.20")
    assert ch.receive_transaction("PGX", first).duplicate is False
    assert ch.receive_transaction("PGX", first).duplicate is True  # a retry
    with pytest.raises(Conflict) as twice:
        ch.receive_transaction("PGX", claim(reference, "PGX-T1-AGAIN", "3.20"))
    assert twice.value.status == 409 and twice.value.field == "authorization_reference"
    assert f"authorization {reference} already has its CDR PGX-T1" in twice.value.message
    assert "credit_reference_id: PGX-T1" in twice.value.message
    # Corrections name the original, and each is accepted once.
    credit = claim(reference, "PGX-T1-C1", "1.00", energy_wh=3_000, credit=True, credit_of="PGX-T1")
    late = claim(reference, "PGX-T1-0002", "0.32", energy_wh=1_000, credit_of="PGX-T1")
    for tx in (credit, late):
        assert ch.receive_transaction("PGX", tx).duplicate is False
        assert ch.receive_transaction("PGX", tx).duplicate is True
    held = ch.transactions("PGX")
    assert [(t.id, t.signed_amount(), t.energy_wh) for t in held] == [
        ("PGX-T1", D("3.20"), 10_000),
        ("PGX-T1-C1", D("-1.00"), 3_000),
        ("PGX-T1-0002", D("0.32"), 1_000),
    ]
    assert sum(t.signed_amount() for t in held) == D("2.52")


def test_a_second_cdr_over_the_api_is_409_naming_the_authorization(
    client: TestClient, ch: ClearinghouseService
) -> None:
    _, pgx_c = register(client, ch, "PGX")
    ch.publish_tokens("MHE", [gina()])
    body = {"location_id": "PGX-P-ALICE", "evse_uids": [], "session_id": "S1"}
    answer = client.post(
        "/ocpi/2.2.1/tokens/MHE-PEV-GINA/authorize", headers=auth(pgx_c), json=body
    )
    reference = answer.json()["data"]["authorization_reference"]

    def post(tx: ChargeTransaction) -> Any:
        return client.post(
            "/ocpi/2.2.1/cdrs",
            headers=auth(pgx_c) | {"Content-Type": "application/json"},
            content=ocpi.render_json(ocpi.to_cdr(tx)),
        )

    assert post(claim(reference, "PGX-T1", "3.20")).status_code == 200
    second = post(claim(reference, "PGX-T2", "3.20"))
    assert second.status_code == 409
    assert second.json()["detail"][0]["loc"] == ["authorization_reference"]
    assert second.json()["detail"][0]["input"] == reference
    assert [t.id for t in ch.transactions("PGX")] == ["PGX-T1"]


# --- an authorization only at the asking member's own premises ----------------------------------


def test_an_authorization_only_at_a_premise_of_the_asking_member(
    ch: ClearinghouseService,
) -> None:
    ch.publish_tokens("MHE", [gina()])

    def ask(premise: str, session: str) -> AuthorizationRequest:
        return AuthorizationRequest(
            pev_id="MHE-PEV-GINA", premise_id=premise, roaming_utility="PGX", session_id=session
        )

    assert ch.authorize("PGX", ask("PGX-P-BOB", "S1")).allowed == "ALLOWED"
    for premise in ("XYZ-P-1", "MHE-P-GINA", "NOWHERE"):
        with pytest.raises(Forbidden) as refused:
            ch.authorize("PGX", ask(premise, f"S-{premise}"))
        assert refused.value.status == 403
        assert (refused.value.field, refused.value.value) == ("location_id", premise)
        assert refused.value.message.startswith("not a location of PGX")
    with ch.engine.connect() as conn:
        held = conn.execute(select(s.ch_authorizations.c.premise_id)).scalars().all()
    assert held == ["PGX-P-BOB"]  # nothing recorded for the refused ones
    # A premise that moves to another member moves with the territory that is loaded.
    ch.load_locations({"XYZ": ["XYZ-P-1", "PGX-P-BOB"]})
    assert ch.locations_of("PGX") == ["PGX-P-ALICE"]
    with pytest.raises(Forbidden):
        ch.authorize("PGX", ask("PGX-P-BOB", "S2"))


def test_a_foreign_location_over_the_api_is_403_naming_it(
    client: TestClient, ch: ClearinghouseService
) -> None:
    _, pgx_c = register(client, ch, "PGX")
    ch.publish_tokens("MHE", [gina()])
    body = {"location_id": "XYZ-P-1", "evse_uids": [], "session_id": "S1"}
    refused = client.post(
        "/ocpi/2.2.1/tokens/MHE-PEV-GINA/authorize", headers=auth(pgx_c), json=body
    )
    assert refused.status_code == 403
    assert refused.json()["detail"] == [
        {
            "loc": ["location_id"],
            "msg": "not a location of PGX: a member asks for authorizations only at its own "
            "premises",
            "input": "XYZ-P-1",
        }
    ]


def test_serving_with_a_territory_loads_each_members_premises(
    tmp_path: Path, example_territory: Path
) -> None:
    from evroam.clearinghouse.settings import ClearinghouseSettings
    from evroam.cli.clearinghouse import clearinghouse_service
    from evroam.db.engine import make_engine
    from evroam.db.migrate import upgrade
    from evroam.territory.loader import load_territory

    engine = make_engine(f"sqlite:///{tmp_path / 'ch.db'}")
    upgrade(engine)
    service = clearinghouse_service(engine, example_territory, ClearinghouseSettings.load())
    territory = load_territory(example_territory)
    assert territory.clearinghouse is not None
    for utility in territory.utilities:
        assert service.locations_of(utility.id) == sorted(p.id for p in utility.premises)
    assert "PGX-P-ALICE" in service.locations_of("PGX")


# --- bodies bounded, never echoed ---------------------------------------------------------------


def test_a_40_mb_body_is_413_before_any_parsing(
    client: TestClient, ch: ClearinghouseService
) -> None:
    _, pgx_c = register(client, ch, "PGX")
    huge = b'{"id": "' + b"x" * (40 * 1024 * 1024) + b'"}'
    for path in ("/ocpi/2.2.1/cdrs", "/v1/tokens"):
        refused = client.post(path, headers=auth(pgx_c), content=huge)
        assert refused.status_code == 413, path
        assert len(refused.content) < 200
        assert "larger than" in refused.json()["detail"]


def test_a_refused_value_is_echoed_as_a_short_excerpt(
    client: TestClient, ch: ClearinghouseService
) -> None:
    _, pgx_c = register(client, ch, "PGX")
    body = ocpi.to_cdr(claim("ref", "PGX-T1", "3.20"))
    body["session_id"] = "S" * 1_000_000  # under the body bound, far over any id
    refused = client.post(
        "/ocpi/2.2.1/cdrs",
        headers=auth(pgx_c) | {"Content-Type": "application/json"},
        content=ocpi.render_json(body),
    )
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["session_id"]
    assert refused.json()["detail"][0]["input"] == "S" * 80 + "..."
    assert len(refused.content) < 1_000


def test_a_crafted_exponent_in_a_400_byte_cdr_is_4xx(
    client: TestClient, ch: ClearinghouseService
) -> None:
    _, pgx_c = register(client, ch, "PGX")
    body = (
        '{"id":"T","party_id":"PGX","start_date_time":"2026-03-10T17:00:00Z",'
        '"end_date_time":"2026-03-10T18:00:00Z","session_id":"S1","cdr_token":'
        '{"uid":"MHE-PEV-GINA","party_id":"MHE"},"authorization_reference":"r",'
        '"cdr_location":{"id":"PGX-P-ALICE"},"currency":"USD","total_cost":'
        '{"excl_vat":1e999999999},"billing_option":"guest","tariffs":[{"id":"G"}]}'
    )
    assert len(body) < 400
    refused = client.post(
        "/ocpi/2.2.1/cdrs",
        headers=auth(pgx_c) | {"Content-Type": "application/json"},
        content=body,
    )
    assert refused.status_code == 422
    assert refused.json()["status_message"].startswith("body: not JSON: number 1e999999999")
    assert "exponent beyond 30" in refused.json()["status_message"]


def test_a_batch_publication_may_exceed_the_single_message_bound(
    client: TestClient, ch: ClearinghouseService
) -> None:
    _, mhe_c = register(client, ch, "MHE")
    batch = [
        {
            "pev_id": f"MHE-PEV-{n:06d}-{'x' * 40}",
            "home_utility": "MHE",
            "account_id": f"MHE-A-{n:06d}-{'x' * 40}",
            "home_premise_id": f"MHE-P-{n:06d}-{'x' * 40}",
            "program_id": "MHE-TOU",
            "last_updated": "2026-03-01T00:00:00Z",
        }
        for n in range(20_000)
    ]
    content = ocpi.render_json(batch).encode()
    assert len(content) > 4 * 1024 * 1024  # over the bound of a single message
    published = client.put("/v1/tokens", headers=auth(mhe_c), content=content)
    assert published.status_code == 200, published.text[:300]
    assert published.json()["data"]["applied"] == 20_000
