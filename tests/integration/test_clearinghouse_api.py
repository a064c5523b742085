"""The clearinghouse's HTTP API through FastAPI's test client: the OCPI credentials
exchange, envelopes, tokens, authorization, CDRs forwarded, and a member refused when it
reaches for another member's data."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from evroam.clearinghouse.api import create_app
from evroam.clearinghouse.service import ClearinghouseService
from evroam.core.clock import FixedClock
from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.messages import ChargeTransaction, PostingAck

D = Decimal
T0 = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)
OPERATOR = "operator-secret-token"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}


class Home:
    def __init__(self) -> None:
        self.posted: list[ChargeTransaction] = []

    def post_transaction(self, tx: ChargeTransaction) -> PostingAck:
        self.posted.append(tx)
        return PostingAck(
            transaction_id=tx.id, account_id="MHE-A-3001", billed_amount=D("1.55"), currency="USD"
        )


@pytest.fixture
def home() -> Home:
    return Home()


@pytest.fixture
def service(sqlite_engine: Engine) -> ClearinghouseService:
    service = ClearinghouseService(
        sqlite_engine, FixedClock(T0), "CH-WEST", members=["PGX", "MHE", "XYZ"]
    )
    service.load_locations({"PGX": ["PGX-P-ALICE"], "MHE": ["MHE-P-GINA"], "XYZ": ["XYZ-P-1"]})
    return service


@pytest.fixture
def client(service: ClearinghouseService, home: Home) -> Iterator[TestClient]:
    app = create_app(service, OPERATOR, home_links=lambda: {"MHE": home}, retry_every_s=None)
    with TestClient(app) as c:
        yield c


def connect(client: TestClient, service: ClearinghouseService, member: str) -> str:
    """Register the member and run the credentials exchange; its token C."""
    token_a = service.register_member(member)
    response = client.post(
        "/ocpi/2.2.1/credentials",
        headers=auth(token_a),
        json={
            "token": f"token-b-{member}",
            "url": f"http://{member.lower()}.test",
            "roles": [{"role": "OTHER", "party_id": member, "country_code": "US"}],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_code"] == 1000 and set(body) >= {"data", "status_message", "timestamp"}
    assert body["data"]["roles"][0]["role"] == "HUB"
    return str(body["data"]["token"])


@pytest.fixture
def tokens(client: TestClient, service: ClearinghouseService) -> dict[str, str]:
    return {m: connect(client, service, m) for m in ("PGX", "MHE", "XYZ")}


def gina(**changes: Any) -> dict[str, Any]:
    token = {
        "country_code": "US",
        "party_id": "MHE",
        "uid": "MHE-PEV-GINA",
        "type": "OTHER",
        "contract_id": "MHE-A-3001",
        "issuer": "MHE",
        "valid": True,
        "whitelist": "NEVER",
        "last_updated": "2026-03-01T00:00:00Z",
        "program_id": "MHE-TOU",
        "home_premise_id": "MHE-P-GINA",
        "billing_options": ["guest", "home_program"],
    }
    return token | changes


def put_gina(client: TestClient, token_c: str, **changes: Any) -> Any:
    return client.put(
        "/ocpi/2.2.1/tokens/US/MHE/MHE-PEV-GINA", headers=auth(token_c), json=gina(**changes)
    )


def authorize(client: TestClient, token_c: str, uid: str = "MHE-PEV-GINA", **extra: Any) -> Any:
    body = {"location_id": "PGX-P-ALICE", "evse_uids": [], "session_id": "S1"} | extra
    return client.post(f"/ocpi/2.2.1/tokens/{uid}/authorize", headers=auth(token_c), json=body)


def test_credentials_exchange_rotates_token_c(
    client: TestClient, service: ClearinghouseService
) -> None:
    token_a = service.register_member("PGX")
    body = {"token": "b", "url": "http://pgx.test"}
    first = client.post("/ocpi/2.2.1/credentials", headers=auth(token_a), json=body)
    c1 = first.json()["data"]["token"]
    second = client.put("/ocpi/2.2.1/credentials", headers=auth(c1), json=body)
    c2 = second.json()["data"]["token"]
    assert c1 != c2
    assert client.get("/v1/tokens", headers=auth(c1)).status_code == 401
    assert client.get("/v1/tokens", headers=auth(c2)).status_code == 200
    # The plain (not base64) token is accepted too.
    assert client.get("/v1/tokens", headers={"Authorization": f"Token {c2}"}).status_code == 200
    wrong = client.post("/ocpi/2.2.1/credentials", headers=auth("not-a-token"), json=body)
    assert wrong.status_code == 401 and wrong.json()["status_code"] == 2000
    other = client.put(
        "/ocpi/2.2.1/credentials",
        headers=auth(c2),
        json=body | {"roles": [{"role": "OTHER", "party_id": "MHE"}]},
    )
    assert other.status_code == 403
    assert other.json()["detail"][0]["loc"] == ["roles[0]", "party_id"]
    # Refused before anything changed: the current C still works.
    assert client.get("/v1/tokens", headers=auth(c2)).status_code == 200


def test_unauthenticated_requests_are_refused_in_the_envelope(client: TestClient) -> None:
    response = client.post("/ocpi/2.2.1/tokens/X/authorize", json={"location_id": "P"})
    assert response.status_code == 401
    body = response.json()
    assert body["status_code"] == 2000 and body["data"] is None and "timestamp" in body


def test_tokens_authorize_and_unknown(client: TestClient, tokens: dict[str, str]) -> None:
    assert put_gina(client, tokens["MHE"]).json()["status_code"] == 1000
    refused = put_gina(client, tokens["PGX"])  # PGX publishing an MHE PEV
    assert refused.status_code == 403
    assert refused.json()["detail"][0]["loc"] == ["party_id"]
    response = authorize(client, tokens["PGX"])
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["allowed"] == "ALLOWED"
    assert data["token"]["contract_id"] == "MHE-A-3001"
    assert data["token"]["program_id"] == "MHE-TOU"
    assert data["location"] == {"location_id": "PGX-P-ALICE", "evse_uids": []}
    assert (
        data["authorization_reference"]
        == authorize(client, tokens["PGX"]).json()["data"]["authorization_reference"]
    )
    unknown = authorize(client, tokens["PGX"], uid="NOBODY", session_id="S9")
    assert unknown.status_code == 404 and unknown.json()["status_code"] == 2004
    for_another = authorize(client, tokens["XYZ"], roaming_utility="PGX")
    assert for_another.status_code == 403
    assert for_another.json()["detail"][0]["loc"] == ["roaming_utility"]
    missing = authorize(client, tokens["PGX"], session_id=None)
    assert missing.status_code == 422 and missing.json()["status_code"] == 2001


def test_patch_and_withdraw(client: TestClient, tokens: dict[str, str]) -> None:
    put_gina(client, tokens["MHE"])
    patched = client.patch(
        "/ocpi/2.2.1/tokens/US/MHE/MHE-PEV-GINA",
        headers=auth(tokens["MHE"]),
        json={"valid": False, "last_updated": "2026-03-02T00:00:00Z"},
    )
    assert patched.status_code == 200, patched.text
    assert authorize(client, tokens["PGX"]).status_code == 404
    held = client.get("/ocpi/2.2.1/tokens/US/MHE/MHE-PEV-GINA", headers=auth(tokens["MHE"]))
    assert held.json()["data"]["valid"] is False
    # Another member cannot read it.
    peek = client.get("/ocpi/2.2.1/tokens/US/MHE/MHE-PEV-GINA", headers=auth(tokens["PGX"]))
    assert peek.status_code == 403


def test_batch_publication(client: TestClient, tokens: dict[str, str]) -> None:
    batch = [
        {
            "pev_id": f"MHE-PEV-{n}",
            "home_utility": "MHE",
            "account_id": f"MHE-A-{n}",
            "program_id": "MHE-TOU",
            "last_updated": "2026-03-01T00:00:00Z",
        }
        for n in range(3)
    ]
    response = client.put("/v1/tokens", headers=auth(tokens["MHE"]), json=batch)
    assert response.json()["data"] == {"applied": 3, "unchanged": 0, "ignored": 0, "withdrawn": 0}
    replaced = client.put("/v1/tokens?replace=true", headers=auth(tokens["MHE"]), json=batch[:1])
    assert replaced.json()["data"]["withdrawn"] == 2
    listed = client.get("/v1/tokens?valid=true", headers=auth(tokens["MHE"])).json()["data"]
    assert [t["pev_id"] for t in listed] == ["MHE-PEV-0"]
    assert client.get("/v1/tokens", headers=auth(tokens["PGX"])).json()["data"] == []
    bad = client.put("/v1/tokens", headers=auth(tokens["MHE"]), json=[batch[0] | {"x": 1}])
    assert bad.status_code == 422 and bad.json()["status_code"] == 2001


def cdr_of(reference: str, **changes: Any) -> dict[str, Any]:
    tx = ChargeTransaction(
        id="PGX-T1",
        roaming_utility="PGX",
        home_utility="MHE",
        authorization_reference=reference,
        pev_id="MHE-PEV-GINA",
        premise_id="PGX-P-ALICE",
        session_id="S1",
        billing_option="home_program",
        start_at=datetime(2026, 3, 10, 17, 0, tzinfo=UTC),
        end_at=datetime(2026, 3, 10, 18, 0, tzinfo=UTC),
        energy_wh=10_000,
        amount=D("3.20"),
        currency="USD",
        tariff_id="PGX-GUEST",
    )
    return ocpi.to_cdr(tx.model_copy(update=changes))


def post_cdr(client: TestClient, token_c: str, cdr: dict[str, Any]) -> Any:
    return client.post(
        "/ocpi/2.2.1/cdrs",
        headers=auth(token_c) | {"Content-Type": "application/json"},
        content=ocpi.render_json(cdr),
    )


def test_cdr_is_stored_forwarded_and_settled(
    client: TestClient, tokens: dict[str, str], home: Home
) -> None:
    put_gina(client, tokens["MHE"])
    reference = authorize(client, tokens["PGX"]).json()["data"]["authorization_reference"]
    cdr = cdr_of(reference)
    raw = ocpi.render_json(cdr)
    assert '"total_energy":10.000' in raw and '"excl_vat":3.20' in raw
    response = post_cdr(client, tokens["PGX"], cdr)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {
        "id": "PGX-T1",
        "period": "2026-03",
        "duplicate": False,
        "forwarded_now": 1,
    }
    assert [t.id for t in home.posted] == ["PGX-T1"] and home.posted[0].amount == D("3.20")
    replay = post_cdr(client, tokens["PGX"], cdr)
    assert replay.json()["data"]["duplicate"] is True and len(home.posted) == 1
    changed = post_cdr(client, tokens["PGX"], cdr | {"total_cost": {"excl_vat": D("3.30")}})
    assert changed.status_code == 409
    # Sent in another's name, or by the home utility: refused.
    assert post_cdr(client, tokens["XYZ"], cdr).status_code == 403
    # Statements: each member its own, nobody another's.
    mhe = client.get("/v1/settlement/2026-03", headers=auth(tokens["MHE"])).json()["data"]
    assert mhe["issued"] is False
    assert [(t["id"], t["billed_amount"], t["difference"]) for t in mhe["transactions"]] == [
        ("PGX-T1", "1.55", "-1.65")
    ]
    assert mhe["positions"][0]["net"] == "-3.20"
    peek = client.get("/v1/settlement/2026-03/statements/MHE", headers=auth(tokens["PGX"]))
    assert peek.status_code == 403 and peek.json()["detail"][0]["loc"] == ["utility_id"]
    own = client.get("/v1/settlement/2026-03/statements/PGX", headers=auth(tokens["PGX"]))
    assert own.json()["data"]["positions"][0]["net"] == "3.20"
    assert client.get("/v1/transactions", headers=auth(tokens["XYZ"])).json()["data"] == []
    # Issue: operator only, then immutable.
    assert (
        client.post("/v1/settlement/2026-03/issue", headers=auth(tokens["PGX"])).status_code == 401
    )
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    issued = client.post("/v1/settlement/2026-03/issue", headers=operator).json()["data"]
    assert issued["lines"] == [
        {"payer_utility": "MHE", "payee_utility": "PGX", "amount": "3.20", "currency": "USD"}
    ]
    assert client.post("/v1/settlement/2026-03/issue", headers=operator).json()["data"] == issued
    lines = client.get("/v1/settlement/2026-03/lines", headers=operator).json()
    assert lines["status_message"] == "issued" and lines["data"] == issued["lines"]
    forwarded = client.post("/v1/operator/forward", headers=operator).json()["data"]
    assert forwarded == {"forwarded": 0, "pending": 0}
    assert client.get("/v1/operator/pending", headers=operator).json()["data"] == []
    assert (
        client.get("/v1/settlement/2026-03/lines", headers=auth(tokens["MHE"])).status_code == 401
    )
    # A credit CDR for part of it, after the period was issued: next period.
    credit = cdr_of(reference, id="PGX-T1-C1", credit=True, credit_of="PGX-T1", amount=D("1.00"))
    assert credit["total_cost"] == {"excl_vat": D("-1.00")}
    assert post_cdr(client, tokens["PGX"], credit).json()["data"]["period"] == "2026-04"
    # the operator sees both periods: March issued, April still open
    periods = client.get("/v1/settlement", headers=operator).json()["data"]
    assert [(p["period"], p["issued_at"] is not None) for p in periods] == [
        ("2026-03", True),
        ("2026-04", False),
    ]
    assert client.get("/v1/settlement", headers=auth(tokens["PGX"])).status_code == 401


def test_bad_cdr_names_the_field(client: TestClient, tokens: dict[str, str]) -> None:
    response = post_cdr(client, tokens["PGX"], {"id": "X"})
    assert response.status_code == 422
    body = response.json()
    assert body["status_code"] == 2001 and body["detail"][0]["loc"] == ["party_id"]
    garbage = client.post("/ocpi/2.2.1/cdrs", headers=auth(tokens["PGX"]), content=b"{not json")
    assert garbage.status_code == 422


def test_operator_moves_the_simulated_clock(service: ClearinghouseService) -> None:
    clock = FixedClock(T0)
    service.clock = clock
    app = create_app(service, OPERATOR, retry_every_s=None, sim_clock=clock)
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    with TestClient(app) as client:
        moved = client.put(
            "/v1/operator/clock", headers=operator, json={"now": "2026-04-01T12:00:00+02:00"}
        )
        assert moved.json()["data"] == {"now": "2026-04-01T10:00:00Z"}
        assert client.put("/v1/operator/clock", json={"now": "2026-04-01"}).status_code == 401
        naive = client.put("/v1/operator/clock", headers=operator, json={"now": "2026-04-01"})
        assert naive.status_code == 422
    assert clock() == datetime(2026, 4, 1, 10, tzinfo=UTC)


def test_health_and_versions(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "clearinghouse": "CH-WEST"}
    versions = client.get("/ocpi/versions").json()["data"]
    assert versions[0]["version"] == "2.2.1"
    details = json.loads(client.get("/ocpi/2.2.1").text)["data"]
    assert {e["identifier"] for e in details["endpoints"]} == {"credentials", "tokens", "cdrs"}


def test_operator_sees_what_waits_for_a_home_utility(
    service: ClearinghouseService, tokens: dict[str, str], client: TestClient
) -> None:
    class Down:
        def post_transaction(self, tx: ChargeTransaction) -> PostingAck:
            from evroam.protocols.roaming.ports import Unavailable

            raise Unavailable("connection refused")

    app = create_app(service, OPERATOR, home_links=lambda: {"MHE": Down()}, retry_every_s=None)
    put_gina(client, tokens["MHE"])
    reference = authorize(client, tokens["PGX"]).json()["data"]["authorization_reference"]
    with TestClient(app) as down:
        answer = post_cdr(down, tokens["PGX"], cdr_of(reference)).json()["data"]
        assert answer["forwarded_now"] == 0
        waiting = down.get(
            "/v1/operator/pending", headers={"Authorization": f"Bearer {OPERATOR}"}
        ).json()["data"]
    assert [(w["id"], w["home_utility"], w["attempts"]) for w in waiting] == [("PGX-T1", "MHE", 1)]
    assert waiting[0]["last_error"] == "unavailable: connection refused"
    assert waiting[0]["received_at"].endswith("Z")


@pytest.mark.parametrize(
    ("number", "says"),
    [
        ("1e999999999", "exponent beyond 30"),
        ("-1E-999999999", "exponent beyond 30"),
        ("9" * 5000, "more than 40 characters"),
        ("NaN", "NaN is not a JSON number"),
        ("Infinity", "Infinity is not a JSON number"),
    ],
)
def test_a_crafted_number_in_a_cdr_is_refused_before_any_arithmetic(
    client: TestClient, tokens: dict[str, str], number: str, says: str
) -> None:
    body = ocpi.render_json(cdr_of("ref") | {"total_energy": "@@"}).replace('"@@"', number)
    response = client.post(
        "/ocpi/2.2.1/cdrs",
        headers=auth(tokens["PGX"]) | {"Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 422
    assert says in response.text
    assert len(response.content) < 1000  # a short excerpt, never the input echoed back


def test_json_nested_beyond_the_decoder_is_a_refusal(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = client.post(
        "/ocpi/2.2.1/cdrs",
        headers=auth(tokens["PGX"]) | {"Content-Type": "application/json"},
        content="[" * 100_000 + "]" * 100_000,
    )
    assert response.status_code == 422
    assert "nested too deeply" in response.text
