"""Schema-driven fuzzing of both HTTP APIs (issue 15): schemathesis generates requests from
each server's own OpenAPI document, valid and invalid, with the credentials a real caller
holds so the fuzzer reaches the handlers, not only the authentication check. Any 5xx is a
defect: a bad value must be a 4xx naming the field.

Seeded (``derandomize``) and bounded (``max_examples`` per operation) so the suite stays in
minutes and a failure reproduces; the failing request is printed by schemathesis."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.case import Case
from sqlalchemy import Engine

from evroam.clearinghouse.api import create_app as create_clearinghouse_app
from evroam.clearinghouse.service import ClearinghouseService
from evroam.core.clock import FixedClock
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.api import create_app as create_utility_app
from evroam.utility.service import UtilityService

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"
NOW = datetime(2026, 3, 11, 18, 0, tzinfo=UTC)
OPERATOR = "operator-secret-token"
EXAMPLES_PER_OPERATION = 60
FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


class Api:
    """An app under fuzzing and the headers a legitimate caller of each route sends."""

    def __init__(self, app: Any, headers_for: Any) -> None:
        self.app = app
        self.headers_for = headers_for


@pytest.fixture
def utility_api(sqlite_engine: Engine) -> Api:
    with sqlite_engine.begin() as conn:
        save_territory(conn, load_territory(EXAMPLE))
    service = UtilityService(sqlite_engine, "PGX", FixedClock(NOW))
    gateway = service.issue_gateway_token("PGX-P-ALICE")
    app = create_utility_app(service, operator_token=OPERATOR)

    def headers_for(path: str) -> dict[str, str]:
        token = OPERATOR if path.startswith("/v1/operator") else gateway
        return {"Authorization": f"Bearer {token}"}

    return Api(app, headers_for)


@pytest.fixture
def clearinghouse_api(sqlite_engine: Engine) -> Iterator[Api]:
    service = ClearinghouseService(
        sqlite_engine, FixedClock(NOW), "CH-WEST", members=["PGX", "MHE"]
    )
    app = create_clearinghouse_app(service, OPERATOR, home_links=dict, retry_every_s=None)
    with TestClient(app) as client:
        token_a = service.register_member("PGX")
        answer = client.post(
            "/ocpi/2.2.1/credentials",
            headers=_ocpi_auth(token_a),
            json={
                "token": "token-b-PGX",
                "url": "http://pgx.test",
                "roles": [{"role": "OTHER", "party_id": "PGX", "country_code": "US"}],
            },
        )
        assert answer.status_code == 200, answer.text
        token_c = str(answer.json()["data"]["token"])

        def headers_for(path: str) -> dict[str, str]:
            if path.startswith(("/v1/operator", "/v1/settlement")):
                return {"Authorization": f"Bearer {OPERATOR}"}
            return _ocpi_auth(token_c)

        yield Api(app, headers_for)


def _ocpi_auth(token: str) -> dict[str, str]:
    return {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}


def _fuzz(api: Api) -> None:
    """Every operation of the API's OpenAPI document, fuzzed in turn; every failure is
    collected so one run names them all."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Case) -> None:
            response = case.call(headers=api.headers_for(case.path))
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.query or ''} "
                f"-> {response.status_code}: {response.text[:300]}"
            )

        try:
            run()
        except Exception as failure:
            failures.append(f"{operation.label}: {type(failure).__name__}: {failure}"[:400])
    assert operations >= 5, "the OpenAPI document lost its operations"
    assert not failures, "\n".join(failures)


def test_utility_api_answers_every_request_below_500(utility_api: Api) -> None:
    _fuzz(utility_api)


def test_clearinghouse_api_answers_every_request_below_500(clearinghouse_api: Api) -> None:
    _fuzz(clearinghouse_api)
