"""How a station proves at the handshake that it is the registered station it names.

The registry of stations is the utility's (``StationDesk.stations``). Security profile 1
is HTTP Basic auth at the WebSocket handshake: the username must be the station's own id
(its identity is bound to its credentials) and the password must hash to the registered
``password_sha256``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from evroam.protocols.ocpp.port import StationInfo

__all__ = ["StationInfo", "authenticated", "basic_credentials", "password_digest"]


def password_digest(password: str) -> str:
    """What the territory file stores for a station password (hex SHA-256).

    Station passwords are machine secrets of 16-40 random characters (OCPP's
    AuthorizationKey), so an unsalted hash is as safe as the gateway tokens' hashes.
    """
    return hashlib.sha256(password.encode()).hexdigest()


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(username, password) of an ``Authorization: Basic ...`` header, or None."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def authenticated(header: str | None, station: StationInfo, required: bool) -> bool:
    """Whether the handshake's credentials admit this station.

    A station registered with a password must always present it, as its own id. With
    ``required`` (security profiles 1 and 2) a station without a password is refused.
    """
    if station.password_sha256 is None:
        return not required
    given = basic_credentials(header)
    if given is None:
        return False
    user, password = given
    same_user = hmac.compare_digest(user.encode(), station.id.encode())
    same_password = hmac.compare_digest(password_digest(password), station.password_sha256)
    return same_user and same_password
