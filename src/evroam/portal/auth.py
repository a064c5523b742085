"""Portal sign-in: users with argon2id password hashes, roles, and CSRF tokens.

Who is signed in lives in Starlette's signed session cookie (itsdangerous); the cookie holds
only the username and the CSRF token, and the user is read back from the database on every
request, so a deleted user or a changed role takes effect at once.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, insert, select, update

from evroam.db import schema as s

Role = Literal["customer", "operator"]

# argon2-cffi's defaults are the RFC 9106 "low memory" profile (argon2id, 64 MiB, t=3).
_HASHER = PasswordHasher()
# Verified against when the username is unknown, so a wrong name costs as long as a wrong
# password and the response time does not tell which names exist.
_DUMMY_HASH = _HASHER.hash("not a password anyone has")

MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    utility_id: str
    customer_id: str | None


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def save_user(
    conn: Connection,
    username: str,
    password: str,
    *,
    role: Role,
    utility_id: str,
    customer_id: str | None = None,
    now: datetime,
) -> User:
    """Create the user, or reset its password and role when it exists."""
    return save_user_hash(
        conn,
        username,
        hash_password(password),
        role=role,
        utility_id=utility_id,
        customer_id=customer_id,
        now=now,
    )


def save_user_hash(
    conn: Connection,
    username: str,
    password_hash: str,
    *,
    role: Role,
    utility_id: str,
    customer_id: str | None = None,
    now: datetime,
) -> User:
    """save_user with the hash already made (one hash for many demo logins)."""
    if role == "customer" and not customer_id:
        raise ValueError("customer_id: a customer login needs the customer it belongs to")
    if role == "operator" and customer_id:
        raise ValueError("customer_id: an operator login belongs to no customer")
    if not password_hash.startswith("$argon2"):
        raise ValueError("password_hash: not an argon2 hash")
    row = {
        "role": role,
        "utility_id": utility_id,
        "customer_id": customer_id,
        "password_hash": password_hash,
    }
    table = s.portal_users
    done = conn.execute(update(table).where(table.c.username == username).values(row))
    if done.rowcount == 0:
        conn.execute(insert(table).values(username=username, created_at=now, **row))
    return User(username, role, utility_id, customer_id)


def delete_user(conn: Connection, username: str) -> None:
    conn.execute(delete(s.portal_users).where(s.portal_users.c.username == username))


def load_user(conn: Connection, username: str) -> User | None:
    row = (
        conn.execute(select(s.portal_users).where(s.portal_users.c.username == username))
        .mappings()
        .first()
    )
    if row is None:
        return None
    return User(row["username"], row["role"], row["utility_id"], row["customer_id"])


def authenticate(conn: Connection, username: str, password: str) -> User | None:
    """The user when the password is right, else None (same cost either way)."""
    table = s.portal_users
    row = conn.execute(select(table.c.password_hash).where(table.c.username == username)).first()
    stored = row[0] if row is not None else _DUMMY_HASH
    try:
        _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _HASHER.check_needs_rehash(stored):  # parameters were raised since it was stored
        conn.execute(
            update(table)
            .where(table.c.username == username)
            .values(password_hash=_HASHER.hash(password))
        )
    return load_user(conn, username)


# --- CSRF: one random token per browser session, sent back in every form ----------------

CSRF_FIELD = "csrf_token"


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
