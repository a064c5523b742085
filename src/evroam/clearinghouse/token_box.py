"""Token B at rest. The clearinghouse verifies tokens A and C, so it keeps only their
digests; token B it must present to the member, so a digest will not do. With a key
(EVROAM_CH_TOKEN_KEY) B is stored encrypted (Fernet: AES-128-CBC with HMAC-SHA256, from
``cryptography``) and a copy of the database alone does not let anyone post CDRs to a
member; without one it is stored in clear, and `evroam serve clearinghouse` says so.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "fernet:"


class TokenBoxError(Exception):
    """A sealed token B that this box cannot open (no key, or another key)."""


class TokenBox:
    def __init__(self, key: str | None) -> None:
        self._fernet = None if key is None else Fernet(_fernet_key(key))

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    @staticmethod
    def is_sealed(stored: str) -> bool:
        return stored.startswith(PREFIX)

    def seal(self, token: str) -> str:
        """What to store for ``token``: encrypted with the key, else as it is."""
        if self._fernet is None:
            return token
        return PREFIX + self._fernet.encrypt(token.encode("utf-8")).decode("ascii")

    def open(self, stored: str) -> str:
        """The token from what was stored (in clear, as an earlier version wrote it, too)."""
        if not self.is_sealed(stored):
            return stored
        if self._fernet is None:
            raise TokenBoxError("token B is stored encrypted: set EVROAM_CH_TOKEN_KEY")
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise TokenBoxError("token B was encrypted with another EVROAM_CH_TOKEN_KEY") from None


def _fernet_key(secret: str) -> bytes:
    """A Fernet key derived from the configured secret (any string of 16+ characters)."""
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"evroam clearinghouse token B"
    ).derive(secret.encode("utf-8"))
    return base64.urlsafe_b64encode(derived)
