"""The scenario file: a territory plus a timeline of plug-ins, plug-outs and faults."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationError, model_validator

from evroam.core.clock import ensure_utc
from evroam.core.messages import BillingOption, Preference
from evroam.core.tariffs import Strict
from evroam.territory.loader import (
    TerritoryFileError,
    describe,
    format_loc,
    parse_territory,
    read_yaml,
)
from evroam.territory.model import Id, Territory

Instant = Annotated[datetime, AfterValidator(ensure_utc)]


class Request(Strict):
    """The PEV's Energy Request, as a person writes it."""

    energy_kwh: Annotated[Decimal, Field(gt=0, le=1000)]
    departure: Instant
    preference: Preference = "program_default"
    max_kw: Annotated[Decimal, Field(gt=0)] | None = None


class PlugIn(Strict):
    session: Id
    premise: Id
    portal: Id | None = None  # default: the premise's first energy portal
    pev: Id | None = None  # None: a non-communicating PEV
    pev_max_kw: Annotated[Decimal, Field(gt=0)] = Decimal("7.2")  # for PEVs not in the registry
    request: Request | None = None
    # a PEV from another utility: how its owner chose to be billed (seed 1.6.4)
    billing_option: BillingOption | None = None


class SessionRef(Strict):
    session: Id


class PremiseRef(Strict):
    premise: Id


class Readings(Strict):
    """Replay real meter data: consecutive intervals of this session starting at `at`."""

    session: Id
    energy_wh: tuple[Annotated[int, Field(ge=0)], ...] = Field(min_length=1)


class LoadControl(Strict):
    """The utility declares a load-control event (seed: DLC, declared ahead of time)."""

    utility: Id
    id: Id
    start: Instant
    end: Instant
    feeder: Id | None = None
    cap_kw: Annotated[Decimal, Field(ge=0)] | None = None
    curtail_pct: Annotated[int, Field(ge=1, le=100)] | None = None


class Event(Strict):
    at: Instant
    plug_in: PlugIn | None = None
    plug_out: SessionRef | None = None
    comms_down: PremiseRef | None = None
    comms_up: PremiseRef | None = None
    eumd_down: PremiseRef | None = None
    eumd_up: PremiseRef | None = None
    readings: Readings | None = None
    load_control: LoadControl | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Event:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"an event has exactly one of {', '.join(_KINDS)} (got {kinds})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) is not None)


_KINDS = (
    "plug_in",
    "plug_out",
    "comms_down",
    "comms_up",
    "eumd_down",
    "eumd_up",
    "readings",
    "load_control",
)


class Scenario(Strict):
    name: str = ""
    seed: int = 0
    territory: Territory
    events: tuple[Event, ...] = Field(min_length=1)


def load_scenario(path: Path) -> Scenario:
    """Read a scenario; `territory:` may be a mapping or a path relative to the file."""
    document: Any = read_yaml(path)
    if isinstance(document, dict) and isinstance(document.get("territory"), str):
        territory_path = (path.parent / document["territory"]).resolve()
        territory = parse_territory(read_yaml(territory_path), str(territory_path))
        document = document | {"territory": territory}
    elif isinstance(document, dict) and isinstance(document.get("territory"), dict):
        document = document | {
            "territory": parse_territory(document["territory"], f"{path} territory")
        }
    try:
        scenario = Scenario.model_validate(document)
    except ValidationError as err:
        raise TerritoryFileError(
            [f"{path}: {format_loc(e['loc'])}: {describe(e)}" for e in err.errors()]
        ) from None
    _check_references(scenario, path)
    return scenario


def _check_references(scenario: Scenario, path: Path) -> None:
    premises = {p.id: p for u in scenario.territory.utilities for p in u.premises}
    problems = []
    open_sessions: set[str] = set()
    seen_sessions: set[str] = set()
    for i, event in enumerate(sorted(scenario.events, key=lambda e: e.at)):
        where = f"{path}: events[{scenario.events.index(event)}]"
        del i
        if event.plug_in is not None:
            p = event.plug_in
            if p.premise not in premises:
                problems.append(f"{where}.plug_in.premise: unknown premise {p.premise!r}")
            elif p.portal is not None and p.portal not in {
                ep.id for ep in premises[p.premise].portals
            }:
                problems.append(f"{where}.plug_in.portal: {p.portal!r} is not at {p.premise}")
            if p.session in seen_sessions:
                problems.append(f"{where}.plug_in.session: session {p.session!r} used twice")
            seen_sessions.add(p.session)
            open_sessions.add(p.session)
        for ref in (event.plug_out, event.readings):
            if ref is not None and ref.session not in open_sessions:
                problems.append(f"{where}.{event.kind}.session: {ref.session!r} is not plugged in")
        if event.plug_out is not None:
            open_sessions.discard(event.plug_out.session)
        for ref2 in (event.comms_down, event.comms_up, event.eumd_down, event.eumd_up):
            if ref2 is not None and ref2.premise not in premises:
                problems.append(f"{where}.{event.kind}.premise: unknown premise {ref2.premise!r}")
    if problems:
        raise TerritoryFileError(problems)
