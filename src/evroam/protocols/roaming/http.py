"""How members and the clearinghouse reach each other over HTTP (OCPI-shaped); the one-process
demo links them in `sim/links.py`.

Over HTTP every request carries ``Authorization: Token <base64 of the token>`` as OCPI 2.2.1
writes it: a member sends its token C to the clearinghouse, the clearinghouse sends the
member's token B. No answer in time, a transport error or a 5xx is ``Unavailable`` (the
caller falls back or retries later); an unknown PEV is ``NoRecord``; any other 4xx is a
refusal that a retry will not fix.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.messages import (
    AuthorizationInfo,
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)
from evroam.protocols.roaming.ports import NoRecord, Unavailable

CREDENTIALS_PATH = f"/ocpi/{ocpi.VERSION}/credentials"
CDRS_PATH = f"/ocpi/{ocpi.VERSION}/cdrs"
TOKENS_BATCH_PATH = "/v1/tokens"

# How a client checks the server's certificate: True (the system's CAs), an SSLContext (a
# private CA: ``tls_context``), or False (never outside tests).
Verify = ssl.SSLContext | bool


def tls_context(ca_file: str | None) -> Verify:
    """Certificates checked against ``ca_file`` (PEM), else against the system's CAs."""
    return True if ca_file is None else ssl.create_default_context(cafile=ca_file)


class Refused(Exception):
    """The other party answered with a refusal (HTTP 4xx); retrying will not help."""

    def __init__(self, status: int, status_code: int | None, message: str, detail: object) -> None:
        super().__init__(f"HTTP {status} ({status_code}): {message}")
        self.status = status
        self.status_code = status_code
        self.message = message
        self.detail = detail


def token_header(token: str) -> str:
    """OCPI 2.2.1: ``Token`` followed by the base64 encoding of the token."""
    return "Token " + base64.b64encode(token.encode("utf-8")).decode("ascii")


class _OcpiClient:
    def __init__(self, base_url: str, token: str, timeout_s: float, verify: Verify = True) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": token_header(token), "Content-Type": "application/json"},
            timeout=timeout_s,
            verify=verify,
        )

    def request(
        self,
        method: str,
        path: str,
        body: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, envelope) of a 2xx or a 404; Unavailable or Refused otherwise."""
        try:
            response = self._client.request(method, path, content=body, params=params)
        except httpx.TransportError as err:  # timeouts included
            raise Unavailable(f"{method} {path}: {type(err).__name__}: {err}") from err
        if response.status_code >= 500:
            raise Unavailable(f"{method} {path}: HTTP {response.status_code}")
        try:
            envelope = ocpi.parse_json(response.content)
        except ValueError:
            envelope = {}
        if not isinstance(envelope, dict):
            envelope = {}
        if response.status_code >= 400 and response.status_code != 404:
            raise Refused(
                response.status_code,
                envelope.get("status_code"),
                str(envelope.get("status_message", response.reason_phrase)),
                envelope.get("detail"),
            )
        return response.status_code, envelope

    def close(self) -> None:
        self._client.close()


class HttpClearinghouseLink:
    """A member's ClearinghouseLink over HTTP, authenticated by its credentials token C."""

    def __init__(
        self,
        base_url: str,
        token_c: str,
        timeout_s: float = 2.0,
        *,
        country_code: str = ocpi.COUNTRY_CODE,
        verify: Verify = True,
    ) -> None:
        self._http = _OcpiClient(base_url, token_c, timeout_s, verify)
        self.country_code = country_code

    def publish_tokens(self, tokens: Sequence[RoamingToken], *, replace: bool = False) -> int:
        """Publish a batch; returns how many the clearinghouse now holds as sent (applied or
        already identical). ``replace``: the batch is the member's whole set."""
        body = "[" + ",".join(t.model_dump_json() for t in tokens) + "]"
        params = {"replace": "true"} if replace else None
        status, envelope = self._http.request("PUT", TOKENS_BATCH_PATH, body, params)
        if status == 404:
            raise Refused(status, envelope.get("status_code"), "no tokens endpoint", envelope)
        data = envelope["data"]
        return int(data["applied"]) + int(data["unchanged"])

    def authorize(self, request: AuthorizationRequest) -> AuthorizationInfo:
        body = ocpi.render_json(
            {
                "location_id": request.premise_id,
                "evse_uids": [],
                "session_id": request.session_id,
                "roaming_utility": request.roaming_utility,
            }
        )
        path = f"/ocpi/{ocpi.VERSION}/tokens/{_segment(request.pev_id)}/authorize"
        status, envelope = self._http.request("POST", path, body, {"type": ocpi.TOKEN_TYPE})
        if status == 404:
            if envelope.get("status_code") == ocpi.UNKNOWN_TOKEN:
                raise NoRecord(request.pev_id)
            raise Refused(status, envelope.get("status_code"), "not found", envelope)
        return ocpi.from_ocpi_authorization(envelope["data"])

    def send_transaction(self, transaction: ChargeTransaction) -> None:
        body = ocpi.render_json(ocpi.to_cdr(transaction, self.country_code))
        status, envelope = self._http.request("POST", CDRS_PATH, body)
        if status == 404:
            raise Refused(status, envelope.get("status_code"), "no CDRs endpoint", envelope)

    def close(self) -> None:
        self._http.close()


def registration_env(utility_id: str) -> str:
    """The clearinghouse's environment variable holding a member's registration token A."""
    return "EVROAM_CH_REGISTRATION_" + "".join(
        c if c.isalnum() else "_" for c in utility_id.upper()
    )


def register(
    clearinghouse_url: str,
    token_a: str,
    my_url: str,
    my_token_b: str,
    *,
    party_id: str | None = None,
    country_code: str = ocpi.COUNTRY_CODE,
    timeout_s: float = 5.0,
    verify: Verify = True,
) -> str:
    """The OCPI credentials exchange, member side: present registration token A (single-use)
    with our token B and base URL, get the token C to use from now on."""
    return _credentials(
        "POST",
        clearinghouse_url,
        token_a,
        my_url,
        my_token_b,
        party_id,
        country_code,
        timeout_s,
        verify,
    )


def rotate(
    clearinghouse_url: str,
    token_c: str,
    my_url: str,
    my_token_b: str,
    *,
    party_id: str | None = None,
    country_code: str = ocpi.COUNTRY_CODE,
    timeout_s: float = 5.0,
    verify: Verify = True,
) -> str:
    """OCPI credentials PUT: present our current token C with a new token B and our base URL;
    the answer's new token C replaces it (the old one stops working)."""
    return _credentials(
        "PUT",
        clearinghouse_url,
        token_c,
        my_url,
        my_token_b,
        party_id,
        country_code,
        timeout_s,
        verify,
    )


def credentials_valid(
    clearinghouse_url: str, token_c: str, *, timeout_s: float = 5.0, verify: Verify = True
) -> bool:
    """OCPI credentials GET: whether the clearinghouse still takes our token C (False: 401,
    e.g. revoked). Unavailable when it does not answer."""
    http = _OcpiClient(clearinghouse_url, token_c, timeout_s, verify)
    try:
        http.request("GET", CREDENTIALS_PATH)
    except Refused as err:
        if err.status == 401:
            return False
        raise
    finally:
        http.close()
    return True


def _credentials(
    method: str,
    clearinghouse_url: str,
    token: str,
    my_url: str,
    my_token_b: str,
    party_id: str | None,
    country_code: str,
    timeout_s: float,
    verify: Verify,
) -> str:
    body: dict[str, Any] = {"token": my_token_b, "url": my_url}
    if party_id is not None:
        body["roles"] = [
            {
                "role": "OTHER",
                "party_id": party_id,
                "country_code": country_code,
                "business_details": {"name": party_id},
            }
        ]
    http = _OcpiClient(clearinghouse_url, token, timeout_s, verify)
    try:
        status, envelope = http.request(method, CREDENTIALS_PATH, ocpi.render_json(body))
    finally:
        http.close()
    if status == 404:
        raise Refused(status, envelope.get("status_code"), "no credentials endpoint", envelope)
    return str(envelope["data"]["token"])


class HttpHomeUtilityLink:
    """The clearinghouse posting CDRs to a member at ``{member_url}/ocpi/2.2.1/cdrs`` with the
    member's token B; the member answers with a PostingAck in the envelope's data."""

    def __init__(
        self,
        member_url: str,
        token_b: str,
        timeout_s: float = 2.0,
        *,
        country_code: str = ocpi.COUNTRY_CODE,
        verify: Verify = True,
    ) -> None:
        self._http = _OcpiClient(member_url, token_b, timeout_s, verify)
        self.country_code = country_code

    def post_transaction(self, transaction: ChargeTransaction) -> PostingAck:
        body = ocpi.render_json(ocpi.to_cdr(transaction, self.country_code))
        status, envelope = self._http.request("POST", CDRS_PATH, body)
        if status == 404:
            raise Refused(status, envelope.get("status_code"), "not found", envelope.get("detail"))
        data = envelope.get("data")
        if envelope.get("status_code") != ocpi.SUCCESS or not isinstance(data, dict):
            raise Refused(
                status,
                envelope.get("status_code"),
                str(envelope.get("status_message", "no acknowledgement")),
                data,
            )
        return PostingAck.model_validate(data)

    def close(self) -> None:
        self._http.close()


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
