"""Real-time roaming authorization: seed 1.6.4 "ESI request roaming" (the roaming utility
asks about a PEV ID at one of its premises) and "Roaming Utility/Clearing house grants
charge" (the answer names the PEV's home utility, account and premise); seed 1.6.5 "No
record in Utility/Clearinghouse" when the registry holds no valid token for it.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from evroam.clearinghouse import store
from evroam.clearinghouse.context import Context
from evroam.clearinghouse.locations import Locations
from evroam.core.errors import Conflict, Forbidden
from evroam.db import schema as s
from evroam.protocols.roaming.messages import AuthorizationInfo, AuthorizationRequest
from evroam.protocols.roaming.ports import NoRecord

# The hot path's statements, built once (SQLAlchemy then reuses their compiled form).
_AUTHORIZATION = select(s.ch_authorizations.c.pev_id, s.ch_authorizations.c.answer).where(
    s.ch_authorizations.c.roaming_utility == bindparam("roaming_utility"),
    s.ch_authorizations.c.premise_id == bindparam("premise_id"),
    s.ch_authorizations.c.session_id == bindparam("session_id"),
)
_TOKEN = select(s.ch_tokens).where(s.ch_tokens.c.pev_id == bindparam("pev_id"))
_RECORD_AUTHORIZATION = insert(s.ch_authorizations)


class Authorizations:
    def __init__(self, context: Context, locations: Locations) -> None:
        self.context = context
        self.locations = locations

    def authorization_reference(
        self, roaming_utility: str, premise_id: str, session_id: str
    ) -> str:
        """Derived, so a retried request gets the same reference (32 hex: fits OCPI's 36)."""
        key = "\x1f".join((self.context.clearinghouse_id, roaming_utility, premise_id, session_id))
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    def authorize(self, member: str, request: AuthorizationRequest) -> AuthorizationInfo:
        """May this PEV charge at this premise of the caller? Idempotent per (roaming
        utility, premise, session). A premise not in the caller's territory: Forbidden.
        Unknown, withdrawn or the caller's own PEV: NoRecord."""
        if request.roaming_utility != member:
            raise Forbidden(
                "roaming_utility",
                request.roaming_utility,
                f"a member authorizes only for itself (you are {member})",
            )
        asked = {
            "roaming_utility": member,
            "premise_id": request.premise_id,
            "session_id": request.session_id,
        }
        # One connection: read, then write only when there is something new. (On SQLite the
        # reads run outside a transaction; the insert takes the writers' lock.)
        with self.context.engine.connect() as conn:
            self.locations.check(member, request.premise_id, conn)
            held = conn.execute(_AUTHORIZATION, asked).first()
            if held is not None:
                if held.pev_id != request.pev_id:
                    raise Conflict(
                        "session_id",
                        request.session_id,
                        f"already authorized for PEV {held.pev_id}",
                    )
                return AuthorizationInfo.model_validate_json(held.answer)
            row = conn.execute(_TOKEN, {"pev_id": request.pev_id}).mappings().first()
            if row is None or not row["valid"] or row["home_utility"] == member:
                raise NoRecord(request.pev_id)
            token = store.token_of(row)
            info = AuthorizationInfo(
                allowed="ALLOWED",
                pev_id=token.pev_id,
                home_utility=token.home_utility,
                account_id=token.account_id,
                home_premise_id=token.home_premise_id,
                program_id=token.program_id,
                billing_options=token.billing_options,
                authorization_reference=self.authorization_reference(
                    member, request.premise_id, request.session_id
                ),
            )
            record = asked | {
                "authorization_reference": info.authorization_reference,
                "pev_id": info.pev_id,
                "home_utility": info.home_utility,
                "answer": info.model_dump_json(),
                "authorized_at": self.context.clock(),
            }
            try:
                with self.context.writes:
                    conn.execute(_RECORD_AUTHORIZATION, record)
                    conn.commit()
            except IntegrityError:
                conn.rollback()
                raced = True  # the same session was authorized meanwhile
            else:
                raced = False
        return self.authorize(member, request) if raced else info
