"""`evroam serve clearinghouse` as a real process on a loopback port, with member utilities
speaking to it over HTTP the way `evroam serve utility` does (through evroam's links).

The home utility's CDR receiver is a small stand-in server in this process: the lead's
utility endpoint is tested with the utility. MHE's receiver is down when PGX sends its
charge transaction; the clearinghouse keeps it and delivers it, once, when MHE is back.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from evroam.protocols.roaming import ocpi
from evroam.protocols.roaming.http import (
    HttpClearinghouseLink,
    HttpHomeUtilityLink,
    Refused,
    register,
    token_header,
)
from evroam.protocols.roaming.messages import (
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
    RoamingToken,
)
from evroam.protocols.roaming.ports import NoRecord, Unavailable

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
OPERATOR = "operator-token-for-the-test"
TOKEN_A = {"PGX": "registration-A-for-PGX-0123456789", "MHE": "registration-A-for-MHE-0123456789"}
T0 = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HomeReceiver:
    """A member's CDR receiver: checks token B, posts, answers with a PostingAck (the home
    program bills 0.155 $/kWh here: 10 kWh -> 1.55)."""

    def __init__(self, token_b: str) -> None:
        self.token_b = token_b
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.posted: list[str] = []
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        app = FastAPI()

        @app.post("/ocpi/2.2.1/cdrs")
        async def cdrs(request: Request) -> Response:
            if request.headers.get("authorization") != token_header(self.token_b):
                return Response(status_code=401)
            tx = ocpi.from_cdr(ocpi.parse_json(await request.body()))
            if tx.id not in self.posted:
                self.posted.append(tx.id)
            billed = (Decimal(tx.energy_wh) * Decimal("0.000155")).quantize(Decimal("0.01"))
            ack = PostingAck(
                transaction_id=tx.id,
                account_id="MHE-A-3001",
                billed_amount=-billed if tx.credit else billed,
                currency=tx.currency,
            )
            body = ocpi.envelope(ack.model_dump(mode="json"), datetime.now(UTC))
            return Response(ocpi.render_json(body), media_type="application/json")

        self.app = app

    def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "home receiver did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def clearinghouse(tmp_path: Path, example_territory: Path) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ)
    env.pop("EVROAM_DATABASE_URL", None)
    env |= {f"EVROAM_CH_REGISTRATION_{m}": a for m, a in TOKEN_A.items()}
    env["EVROAM_OPERATOR_TOKEN"] = OPERATOR
    db = f"sqlite:///{tmp_path / 'ch.db'}"
    # as the deployment guide says: the schema first, then the server (which never makes it)
    subprocess.run([str(BIN / "evroam"), "--db", db, "db", "upgrade"], env=env, check=True)
    log = (tmp_path / "clearinghouse.log").open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "evroam"),
            "--db",
            db,
            "serve",
            "clearinghouse",
            "--territory",
            str(example_territory),
            "--port",
            str(port),
            "--retry-every",
            "0.5",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, (tmp_path / "clearinghouse.log").read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1).json()["clearinghouse"] == "CH-WEST":
                break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "clearinghouse did not answer /health"
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(15)


def gina() -> RoamingToken:
    return RoamingToken(
        pev_id="MHE-PEV-GINA",
        home_utility="MHE",
        account_id="MHE-A-3001",
        home_premise_id="MHE-P-GINA",
        program_id="MHE-TOU",
        last_updated=T0 - timedelta(days=1),
    )


def test_roaming_through_the_clearinghouse_server(clearinghouse: str) -> None:
    mhe_home = HomeReceiver("token-B-of-MHE")
    mhe_home.start()
    pgx_c = register(clearinghouse, TOKEN_A["PGX"], "http://127.0.0.1:1", "token-B-of-PGX")
    mhe_c = register(clearinghouse, TOKEN_A["MHE"], mhe_home.url, mhe_home.token_b, party_id="MHE")
    with pytest.raises(Refused) as refused:
        register(clearinghouse, "not-a-registration-token", mhe_home.url, "b")
    assert refused.value.status == 401
    pgx = HttpClearinghouseLink(clearinghouse, pgx_c, timeout_s=5)
    mhe = HttpClearinghouseLink(clearinghouse, mhe_c, timeout_s=5)

    assert mhe.publish_tokens([gina()]) == 1
    with pytest.raises(Refused) as refused:  # PGX publishing an MHE PEV
        pgx.publish_tokens([gina()])
    assert refused.value.status == 403

    ask = AuthorizationRequest(
        pev_id="MHE-PEV-GINA", premise_id="PGX-P-ALICE", roaming_utility="PGX", session_id="S1"
    )
    info = pgx.authorize(ask)
    assert (info.home_utility, info.account_id, info.program_id) == ("MHE", "MHE-A-3001", "MHE-TOU")
    assert pgx.authorize(ask) == info
    with pytest.raises(NoRecord):
        pgx.authorize(ask.model_copy(update={"pev_id": "NOBODY", "session_id": "S2"}))
    with pytest.raises(Refused) as refused:  # MHE asking in PGX's name
        mhe.authorize(ask)
    assert refused.value.status == 403

    tx = ChargeTransaction(
        id="PGX-T1",
        roaming_utility="PGX",
        home_utility="MHE",
        authorization_reference=info.authorization_reference,
        pev_id="MHE-PEV-GINA",
        premise_id="PGX-P-ALICE",
        session_id="S1",
        billing_option="home_program",
        start_at=T0,
        end_at=T0 + timedelta(hours=1),
        energy_wh=10_000,
        amount=Decimal("3.20"),  # 10 kWh at PGX-GUEST 0.32
        currency="USD",
        tariff_id="PGX-GUEST",
    )
    pgx.send_transaction(tx)
    assert mhe_home.posted == ["PGX-T1"]  # forwarded before the answer
    pgx.send_transaction(tx)  # a retry: nothing new
    assert mhe_home.posted == ["PGX-T1"]

    # MHE's receiver goes down; PGX's next transaction waits at the clearinghouse.
    mhe_home.stop()
    with pytest.raises(Refused) as refused:  # a second CDR for the same authorization
        pgx.send_transaction(tx.model_copy(update={"id": "PGX-T1-AGAIN"}))
    assert refused.value.status == 409
    info2 = pgx.authorize(ask.model_copy(update={"session_id": "S2"}))
    second = tx.model_copy(
        update={
            "id": "PGX-T2",
            "billing_option": "guest",
            "session_id": "S2",
            "authorization_reference": info2.authorization_reference,
        }
    )
    with pytest.raises(Refused):  # the reference is of another session: refused, not kept
        pgx.send_transaction(second.model_copy(update={"session_id": "S9"}))
    pgx.send_transaction(second)
    restarted = HomeReceiver(mhe_home.token_b)
    restarted.port, restarted.url = mhe_home.port, mhe_home.url
    restarted.start()
    deadline = time.monotonic() + 15
    while restarted.posted != ["PGX-T2"]:
        assert time.monotonic() < deadline, f"not redelivered: {restarted.posted}"
        time.sleep(0.1)

    statement = httpx.get(
        f"{clearinghouse}/v1/settlement/2026-03",
        headers={"Authorization": token_header(mhe_c)},
    ).json()["data"]
    assert [
        (t["id"], t["amount"], t["billed_amount"], t["difference"])
        for t in statement["transactions"]
    ] == [
        ("PGX-T1", "3.20", "1.55", "-1.65"),
        ("PGX-T2", "3.20", "1.55", "-1.65"),
    ]
    other = httpx.get(
        f"{clearinghouse}/v1/settlement/2026-03/statements/MHE",
        headers={"Authorization": token_header(pgx_c)},
    )
    assert other.status_code == 403
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    issued = httpx.post(f"{clearinghouse}/v1/settlement/2026-03/issue", headers=operator).json()
    assert issued["data"]["lines"] == [
        {"payer_utility": "MHE", "payee_utility": "PGX", "amount": "6.40", "currency": "USD"}
    ]
    restarted.stop()


def test_unreachable_clearinghouse_is_unavailable() -> None:
    link = HttpClearinghouseLink(f"http://127.0.0.1:{free_port()}", "c", timeout_s=0.5)
    with pytest.raises(Unavailable):
        link.authorize(
            AuthorizationRequest(pev_id="P", premise_id="X", roaming_utility="PGX", session_id="S")
        )
    home = HttpHomeUtilityLink(f"http://127.0.0.1:{free_port()}", "b", timeout_s=0.5)
    with pytest.raises(Unavailable):
        home.post_transaction(
            ChargeTransaction(
                id="T",
                roaming_utility="PGX",
                home_utility="MHE",
                authorization_reference="r",
                pev_id="P",
                premise_id="X",
                session_id="S",
                billing_option="guest",
                start_at=T0,
                end_at=T0,
                energy_wh=0,
                amount=Decimal("0.00"),
                currency="USD",
                tariff_id="G",
            )
        )
