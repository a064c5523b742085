"""`evroam serve clearinghouse` over TLS, and a utility that registers with it once.

The clearinghouse serves HTTPS with a certificate made here with `cryptography`; a client
without its CA cannot reach it. `evroam serve utility --clearinghouse https://...
--clearinghouse-ca` registers with its single-use token A, keeps the credentials in a file
only it may read, and starts again from that file after a restart; once the operator
revokes it, the spent A no longer lets it in.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evroam.protocols.roaming.http import register, token_header
from evroam.protocols.roaming.ports import Unavailable
from tests.certs import self_signed

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TOKEN_A = "registration-A-for-PGX-over-tls-0123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upgraded(url: str) -> str:
    """The database created on purpose, as a server needs it (docs/deployment.md)."""
    done = subprocess.run(
        [str(BIN / "evroam"), "--db", url, "db", "upgrade"],
        capture_output=True, text=True, env=clean_env(), timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return url


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVROAM_")}
    return env | extra


def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, **client: object) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1, **client).status_code == 200:  # type: ignore[arg-type]
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer /health"
        time.sleep(0.2)


@pytest.fixture
def tls_clearinghouse(tmp_path: Path, example_territory: Path) -> Iterator[tuple[str, Path, Path]]:
    """(https URL, its certificate, its database file)."""
    cert, key = self_signed(tmp_path, "ch")
    port = free_port()
    db = tmp_path / "ch.db"
    log = tmp_path / "clearinghouse.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(BIN / "evroam"),
                "--db",
                upgraded(f"sqlite:///{db}"),
                "serve",
                "clearinghouse",
                "--territory",
                str(example_territory),
                "--port",
                str(port),
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=clean_env(EVROAM_CH_REGISTRATION_PGX=TOKEN_A),
        )
    url = f"https://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log, verify=ssl.create_default_context(cafile=str(cert)))
        yield url, cert, db
    finally:
        process.terminate()
        process.wait(15)


def serve_utility(
    tmp_path: Path, territory: Path, clearinghouse: str, ca: Path, name: str, port: int
) -> tuple[subprocess.Popen[bytes], str, Path]:
    log = tmp_path / f"{name}.log"
    db = tmp_path / "pgx.db"
    if not db.exists():
        upgraded(f"sqlite:///{db}")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(BIN / "evroam"),
                "--db",
                f"sqlite:///{db}",
                "serve",
                "utility",
                "--utility",
                "PGX",
                "--territory",
                str(territory),
                "--port",
                str(port),
                "--clearinghouse",
                clearinghouse,
                "--clearinghouse-ca",
                str(ca),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=clean_env(
                EVROAM_CH_REGISTRATION_TOKEN=TOKEN_A,
                EVROAM_CH_CREDENTIALS_FILE=str(tmp_path / "pgx-credentials.json"),
            ),
        )
    return process, f"http://127.0.0.1:{port}", log


def test_a_utility_registers_over_tls_once_and_restarts_from_its_credentials(
    tmp_path: Path, example_territory: Path, tls_clearinghouse: tuple[str, Path, Path]
) -> None:
    url, cert, ch_db = tls_clearinghouse
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        register(url, TOKEN_A, "http://127.0.0.1:1", "token-b-0123456789")  # no CA given

    credentials = tmp_path / "pgx-credentials.json"
    port = free_port()
    process, utility_url, log = serve_utility(tmp_path, example_territory, url, cert, "pgx-1", port)
    try:
        wait_healthy(process, utility_url, log)
    finally:
        process.terminate()
        process.wait(15)
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    held = json.loads(credentials.read_text())
    assert held["clearinghouse_url"] == url and held["party_id"] == "PGX"
    ca = ssl.create_default_context(cafile=str(cert))
    read = httpx.get(
        f"{url}/ocpi/2.2.1/credentials",
        headers={"Authorization": token_header(held["token_c"])},
        verify=ca,
    )
    assert read.status_code == 200 and read.json()["data"]["token"] == held["token_c"]
    # The PEVs PGX enrolled were published over TLS with that token C.
    published = httpx.get(
        f"{url}/v1/tokens", headers={"Authorization": token_header(held["token_c"])}, verify=ca
    ).json()["data"]
    assert published and {t["home_utility"] for t in published} == {"PGX"}

    # Restarted: token A is spent, the held credentials carry it.
    process, utility_url, log = serve_utility(tmp_path, example_territory, url, cert, "pgx-2", port)
    try:
        wait_healthy(process, utility_url, log)
    finally:
        process.terminate()
        process.wait(15)
    assert json.loads(credentials.read_text()) == held

    # Restarted on another port: it tells the clearinghouse (PUT /credentials) and gets a
    # new token C; the old one stops working.
    moved = free_port()
    process, utility_url, log = serve_utility(
        tmp_path, example_territory, url, cert, "pgx-moved", moved
    )
    try:
        wait_healthy(process, utility_url, log)
    finally:
        process.terminate()
        process.wait(15)
    rotated = json.loads(credentials.read_text())
    assert rotated["my_url"] == f"http://127.0.0.1:{moved}"
    assert rotated["token_c"] != held["token_c"] and rotated["token_b"] != held["token_b"]
    for token, status in ((held["token_c"], 401), (rotated["token_c"], 200)):
        answer = httpx.get(
            f"{url}/ocpi/2.2.1/credentials",
            headers={"Authorization": token_header(token)},
            verify=ca,
        )
        assert answer.status_code == status

    # Revoked by the operator: C is refused, and the spent A does not let PGX back in.
    revoke = subprocess.run(
        [
            str(BIN / "evroam"),
            "--db",
            f"sqlite:///{ch_db}",
            "clearinghouse",
            "revoke",
            "--utility",
            "PGX",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(NO_COLOR="1"),
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stderr
    assert revoke.stdout == "revoked every token of PGX\n"
    process, _, log = serve_utility(tmp_path, example_territory, url, cert, "pgx-revoked", moved)
    assert process.wait(90) == 2
    last = log.read_text().strip().splitlines()[-1]
    assert last == (
        f"error: --clearinghouse: the clearinghouse no longer takes the token C held in "
        f"{credentials} (revoked?), nor the registration token A (unknown or missing "
        "registration token (Authorization: Token <token A>)): set "
        "EVROAM_CH_REGISTRATION_TOKEN to a new token A from the clearinghouse operator"
    )
