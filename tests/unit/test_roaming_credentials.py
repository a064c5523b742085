"""The utility's clearinghouse credentials across restarts (protocols/roaming/credentials.py):
written whole, readable by the owner only, and used again instead of the single-use token A."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from evroam.protocols.roaming import credentials as cred
from evroam.protocols.roaming.credentials import CredentialsError, HeldCredentials
from evroam.protocols.roaming.ports import Unavailable

CH = "https://ch.test"
HELD = HeldCredentials(CH, "PGX", "http://pgx.test", "token-C-held", "token-B-held")


class FakeClearinghouse:
    """What connect() asks the clearinghouse, answered as the test says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, valid: bool | None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.valid = valid  # None: does not answer

        def credentials_valid(url: str, token_c: str, **_: Any) -> bool:
            self.calls.append(("GET", token_c))
            if self.valid is None:
                raise Unavailable("connection refused")
            return self.valid

        def register(url: str, token_a: str, my_url: str, token_b: str, **_: Any) -> str:
            self.calls.append(("POST", token_a))
            return "token-C-registered"

        def rotate(url: str, token_c: str, my_url: str, token_b: str, **_: Any) -> str:
            self.calls.append(("PUT", token_c))
            return "token-C-rotated"

        monkeypatch.setattr(cred, "credentials_valid", credentials_valid)
        monkeypatch.setattr(cred, "register", register)
        monkeypatch.setattr(cred, "rotate", rotate)


def test_the_file_is_written_whole_and_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "pgx.json"
    old = os.umask(0o000)  # even a permissive umask gives 0600
    try:
        cred.save(path, HELD)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cred.load(path) == HELD
    assert [p.name for p in path.parent.iterdir()] == ["pgx.json"]  # no temporary left
    assert cred.load(tmp_path / "none.json") is None
    path.write_text("{not json")
    with pytest.raises(CredentialsError, match=f"{path}: not a credentials file"):
        cred.load(path)


def test_held_credentials_are_used_again_without_token_a(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pgx.json"
    cred.save(path, HELD)
    ch = FakeClearinghouse(monkeypatch, valid=True)
    assert cred.connect(CH + "/", None, "http://pgx.test", "PGX", path) == HELD
    assert ch.calls == [("GET", "token-C-held")]
    ch.valid = None  # the clearinghouse does not answer: carry on with what is held
    assert cred.connect(CH, "spent-token-A-0123456789", "http://pgx.test", "PGX", path) == HELD
    assert ("POST", "spent-token-A-0123456789") not in ch.calls


def test_a_moved_utility_rotates_and_a_refused_one_registers_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pgx.json"
    cred.save(path, HELD)
    ch = FakeClearinghouse(monkeypatch, valid=True)
    moved = cred.connect(CH, None, "http://pgx-new.test", "PGX", path)
    assert (moved.token_c, moved.my_url) == ("token-C-rotated", "http://pgx-new.test")
    assert moved.token_b != HELD.token_b and cred.load(path) == moved
    assert ch.calls[-1] == ("PUT", "token-C-held")
    ch.valid = False  # revoked
    with pytest.raises(CredentialsError, match="no longer takes the token C held in"):
        cred.connect(CH, None, "http://pgx-new.test", "PGX", path)
    again = cred.connect(CH, "new-token-A-0123456789", "http://pgx-new.test", "PGX", path)
    assert again.token_c == "token-C-registered" and cred.load(path) == again


def test_no_credentials_and_no_token_a_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeClearinghouse(monkeypatch, valid=True)
    with pytest.raises(CredentialsError) as missing:
        cred.connect(CH, None, "http://pgx.test", "PGX", tmp_path / "pgx.json")
    assert str(missing.value) == (
        f"no credentials for {CH} held in {tmp_path / 'pgx.json'}: set "
        "EVROAM_CH_REGISTRATION_TOKEN to the registration token A the clearinghouse "
        "operator issued"
    )
    # Credentials for another clearinghouse are not these.
    cred.save(tmp_path / "pgx.json", HELD)
    other = cred.connect(
        "https://other.test", "token-A-0123456789", "http://p", "PGX", tmp_path / "pgx.json"
    )
    assert other.clearinghouse_url == "https://other.test"


def test_the_default_file_is_beside_the_sqlite_database(tmp_path: Path) -> None:
    assert cred.default_file(f"sqlite:///{tmp_path / 'pgx.db'}", "PGX") == (
        tmp_path / "PGX.clearinghouse-credentials.json"
    )
    elsewhere = cred.default_file("postgresql+psycopg://u@h/db", "PGX")
    assert elsewhere.name == "PGX.clearinghouse-credentials.json"
    assert "evroam" in elsewhere.parts


def test_a_held_credentials_file_stands_in_for_token_a(tmp_path: Path) -> None:
    from evroam.core.settings import SettingError
    from evroam.utility.settings import UtilitySettings

    path = tmp_path / "pgx.json"
    options: dict[str, Any] = {"utility_id": "PGX", "ch_url": CH, "ch_credentials_file": path}
    with pytest.raises(SettingError, match="EVROAM_CH_REGISTRATION_TOKEN: not set"):
        UtilitySettings.load(**options)
    cred.save(path, HELD)
    assert UtilitySettings.load(**options).credentials_file() == path
