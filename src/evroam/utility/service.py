"""The utility's use cases: bind, answer Energy Requests, record readings and reports, rate.

Each method is one transaction: it loads through the store, applies the pure rules
(payer, planning, rating), saves, and returns the seed's message. Every message a gateway
may retry is idempotent: the same key with the same content returns the stored result,
with different content it is refused.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from evroam.core.clock import Clock, is_aligned
from evroam.core.errors import Conflict, Forbidden, Invalid, NotFound
from evroam.core.messages import (
    BindRequest,
    BindResult,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    LoadControlNotice,
    ScheduleSlot,
    ScheduleUpdate,
    ScheduleUpdates,
    SessionReport,
)
from evroam.core.rating import RatingContext, price_at
from evroam.db import schema as s
from evroam.protocols.roaming.messages import (
    AuthorizationRequest,
    ChargeTransaction,
    PostingAck,
)
from evroam.protocols.roaming.ports import ClearinghouseLink, NoRecord, Unavailable
from evroam.territory.model import Premise, Program
from evroam.territory.store import read_territory
from evroam.utility import roaming
from evroam.utility.bill_store import cycles_with_charges, issue_cycle
from evroam.utility.billing import Bill
from evroam.utility.cycles import cycle_of
from evroam.utility.events import participation
from evroam.utility.ledger import held_lines
from evroam.utility.payer import Conditions, PayerDecision, Roaming, decide
from evroam.utility.planning import (
    FeederSession,
    LoadControlEvent,
    allocate_feeder,
    kept_plans_fit,
    plan_request,
    resolve_preference,
    unmanaged_schedule,
)
from evroam.utility.prices import published_prices
from evroam.utility.rate_session import SessionRater, ledger_changes, report_interval
from evroam.utility.readings_store import check_same, insert_new, reading_key
from evroam.utility.registry import Registry

log = logging.getLogger(__name__)

# A reading may start this far after the utility's clock (gateway clocks drift).
CLOCK_SKEW = timedelta(minutes=5)
# How long a checked gateway token is trusted without asking the database again.
TOKEN_MEMORY_S = 30.0
# At most this many schedule updates per poll.
SCHEDULE_PAGE = 500


@dataclass(frozen=True)
class ReadingsAck:
    """What a batch of readings did: `accepted` new rows, `duplicates` already held."""

    accepted: int
    duplicates: int


class UtilityService:
    def __init__(
        self,
        engine: Engine,
        utility_id: str,
        clock: Clock,
        *,
        random_delay_max_s: int = 600,
        rng_seed: int | str = 0,
        alm_share: Decimal = Decimal(1),
        clearinghouse: ClearinghouseLink | None = None,
    ) -> None:
        self.engine = engine
        self.utility_id = utility_id
        self.clock = clock
        # Seed 1.6.x: "short, randomized charging delay to promote grid stability".
        self.random_delay_max_s = random_delay_max_s
        self.rng_seed = rng_seed
        # The share of a feeder's capacity active load management may hand to PEVs; the rest
        # is kept for the load it does not see (docs/planning.md, "Feeder capacity").
        if not Decimal(0) <= alm_share <= Decimal(1):
            raise ValueError(f"alm_share must be within 0..1, got {alm_share}")
        self.alm_share = alm_share
        # Where PEVs of other utilities are confirmed and roaming claims sent (seed 1.6.4).
        self.clearinghouse = clearinghouse
        self._claims_waiting = True  # claims may be left unsent by an earlier process
        self._registry: Registry | None = None
        self._rater: SessionRater | None = None
        self._tokens: dict[str, tuple[str, float]] = {}  # digest -> (premise, valid until)

    # --- registry ----------------------------------------------------------------------

    def registry(self) -> Registry:
        if self._registry is None:
            with self.engine.connect() as conn:
                territory = read_territory(conn)
            if territory is None:
                raise NotFound("utility_id", self.utility_id, "no territory loaded")
            try:
                self._registry = Registry.of(territory, self.utility_id)
            except KeyError:
                raise NotFound("utility_id", self.utility_id, "unknown utility") from None
            with self.engine.connect() as conn:
                prices = published_prices(conn, self.utility_id)
            self._rater = SessionRater(self._registry.utility, prices)
        return self._registry

    def reload(self) -> None:
        """Forget the cached registry and prices (after a territory load or a publication)."""
        self._registry = None
        self._rater = None

    def _premise(self, gateway_premise: str, claimed: str, field: str = "premise_id") -> Premise:
        """The gateway's own premise; a gateway can only speak for the premise it serves."""
        if claimed != gateway_premise:
            raise Forbidden(field, claimed, f"this gateway serves premise {gateway_premise!r}")
        premise = self.registry().premises.get(claimed)
        if premise is None:
            raise Invalid(field, claimed, f"unknown premise in utility {self.utility_id}")
        return premise

    # --- gateway credentials ---------------------------------------------------------------

    def issue_gateway_token(self, premise_id: str) -> str:
        """A new bearer token for the premise's gateway; any earlier one stops working."""
        if premise_id not in self.registry().premises:
            raise Invalid("premise_id", premise_id, f"unknown premise in utility {self.utility_id}")
        token = secrets.token_urlsafe(32)
        self._tokens.clear()
        row = {"token_sha256": _digest(token), "issued_at": self.clock()}
        with self.engine.begin() as conn:
            done = conn.execute(
                update(s.gateway_credentials)
                .where(s.gateway_credentials.c.premise_id == premise_id)
                .values(row)
            )
            if done.rowcount == 0:
                conn.execute(insert(s.gateway_credentials).values(premise_id=premise_id, **row))
        return token

    def premise_for_token(self, token: str) -> str | None:
        """The premise a bearer token speaks for; remembered briefly (tokens are rotated by
        other processes, so the memory expires rather than lasting forever)."""
        digest = _digest(token)
        now = time.monotonic()
        held = self._tokens.get(digest)
        if held is not None and held[1] > now:
            return held[0]
        premise = self._premise_for_digest(digest)
        if premise is not None:
            self._tokens[digest] = (premise, now + TOKEN_MEMORY_S)
        return premise

    def _premise_for_digest(self, digest: str) -> str | None:
        with self.engine.connect() as conn:
            premise_id = conn.execute(
                select(s.gateway_credentials.c.premise_id).where(
                    s.gateway_credentials.c.token_sha256 == digest
                )
            ).scalar()
        if premise_id is None or premise_id not in self.registry().premises:
            return None
        return str(premise_id)

    # --- bind (seed: "PEV/ESI binds", "Utility validates") --------------------------------

    def bind(self, gateway_premise: str, request: BindRequest, eumd_ok: bool = True) -> BindResult:
        premise = self._premise(gateway_premise, request.premise_id)
        with self.engine.connect() as conn:
            existing = self._session(conn, premise.id, request.session_id)
        if existing is not None:
            return _same_bind(existing, request)
        registry = self.registry()
        at = registry.portals.get(request.portal_id)
        pev = registry.pevs.get(request.pev_id) if request.pev_id else None
        seen = Conditions(
            pev_id=request.pev_id,
            eumd_ok=eumd_ok,
            portal_at_premise=at is not None and at[0].id == premise.id,
        )
        roaming, reference = None, None
        if pev is None and request.pev_id and seen.portal_at_premise:
            roaming, reference, answered = self._ask_clearinghouse(premise.id, request)
            seen = Conditions(
                pev_id=seen.pev_id,
                eumd_ok=eumd_ok,
                portal_at_premise=True,
                clearinghouse_ok=answered,
                clearinghouse_asked=self.clearinghouse is not None,
            )
        decision = decide(registry.utility, premise, pev, seen, roaming)
        row = self._session_row(premise, request, decision)
        if decision.case == "roaming" and roaming is not None:
            row |= {
                "home_utility": roaming.home_utility,
                "billing_option": roaming.billing_option,
                "authorization_reference": reference,
            }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(s.sessions).values(row))
        except IntegrityError:
            # A retry raced the first bind: the stored session is the answer.
            with self.engine.connect() as conn:
                existing = self._session(conn, premise.id, request.session_id)
            if existing is None:
                raise
            return _same_bind(existing, request)
        return _bind_result(row)

    def _ask_clearinghouse(
        self, premise_id: str, request: BindRequest
    ) -> tuple[Roaming | None, str | None, bool]:
        """Is this unknown PEV enrolled with another utility? (roaming, reference, answered).

        No record, or a PEV its home utility does not allow, is scenario 5 (not a failure);
        no answer in time is a fallback, and the session says so."""
        if self.clearinghouse is None or request.pev_id is None:
            return None, None, True
        try:
            info = self.clearinghouse.authorize(
                AuthorizationRequest(
                    pev_id=request.pev_id,
                    premise_id=premise_id,
                    roaming_utility=self.utility_id,
                    session_id=request.session_id,
                )
            )
        except NoRecord:
            return None, None, True
        except Unavailable:
            return None, None, False
        if info.allowed != "ALLOWED" or not info.billing_options:
            return None, None, True
        wanted = request.billing_option or "home_program"
        option = wanted if wanted in info.billing_options else info.billing_options[0]
        return (
            Roaming(info.home_utility, info.account_id, info.program_id, option),
            info.authorization_reference,
            True,
        )

    def _session_row(
        self, premise: Premise, request: BindRequest, decision: PayerDecision
    ) -> dict[str, Any]:
        return {
            "premise_id": premise.id,
            "session_id": request.session_id,
            "utility_id": self.utility_id,
            "portal_id": request.portal_id,
            "pev_id": request.pev_id,
            "plugged_in_at": request.plugged_in_at,
            **_decision_columns(decision),
            "closed": False,
        }

    @staticmethod
    def _session(conn: Connection, premise_id: str, session_id: str) -> dict[str, Any] | None:
        row = (
            conn.execute(
                select(s.sessions).where(
                    s.sessions.c.premise_id == premise_id, s.sessions.c.session_id == session_id
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row is not None else None

    # --- Energy Request -> Energy Available -------------------------------------------------

    def request_energy(self, gateway_premise: str, request: EnergyRequest) -> EnergyAvailable:
        """Answer an Energy Request. A PEV under active load management on a feeder is
        planned with every open ALM session on that feeder (one LP); the others' changed
        schedules are recorded for their gateways to pull (``schedules``)."""
        registry = self.registry()
        premise = registry.premises[gateway_premise]
        now = self.clock()
        with self.engine.begin() as conn:
            session = self._session(conn, premise.id, request.session_id)
            if session is None:
                raise NotFound("session_id", request.session_id, "bind the PEV first")
            if session["energy_request"] == request.model_dump_json():
                return EnergyAvailable.model_validate_json(session["energy_available"])
            where = (s.sessions.c.premise_id == premise.id) & (
                s.sessions.c.session_id == request.session_id
            )
            conn.execute(
                update(s.sessions).where(where).values(energy_request=request.model_dump_json())
            )
            feeder = self._alm_feeder(session)
            if feeder is not None:
                key = (premise.id, request.session_id)
                plans = self._replan_feeder(
                    conn, feeder, now, f"arrival of {request.session_id}", fresh={key}
                )
                if key in plans:
                    return plans[key]
            answer = self._plan(conn, session, request)
            conn.execute(
                update(s.sessions).where(where).values(energy_available=answer.model_dump_json())
            )
            self._record_version(conn, session, None, now, "energy request", answer)
        return answer

    def _plan(
        self,
        conn: Connection,
        session: dict[str, Any],
        request: EnergyRequest,
        *,
        delay: bool = True,
    ) -> EnergyAvailable:
        """The program's answer: shaped by prices, events, the portal and a random delay."""
        registry = self.registry()
        assert self._rater is not None
        _, portal = registry.portals[session["portal_id"]]
        pev = registry.pevs.get(session["pev_id"] or "")
        program = self._program(session["program_id"])
        context, tariff_id = self._rater.context, session["tariff_id"]
        premise = registry.premises[session["premise_id"]]
        now = self.clock()
        events = self._events(conn, premise.feeder, now, request.departure_at)
        return plan_request(
            now=now,
            request=request,
            max_w_pev=pev.max_w() if pev else request.max_w,
            portal_rating_w=portal.rating_w(),
            program_kind=program.kind if program else None,
            price_of_slot=lambda at: price_at(context, tariff_id, at).price_per_kwh,
            events=events,
            random_delay_max_s=self.random_delay_max_s if delay else 0,
            rng_seed=self.rng_seed,
            feeder_id=premise.feeder,
            zone=context.zone,
        )

    # --- active load management: re-plan a feeder, tell the gateways ----------------------

    def _program(self, program_id: str | None) -> Program | None:
        return next((p for p in self.registry().utility.programs if p.id == program_id), None)

    def _alm_feeder(self, session: dict[str, Any]) -> str | None:
        """The feeder whose capacity the session shares, or None when it is planned alone."""
        program = self._program(session["program_id"])
        premise = self.registry().premises.get(session["premise_id"])
        if (
            not session["bound"]
            or program is None
            or program.kind != "active_load_management"
            or premise is None
        ):
            return None
        return premise.feeder

    def feeder_capacity_w(self, feeder_id: str) -> int:
        """What ALM may hand out on the feeder: its capacity times ``alm_share``."""
        feeder = next(f for f in self.registry().utility.feeders if f.id == feeder_id)
        return int(feeder.capacity_kw * 1000 * self.alm_share)

    def replan_feeder(self, feeder_id: str, reason: str = "re-plan") -> list[str]:
        """Re-plan every open ALM session on the feeder now; the ids whose plan changed."""
        before = self.latest_schedule_version()
        with self.engine.begin() as conn:
            self._replan_feeder(conn, feeder_id, self.clock(), reason)
            rows = conn.execute(
                select(s.schedule_versions.c.session_id)
                .where(
                    s.schedule_versions.c.utility_id == self.utility_id,
                    s.schedule_versions.c.version > before,
                )
                .order_by(s.schedule_versions.c.version)
            ).scalars()
            return list(rows)

    def _replan_feeder(
        self,
        conn: Connection,
        feeder_id: str,
        now: datetime,
        reason: str,
        fresh: Iterable[tuple[str, str]] = (),
    ) -> dict[tuple[str, str], EnergyAvailable]:
        """One LP over the open ALM sessions on the feeder, from ``now``.

        What each still needs is its request minus what it has drawn: the EUMD's readings up
        to the end of the last one, and from there to now what the plans in force scheduled
        (readings arrive late; the schedule is what the PEV follows). A session whose last
        plan met its request is ``committed``: a newcomer cannot take its energy while the
        feeder can serve both. Plans whose remaining profile changed are stored and recorded
        as a new version; returns every session's plan, by (premise, session).
        """
        registry = self.registry()
        assert self._rater is not None
        premises = [p.id for p in registry.premises.values() if p.feeder == feeder_id]
        alm = [p.id for p in registry.utility.programs if p.kind == "active_load_management"]
        rows = [
            dict(r)
            for r in conn.execute(
                select(s.sessions)
                .where(
                    s.sessions.c.utility_id == self.utility_id,
                    s.sessions.c.premise_id.in_(premises),
                    s.sessions.c.program_id.in_(alm),
                    s.sessions.c.bound,
                    s.sessions.c.closed.is_(False),
                    s.sessions.c.energy_request.is_not(None),
                )
                .order_by(s.sessions.c.plugged_in_at, s.sessions.c.session_id)
            ).mappings()
        ]
        if not rows:
            return {}
        keys = [(r["premise_id"], r["session_id"]) for r in rows]
        history = self._versions(conn, keys)
        metered = _metered(conn, keys)
        fresh_keys = set(fresh)
        context = self._rater.context
        prices: dict[str, Callable[[datetime], Decimal]] = {}
        planned: list[tuple[dict[str, Any], EnergyRequest, FeederSession]] = []
        for row, key in zip(rows, keys, strict=True):
            request = EnergyRequest.model_validate_json(row["energy_request"])
            versions = history.get(key, [])
            drawn = delivered_wh(versions, *metered.get(key, (0, None)), row["plugged_in_at"], now)
            remaining = request.energy_wh - drawn
            if remaining <= 0 or request.departure_at <= now:
                continue
            tariff_id = row["tariff_id"]
            if tariff_id not in prices:
                prices[tariff_id] = _price_signal(context, tariff_id)
            _, portal = registry.portals[row["portal_id"]]
            pev = registry.pevs.get(row["pev_id"] or "")
            promised = (
                bool(versions)
                and versions[-1][1].shortfall_reason is None
                and key not in fresh_keys
            )
            planned.append(
                (
                    row,
                    request,
                    FeederSession(
                        session_id=str(len(planned)),
                        remaining_wh=remaining,
                        max_w=min(
                            pev.max_w() if pev else request.max_w,
                            portal.rating_w(),
                            request.max_w,
                        ),
                        departure_at=request.departure_at,
                        preference=resolve_preference(request.preference, "active_load_management"),
                        price_of_slot=prices[tariff_id],
                        committed=promised,
                    ),
                )
            )
        if not planned:
            return {}
        last = max(r.departure_at for _, r, _ in planned)
        events = self._events(conn, feeder_id, now, last)
        capacity_w = self.feeder_capacity_w(feeder_id)
        allocation = allocate_feeder(
            now, [f for _, _, f in planned], capacity_w, events, feeder_id=feeder_id
        )
        plans: dict[tuple[str, str], EnergyAvailable] = {}
        # Re-cutting the plans at a mid-slot instant floors every PEV's Wh afresh (the part
        # slot, the Wh already drawn); on a feeder saturated to the watt through their stays
        # that can leave a promise a few Wh short although the plans in force keep it. Then
        # the plans in force that keep their promise stay as they are, and the other sessions
        # share what they leave: a re-plan never breaks a promise the feeder is keeping.
        keep = [
            (key, item)
            for row, request, item in planned
            for key in [(row["premise_id"], row["session_id"])]
            if item.committed
            and _keeps_promise(
                history.get(key, []), *metered.get(key, (0, None)), row["plugged_in_at"], request
            )
        ]
        if any(allocation.shortfall_wh[item.session_id] > 0 for _, item in keep):
            kept = [(history[key][-1][1].schedule, item.max_w) for key, item in keep]
            if kept_plans_fit(now, kept, capacity_w, events, feeder_id=feeder_id):
                plans = {key: history[key][-1][1] for key, _ in keep}
                planned = [
                    p for p in planned if (p[0]["premise_id"], p[0]["session_id"]) not in plans
                ]
                allocation = allocate_feeder(
                    now,
                    [f for _, _, f in planned],
                    capacity_w,
                    events,
                    feeder_id=feeder_id,
                    kept=[schedule for schedule, _ in kept],
                )
        for row, _, item in planned:
            key = (row["premise_id"], row["session_id"])
            answer = allocation.energy_available(item.session_id).model_copy(
                update={"session_id": row["session_id"]}
            )
            plans[key] = answer
            versions = history.get(key, [])
            if versions and _profile(versions[-1][1].schedule, now) == _profile(
                answer.schedule, now
            ):
                plans[key] = versions[-1][1]
                continue
            conn.execute(
                update(s.sessions)
                .where(
                    s.sessions.c.premise_id == key[0],
                    s.sessions.c.session_id == key[1],
                )
                .values(energy_available=answer.model_dump_json())
            )
            self._record_version(conn, row, feeder_id, now, reason, answer)
        return plans

    def _replan_alone(
        self, conn: Connection, session: dict[str, Any], now: datetime, reason: str
    ) -> None:
        """Re-plan one open session outside ALM from now (an event was declared)."""
        request = EnergyRequest.model_validate_json(session["energy_request"])
        key = (session["premise_id"], session["session_id"])
        versions = self._versions(conn, [key]).get(key, [])
        drawn = delivered_wh(
            versions, *_metered(conn, [key]).get(key, (0, None)), session["plugged_in_at"], now
        )
        remaining = request.energy_wh - drawn
        if remaining <= 0 or request.departure_at <= now:
            return
        answer = self._plan(
            conn, session, request.model_copy(update={"energy_wh": remaining}), delay=False
        )
        if versions and _profile(versions[-1][1].schedule, now) == _profile(answer.schedule, now):
            return
        conn.execute(
            update(s.sessions)
            .where(s.sessions.c.premise_id == key[0], s.sessions.c.session_id == key[1])
            .values(energy_available=answer.model_dump_json())
        )
        self._record_version(conn, session, None, now, reason, answer)

    def _record_version(
        self,
        conn: Connection,
        session: dict[str, Any],
        feeder_id: str | None,
        planned_at: datetime,
        reason: str,
        answer: EnergyAvailable,
    ) -> None:
        conn.execute(
            insert(s.schedule_versions).values(
                utility_id=self.utility_id,
                premise_id=session["premise_id"],
                session_id=session["session_id"],
                feeder_id=feeder_id,
                planned_at=planned_at,
                reason=reason[:200],
                energy_available=answer.model_dump_json(),
            )
        )

    @staticmethod
    def _versions(
        conn: Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[datetime, EnergyAvailable]]]:
        """Every plan of the sessions, oldest first: (in force from, Energy Available)."""
        table = s.schedule_versions
        found: dict[tuple[str, str], list[tuple[datetime, EnergyAvailable]]] = {}
        for premise_id in sorted({p for p, _ in keys}):
            ids = [sid for p, sid in keys if p == premise_id]
            rows = conn.execute(
                select(table.c.session_id, table.c.planned_at, table.c.energy_available)
                .where(table.c.premise_id == premise_id, table.c.session_id.in_(ids))
                .order_by(table.c.version)
            )
            for session_id, planned_at, body in rows:
                found.setdefault((premise_id, session_id), []).append(
                    (planned_at, EnergyAvailable.model_validate_json(body))
                )
        return found

    def schedules(
        self, gateway_premise: str, after: int = 0, limit: int = SCHEDULE_PAGE
    ) -> ScheduleUpdates:
        """The premise's plans recorded after version ``after``, oldest first (gateway pull)."""
        if gateway_premise not in self.registry().premises:
            raise Invalid("premise_id", gateway_premise, "unknown premise")
        table = s.schedule_versions
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table)
                .where(table.c.premise_id == gateway_premise, table.c.version > after)
                .order_by(table.c.version)
                .limit(max(1, min(limit, SCHEDULE_PAGE)))
            ).mappings()
            updates = tuple(
                ScheduleUpdate(
                    version=r["version"],
                    premise_id=r["premise_id"],
                    session_id=r["session_id"],
                    planned_at=r["planned_at"],
                    reason=r["reason"],
                    available=EnergyAvailable.model_validate_json(r["energy_available"]),
                )
                for r in rows
            )
        return ScheduleUpdates(updates=updates, cursor=updates[-1].version if updates else after)

    def latest_schedule_version(self) -> int:
        """The newest plan version of this utility (0: none yet); cheap to poll."""
        table = s.schedule_versions
        with self.engine.connect() as conn:
            latest = conn.execute(
                select(func.max(table.c.version)).where(table.c.utility_id == self.utility_id)
            ).scalar()
        return int(latest or 0)

    # --- EUMD interval readings -----------------------------------------------------------

    def record_readings(
        self, gateway_premise: str, readings: Sequence[IntervalReading]
    ) -> ReadingsAck:
        """Store a batch in one transaction; duplicates are acknowledged, never re-applied."""
        premise = self.registry().premises.get(gateway_premise)
        if premise is None:
            raise Invalid("premise_id", gateway_premise, "unknown premise")
        limit = self.clock() + CLOCK_SKEW
        rows = []
        for i, r in enumerate(readings):
            if r.premise_id != gateway_premise:
                self._premise(gateway_premise, r.premise_id, f"readings[{i}].premise_id")
            if premise.eumd is None or r.eumd_id != premise.eumd.id:
                raise Invalid(f"readings[{i}].eumd_id", r.eumd_id, "not this premise's EUMD")
            if r.interval_s != premise.eumd.interval_s:
                raise Invalid(
                    f"readings[{i}].interval_s",
                    r.interval_s,
                    f"this EUMD is configured for {premise.eumd.interval_s} s intervals",
                )
            if not is_aligned(r.interval_start_at, r.interval_s):
                raise Invalid(
                    f"readings[{i}].interval_start_at",
                    r.interval_start_at.isoformat(),
                    f"not aligned to the {r.interval_s} s interval",
                )
            # The last interval of a session may be partial and reported at unplug, before
            # its end; an interval that has not even started is a clock error.
            if r.interval_start_at > limit:
                raise Invalid(
                    f"readings[{i}].interval_start_at",
                    r.interval_start_at.isoformat(),
                    "interval starts in the future",
                )
            rows.append(r.model_dump())
        if not rows:
            return ReadingsAck(0, 0)
        with self.engine.begin() as conn:
            inserted = insert_new(conn, rows)
            clashes = [r for r in rows if reading_key(r) not in inserted]
            check_same(conn, clashes)
            touched = sorted({r["session_id"] for r in rows if reading_key(r) in inserted})
            if touched:
                closed = conn.execute(
                    select(s.sessions).where(
                        s.sessions.c.premise_id == premise.id,
                        s.sessions.c.session_id.in_(touched),
                        s.sessions.c.closed,
                    )
                ).mappings()
                for session in closed:
                    self._rate(conn, dict(session))  # late data: append the adjustment
        self.send_claims()
        return ReadingsAck(accepted=len(inserted), duplicates=len(rows) - len(inserted))

    # --- session report (seed: "ESI communicates results to Utility") ---------------------

    def report_session(self, gateway_premise: str, report: SessionReport) -> None:
        premise = self._premise(gateway_premise, report.premise_id)
        row = report.model_dump()
        with self.engine.begin() as conn:
            stored = (
                conn.execute(
                    select(s.session_reports).where(
                        s.session_reports.c.premise_id == premise.id,
                        s.session_reports.c.session_id == report.session_id,
                    )
                )
                .mappings()
                .first()
            )
            if stored is not None:
                if any(stored[k] != v for k, v in row.items()):
                    raise Conflict(
                        "session_id", report.session_id, "already reported with other content"
                    )
                return
            conn.execute(insert(s.session_reports).values(**row, received_at=self.clock()))
            session = self._session(conn, premise.id, report.session_id)
            if session is None:
                # Never bound: the gateway could not reach us at plug-in (1.4.1 fallback).
                request = BindRequest(
                    session_id=report.session_id,
                    premise_id=premise.id,
                    portal_id=report.portal_id,
                    pev_id=report.pev_id,
                    plugged_in_at=report.started_at,
                )
                decision = decide(
                    self.registry().utility,
                    premise,
                    self.registry().pevs.get(report.pev_id or ""),
                    Conditions(pev_id=report.pev_id, comms_ok=False),
                )
                session = self._session_row(premise, request, decision)
                conn.execute(insert(s.sessions).values(session))
            elif not report.metered and session["bound"]:
                # The EUMD failed during the session: 1.4.1, premise pays at its default.
                roaming = None
                if session["case"] == "roaming":
                    roaming = Roaming(
                        session["home_utility"],
                        session["payer_account"],
                        session["program_id"],
                        session["billing_option"],
                    )
                decision = decide(
                    self.registry().utility,
                    premise,
                    self.registry().pevs.get(report.pev_id or ""),
                    Conditions(pev_id=report.pev_id, eumd_ok=False),
                    roaming,
                )
                session |= _decision_columns(decision)
            closing = {
                "ended_at": report.ended_at,
                "reported_energy_wh": report.energy_wh,
                "metered": report.metered,
                "closed": True,
            }
            closing |= {k: session[k] for k in _DECISION}
            conn.execute(
                update(s.sessions)
                .where(
                    s.sessions.c.premise_id == premise.id,
                    s.sessions.c.session_id == report.session_id,
                )
                .values(closing)
            )
            self._rate(conn, session | closing)
            self._participate(conn, session | closing)
            feeder = self._alm_feeder(session)
            if feeder is not None:  # its share of the feeder is free for the others
                self._replan_feeder(conn, feeder, self.clock(), f"departure of {report.session_id}")
        self.send_claims()

    # --- load-control events (seed: Direct Load Control) ----------------------------------

    def declare_event(self, notice: LoadControlNotice) -> None:
        """Record an event; sessions planned from now on respect it. Idempotent by event id."""
        if notice.feeder_id is not None and notice.feeder_id not in {
            f.id for f in self.registry().utility.feeders
        }:
            raise Invalid("feeder_id", notice.feeder_id, f"unknown feeder in {self.utility_id}")
        row = notice.model_dump() | {"id": notice.event_id, "utility_id": self.utility_id}
        del row["event_id"]
        table = s.load_control_events
        with self.engine.begin() as conn:
            held = (
                conn.execute(select(table).where(table.c.id == notice.event_id)).mappings().first()
            )
            if held is not None:
                if any(held[k] != v for k, v in row.items()):
                    raise Conflict("event_id", notice.event_id, "already declared otherwise")
                return
            conn.execute(insert(table).values(**row, declared_at=self.clock()))
            self._replan_for_event(conn, notice)

    def _replan_for_event(self, conn: Connection, notice: LoadControlNotice) -> None:
        """Re-plan the open sessions the event reaches: each ALM feeder in scope as a whole,
        every other planned session alone (its remaining energy, from now)."""
        registry = self.registry()
        now = self.clock()
        if notice.end_at <= now:
            return
        reason = f"load-control event {notice.event_id}"
        feeders = [
            f.id
            for f in registry.utility.feeders
            if notice.feeder_id is None or f.id == notice.feeder_id
        ]
        for feeder_id in feeders:
            self._replan_feeder(conn, feeder_id, now, reason)
        in_scope = [
            p.id
            for p in registry.premises.values()
            if notice.feeder_id is None or p.feeder == notice.feeder_id
        ]
        rows = conn.execute(
            select(s.sessions).where(
                s.sessions.c.utility_id == self.utility_id,
                s.sessions.c.premise_id.in_(in_scope),
                s.sessions.c.bound,
                s.sessions.c.closed.is_(False),
                s.sessions.c.energy_request.is_not(None),
            )
        ).mappings()
        for row in [dict(r) for r in rows]:
            if self._alm_feeder(row) is None:
                self._replan_alone(conn, row, now, reason)

    def _events(
        self, conn: Connection, feeder_id: str | None, start: datetime, end: datetime
    ) -> list[LoadControlEvent]:
        """Events of this utility in scope of the feeder that overlap [start, end)."""
        table = s.load_control_events
        rows = conn.execute(
            select(table).where(
                table.c.utility_id == self.utility_id,
                table.c.start_at < end,
                table.c.end_at > start,
                (table.c.feeder_id.is_(None)) | (table.c.feeder_id == feeder_id),
            )
        ).mappings()
        return [LoadControlEvent.from_row(r) for r in rows]

    def _participate(self, conn: Connection, session: dict[str, Any]) -> None:
        """Record the session's part in every event it was plugged in for, with its credit."""
        registry = self.registry()
        program = next(
            (p for p in registry.utility.programs if p.id == session["program_id"]), None
        )
        if not session["bound"] or program is None or session["ended_at"] is None:
            return
        premise = registry.premises[session["premise_id"]]
        events = self._events(conn, premise.feeder, session["plugged_in_at"], session["ended_at"])
        if not events:
            return
        measured = _session_intervals(conn, session)
        _, portal = registry.portals[session["portal_id"]]
        pev = registry.pevs[session["pev_id"]]
        rate_w = min(pev.max_w(), portal.rating_w())
        need_wh = sum(wh for _, _, wh in measured)
        if session["energy_request"]:
            request = EnergyRequest.model_validate_json(session["energy_request"])
            need_wh, rate_w = request.energy_wh, min(rate_w, request.max_w)
        baseline = unmanaged_schedule(session["plugged_in_at"], need_wh, rate_w)
        zone = registry.utility.time_zone
        for event in events:
            taken = participation(
                program,
                event.event_id,
                (event.start_at, event.end_at),
                baseline,
                measured,
                registry.utility.currency,
            )
            if taken is None:
                continue
            table = s.event_participation
            key = {
                "event_id": event.event_id,
                "premise_id": session["premise_id"],
                "session_id": session["session_id"],
            }
            if conn.execute(select(table.c.event_id).filter_by(**key)).first() is not None:
                continue
            conn.execute(
                insert(table).values(
                    **key,
                    pev_id=session["pev_id"],
                    account_id=session["payer_account"],
                    cycle=cycle_of(
                        event.start_at.astimezone(ZoneInfo(zone)).date(),
                        registry.utility.billing_cycle_day,
                    ),
                    curtailed_wh=taken.curtailed_wh,
                    credit=taken.credit,
                )
            )

    # --- rating into the ledger -------------------------------------------------------------

    def _rate(self, conn: Connection, session: dict[str, Any]) -> None:
        """Bring the session's ledger lines to what its readings are worth, by appending."""
        self.registry()
        assert self._rater is not None
        intervals = _session_intervals(conn, session)
        owed = self._rater.lines(intervals, session["tariff_id"])
        key = (session["premise_id"], session["session_id"])
        have = held_lines(
            conn,
            (s.charges.c.utility_id == self.utility_id)
            & (s.charges.c.premise_id == key[0])
            & (s.charges.c.session_id == key[1]),
        ).get(key, {})
        now = self.clock()
        new_rows = [
            {
                "utility_id": self.utility_id,
                "account_id": session["payer_account"],
                "premise_id": session["premise_id"],
                "session_id": session["session_id"],
                "cycle": key[0],
                "local_date": key[1],
                "kind": "energy" if corrects is None else "adjustment",
                "label": key[2],
                "tariff_id": key[3],
                "price_per_kwh": key[4],
                "energy_wh": wh,
                "amount": amount,
                "currency": self.registry().utility.currency,
                "corrects_id": corrects,
                "created_at": now,
            }
            for key, wh, amount, corrects in ledger_changes(owed, have)
        ]
        if new_rows:
            conn.execute(insert(s.charges), new_rows)
        if session["case"] == "roaming" and (new_rows or not roaming.claimed(conn, *key)):
            queued = roaming.queue_claim(conn, self.registry().utility, session, intervals, now)
            self._claims_waiting = self._claims_waiting or queued

    # --- billing ----------------------------------------------------------------------------

    def issue_bills(self, cycle: str | None = None) -> list[Bill]:
        """Issue the cycle's bills of this utility, or of every cycle with charges when None
        (idempotent: bills already issued stay as they are)."""
        self.send_claims()
        utility = self.registry().utility
        with self.engine.begin() as conn:
            cycles = [cycle] if cycle else cycles_with_charges(conn, self.utility_id)
            return [b for c in cycles for b in issue_cycle(conn, utility, c, self.clock())]

    # --- roaming (seed 1.6.4): claims as the roaming utility, postings as the home one ------

    def send_claims(self) -> int:
        """Send queued charge transactions to the clearinghouse, oldest first; stops at the
        first that cannot be delivered (kept for the next call). Returns how many went."""
        if self.clearinghouse is None or not self._claims_waiting:
            return 0
        with self.engine.connect() as conn:
            pending = roaming.unsent_claims(conn, self.utility_id)
        for sent, (claim_id, tx) in enumerate(pending):
            try:
                self.clearinghouse.send_transaction(tx)
            except Unavailable:
                return sent
            except Exception:
                # Refused: kept, in order, for the operator; the message that rated the
                # session has been applied and must not fail because of it.
                log.exception("clearinghouse refused charge transaction %s", claim_id)
                return sent
            with self.engine.begin() as conn:
                roaming.mark_sent(conn, claim_id, self.clock())
        self._claims_waiting = False
        return len(pending)

    def publish_roaming_tokens(self) -> int:
        """Tell the clearinghouse which PEVs are enrolled here: the whole set each time, so
        PEVs no longer enrolled are withdrawn."""
        if self.clearinghouse is None:
            return 0
        registry = self.registry()
        tokens = roaming.roaming_tokens(
            registry.utility, list(registry.pevs.values()), self.clock()
        )
        return self.clearinghouse.publish_tokens(tokens, replace=True)

    def post_roaming_transaction(self, tx: ChargeTransaction) -> PostingAck:
        """Put a roaming charge forwarded by the clearinghouse on the PEV owner's account
        (utility/roaming.py `post`). Idempotent by transaction id."""
        registry = self.registry()
        assert self._rater is not None
        utility = registry.utility
        if tx.home_utility != self.utility_id:
            raise Forbidden("home_utility", tx.home_utility, f"this is {self.utility_id}")
        pev = registry.pevs.get(tx.pev_id)
        if pev is None or pev.program is None:
            raise Invalid("pev_id", tx.pev_id, f"not a PEV enrolled with {self.utility_id}")
        if tx.currency != utility.currency:
            raise Invalid("currency", tx.currency, f"{self.utility_id} bills in {utility.currency}")
        with self.engine.begin() as conn:
            return roaming.post(conn, utility, self._rater, pev, tx, self.clock())


_DECISION = (
    "case",
    "site",
    "bound",
    "incentive",
    "payer_account",
    "tariff_id",
    "program_id",
    "fallback_reason",
    "why",
)


def _decision_columns(decision: PayerDecision) -> dict[str, Any]:
    return {k: getattr(decision, k) for k in _DECISION}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bind_result(row: dict[str, Any]) -> BindResult:
    return BindResult(
        session_id=row["session_id"],
        bound=row["bound"],
        incentive=row["incentive"],
        case=row["case"],
        program_id=row["program_id"],
        fallback_reason=row["fallback_reason"],
        message=row["why"],
        home_utility=row.get("home_utility"),
        billing_option=row.get("billing_option"),
    )


def _same_bind(existing: dict[str, Any], request: BindRequest) -> BindResult:
    """A retried bind gets the stored answer; the same session id with other content is
    refused."""
    same = (existing["pev_id"], existing["portal_id"], existing["plugged_in_at"]) == (
        request.pev_id,
        request.portal_id,
        request.plugged_in_at,
    )
    if not same:
        raise Conflict("session_id", request.session_id, "already bound with other content")
    return _bind_result(existing)


def _session_intervals(conn: Connection, session: dict[str, Any]) -> list[tuple[Any, int, int]]:
    """(start, seconds, Wh) to rate: the EUMD's readings, or the report when unmetered."""
    if session.get("metered") is False:
        return [report_interval(session)]
    table = s.interval_readings
    rows = conn.execute(
        select(table.c.interval_start_at, table.c.interval_s, table.c.energy_wh)
        .where(
            table.c.premise_id == session["premise_id"],
            table.c.session_id == session["session_id"],
        )
        .order_by(table.c.interval_start_at)
    ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def _price_signal(context: RatingContext, tariff_id: str) -> Callable[[datetime], Decimal]:
    """The tariff's price per slot start, one function per tariff (the planner caches by it)."""

    def price(at: datetime) -> Decimal:
        return price_at(context, tariff_id, at).price_per_kwh

    return price


def _metered(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, datetime | None]]:
    """Per session: the Wh its EUMD reported and the end of its last reading."""
    table = s.interval_readings
    found: dict[tuple[str, str], tuple[int, datetime | None]] = {}
    for premise_id in sorted({p for p, _ in keys}):
        ids = [sid for p, sid in keys if p == premise_id]
        rows = conn.execute(
            select(
                table.c.session_id,
                table.c.interval_s,
                func.sum(table.c.energy_wh),
                func.max(table.c.interval_start_at),
            )
            .where(table.c.premise_id == premise_id, table.c.session_id.in_(ids))
            .group_by(table.c.session_id, table.c.interval_s)
        )
        for session_id, interval_s, wh, last_start in rows:
            end = last_start + timedelta(seconds=interval_s)
            held_wh, held_end = found.get((premise_id, session_id), (0, None))
            found[(premise_id, session_id)] = (
                held_wh + int(wh),
                end if held_end is None else max(end, held_end),
            )
    return found


def delivered_wh(
    versions: Sequence[tuple[datetime, EnergyAvailable]],
    metered_wh: int,
    metered_until: datetime | None,
    plugged_in_at: datetime,
    now: datetime,
) -> int:
    """What a session has drawn by ``now``: its readings, then what the plans in force
    scheduled from the end of the last reading (each plan counts from its own instant until
    the next one). Never more than the PEV drew: the schedule part is floored once."""
    since = plugged_in_at if metered_until is None else max(metered_until, plugged_in_at)
    return metered_wh + _planned_ws(versions, since, now) // 3600


def _planned_ws(
    versions: Sequence[tuple[datetime, EnergyAvailable]], since: datetime, until: datetime
) -> int:
    """Watt-seconds the plans in force schedule in [since, until): each version from its own
    instant until the next one, the last one on."""
    ws = 0
    for index, (planned_at, available) in enumerate(versions):
        following = versions[index + 1][0] if index + 1 < len(versions) else until
        lo, hi = max(planned_at, since), min(following, until)
        if hi <= lo:
            continue
        for slot in available.schedule:
            start, end = max(slot.start_at, lo), min(slot.end_at, hi)
            if end > start:
                ws += slot.power_w * int((end - start).total_seconds())
    return ws


def _keeps_promise(
    versions: Sequence[tuple[datetime, EnergyAvailable]],
    metered_wh: int,
    metered_until: datetime | None,
    plugged_in_at: datetime,
    request: EnergyRequest,
) -> bool:
    """Whether the plan in force still delivers the whole request: the readings so far show
    the PEV drew what its plans scheduled, and the plans from plug-in to departure schedule
    at least the request (exact watt-seconds, no flooring per slot or per re-plan)."""
    if not versions or versions[-1][1].shortfall_reason is not None:
        return False
    if metered_until is not None and metered_wh < (
        _planned_ws(versions, plugged_in_at, metered_until) // 3600
    ):
        return False
    return _planned_ws(versions, plugged_in_at, request.departure_at) >= request.energy_wh * 3600


def _profile(
    schedule: Iterable[ScheduleSlot], now: datetime
) -> list[tuple[datetime, datetime, int]]:
    """A schedule from now on as (start, end, W) runs, equal runs joined: what a gateway
    would do differently is exactly where two profiles differ."""
    runs: list[tuple[datetime, datetime, int]] = []
    for slot in schedule:
        start, end = max(slot.start_at, now), slot.end_at
        if end <= start or slot.power_w <= 0:
            continue
        if runs and runs[-1][1] == start and runs[-1][2] == slot.power_w:
            runs[-1] = (runs[-1][0], end, slot.power_w)
        else:
            runs.append((start, end, slot.power_w))
    return runs
