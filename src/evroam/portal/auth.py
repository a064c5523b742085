"""Portal sign-in: users with argon2id password hashes, roles, sessions, throttling, CSRF.

Starlette's signed session cookie (itsdangerous) holds a random session id and the CSRF
token; the database holds the id's digest. The user is read back with the session on every
request, so signing out, a deleted user, a reset password or a changed role take effect at
once, and a copied cookie is worth nothing after sign-out. Failed sign-ins are counted per
username and per address in the database (every process of the utility sees them), and at
most HASH_SLOTS password checks run at once, so guessing cannot starve the API of CPU and
memory (each argon2id check takes 64 MiB).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, func, insert, select, update

from evroam.db import schema as s

Role = Literal["customer", "operator"]

# argon2-cffi's defaults are the RFC 9106 "low memory" profile (argon2id, 64 MiB, t=3).
_HASHER = PasswordHasher()
# Verified against when the username is unknown, so a wrong name costs as long as a wrong
# password and the response time does not tell which names exist.
_DUMMY_HASH = _HASHER.hash("not a password anyone has")

MIN_PASSWORD_LENGTH = 8
# Password checks running at once in one process; a sign-in beyond them is told to retry.
HASH_SLOTS = 2
_HASHING = threading.BoundedSemaphore(HASH_SLOTS)
_HASH_WAIT_S = 0.5


class Busy(Exception):
    """Every password-check slot is taken: retry in a moment (HTTP 429)."""


@dataclass(frozen=True)
class Throttle:
    """At most `per_user` failed sign-ins per username and `per_address` per client address
    within `window`; past that, sign-in is refused until the oldest failure ages out."""

    per_user: int = 5
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


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
    else:  # a reset password or role signs the user out everywhere
        revoke_sessions(conn, username)
    return User(username, role, utility_id, customer_id)


def delete_user(conn: Connection, username: str) -> None:
    revoke_sessions(conn, username)
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
    """The user when the password is right, else None (same cost either way).

    Raises Busy when every password-check slot stays taken for half a second."""
    table = s.portal_users
    row = conn.execute(select(table.c.password_hash).where(table.c.username == username)).first()
    stored = row[0] if row is not None else _DUMMY_HASH
    if not _HASHING.acquire(timeout=_HASH_WAIT_S):
        raise Busy
    try:
        _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    finally:
        _HASHING.release()
    if row is None:
        return None
    if _HASHER.check_needs_rehash(stored):  # parameters were raised since it was stored
        conn.execute(
            update(table)
            .where(table.c.username == username)
            .values(password_hash=_HASHER.hash(password))
        )
    return load_user(conn, username)


# --- sessions: a random id in the cookie, its digest in the database ---------------------


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(conn: Connection, username: str, now: datetime, max_age: timedelta) -> str:
    """A new session for the user; returns the id the cookie carries."""
    session_id = secrets.token_urlsafe(32)
    conn.execute(
        insert(s.portal_sessions).values(
            id_digest=_digest(session_id),
            username=username,
            created_at=now,
            expires_at=now + max_age,
        )
    )
    return session_id


def session_user(conn: Connection, session_id: str, now: datetime) -> User | None:
    """The user of a live session, or None when it was closed, revoked or has expired."""
    u, ps = s.portal_users, s.portal_sessions
    row = conn.execute(
        select(u.c.username, u.c.role, u.c.utility_id, u.c.customer_id)
        .join(ps, ps.c.username == u.c.username)
        .where(ps.c.id_digest == _digest(session_id), ps.c.expires_at > now)
    ).first()
    return None if row is None else User(row[0], row[1], row[2], row[3])


def close_session(conn: Connection, session_id: str) -> None:
    conn.execute(
        delete(s.portal_sessions).where(s.portal_sessions.c.id_digest == _digest(session_id))
    )


def revoke_sessions(conn: Connection, username: str) -> None:
    conn.execute(delete(s.portal_sessions).where(s.portal_sessions.c.username == username))


# --- throttling failed sign-ins ------------------------------------------------------------


def throttle_keys(username: str, address: str | None) -> tuple[str, ...]:
    user_key = f"user:{username[:64]}"
    return (user_key,) if address is None else (user_key, f"addr:{address[:64]}")


def retry_after(
    conn: Connection, keys: tuple[str, ...], now: datetime, throttle: Throttle
) -> int | None:
    """Seconds until a sign-in may be tried again, or None when it may be tried now."""
    f = s.portal_sign_in_failures
    since = now - throttle.window
    wait: int | None = None
    for key in keys:
        limit = throttle.per_user if key.startswith("user:") else throttle.per_address
        count, oldest = conn.execute(
            select(func.count(), func.min(f.c.at)).where(f.c.key == key, f.c.at > since)
        ).one()
        if count >= limit and oldest is not None:
            seconds = max(1, int((oldest + throttle.window - now).total_seconds()) + 1)
            wait = max(wait or 0, seconds)
    return wait


def record_failure(
    conn: Connection, keys: tuple[str, ...], now: datetime, throttle: Throttle
) -> None:
    f = s.portal_sign_in_failures
    conn.execute(insert(f), [{"key": key, "at": now} for key in keys])
    # Failures older than the window count for nothing: drop this key's, keep the table small.
    conn.execute(delete(f).where(f.c.key.in_(keys), f.c.at <= now - throttle.window))


def clear_failures(conn: Connection, username: str) -> None:
    f = s.portal_sign_in_failures
    conn.execute(delete(f).where(f.c.key == throttle_keys(username, None)[0]))


# --- CSRF: one random token per browser session, sent back in every form ----------------

CSRF_FIELD = "csrf_token"


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
