"""The member's side of the OCPI credentials module, kept across restarts.

Registration token A is single-use: a utility that exchanged it holds its token C (what it
presents to the clearinghouse) and its token B (what the clearinghouse presents to it) in a
small JSON file, mode 0600, written whole or not at all. A restarted utility reads them
back and asks the clearinghouse whether C still holds (GET /credentials): yes, or no
answer, it carries on with them; its URL changed, it rotates (PUT /credentials); refused
(revoked), it registers again, which needs a new token A from the operator.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from platformdirs import user_data_dir

from evroam.protocols.roaming.http import (
    Refused,
    Verify,
    credentials_valid,
    register,
    rotate,
)
from evroam.protocols.roaming.ports import Unavailable

FILE_MODE = 0o600


class CredentialsError(Exception):
    """The credentials cannot be had: `str()` is the one line to print."""


@dataclass(frozen=True)
class HeldCredentials:
    clearinghouse_url: str
    party_id: str
    my_url: str  # the base URL the clearinghouse calls us at
    token_c: str  # we present it to the clearinghouse
    token_b: str  # the clearinghouse presents it to us


def default_file(database_url: str, party_id: str) -> Path:
    """Beside the utility's SQLite database, else in the user's data directory."""
    name = f"{party_id}.clearinghouse-credentials.json"
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        return Path(database_url.removeprefix("sqlite:///")).parent / name
    return Path(user_data_dir("evroam", appauthor=False)) / name


def load(path: Path) -> HeldCredentials | None:
    """What the file holds; None when there is no file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return HeldCredentials(**{k: str(data[k]) for k in HeldCredentials.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CredentialsError(f"{path}: not a credentials file ({err})") from None


def save(path: Path, held: HeldCredentials) -> None:
    """Write the file readable by its owner only, replacing the old one in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(asdict(held), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def connect(
    clearinghouse_url: str,
    token_a: str | None,
    my_url: str,
    party_id: str,
    path: Path,
    *,
    verify: Verify = True,
    timeout_s: float = 5.0,
) -> HeldCredentials:
    """The credentials to use: the ones held in ``path`` when the clearinghouse still takes
    them, else a registration with ``token_a``. Raises CredentialsError, or the link's
    Refused/Unavailable when registering fails."""
    url = clearinghouse_url.rstrip("/")
    held = load(path)
    refused_c = False
    if held is not None and held.clearinghouse_url == url and held.party_id == party_id:
        try:
            valid = credentials_valid(url, held.token_c, timeout_s=timeout_s, verify=verify)
        except Unavailable:
            return held  # no answer now: what we hold is the best we have
        if valid and held.my_url == my_url:
            return held
        if valid:  # we moved: tell the clearinghouse, with a new B
            token_b = secrets.token_urlsafe(32)
            token_c = rotate(
                url,
                held.token_c,
                my_url,
                token_b,
                party_id=party_id,
                verify=verify,
                timeout_s=timeout_s,
            )
            return _kept(path, HeldCredentials(url, party_id, my_url, token_c, token_b))
        if token_a is None:
            raise CredentialsError(
                f"the clearinghouse no longer takes the token C held in {path} (revoked?): "
                "set EVROAM_CH_REGISTRATION_TOKEN to a new registration token A"
            )
        refused_c = True
    elif token_a is None:
        raise CredentialsError(
            f"no credentials for {url} held in {path}: set EVROAM_CH_REGISTRATION_TOKEN to "
            "the registration token A the clearinghouse operator issued"
        )
    token_b = secrets.token_urlsafe(32)
    try:
        token_c = register(
            url, token_a, my_url, token_b, party_id=party_id, verify=verify, timeout_s=timeout_s
        )
    except Refused as err:
        if not refused_c or err.status != 401:
            raise
        raise CredentialsError(
            f"the clearinghouse no longer takes the token C held in {path} (revoked?), nor "
            f"the registration token A ({err.message}): set EVROAM_CH_REGISTRATION_TOKEN to a "
            "new token A from the clearinghouse operator"
        ) from None
    return _kept(path, HeldCredentials(url, party_id, my_url, token_c, token_b))


def _kept(path: Path, held: HeldCredentials) -> HeldCredentials:
    save(path, held)
    return held
