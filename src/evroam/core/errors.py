"""How any party refuses a message: each error names the field and the value.

Shared by the utility, the clearinghouse and the protocol adapters, so that a refusal
means the same on every wire (HTTP status, OCPI status code, OCPP CallError).
"""

from __future__ import annotations


class Refused(Exception):
    """Base: the message was not applied and nothing was written."""

    status = 400

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(f"{field}: {message} (got {value!r})")
        self.field = field
        self.value = value
        self.message = message


class Invalid(Refused):
    """Bad input (HTTP 422)."""

    status = 422


class Forbidden(Refused):
    """A gateway reporting for a premise that is not its own (HTTP 403)."""

    status = 403


class Conflict(Refused):
    """An idempotency key re-used with different content (HTTP 409)."""

    status = 409


class NotFound(Refused):
    status = 404
