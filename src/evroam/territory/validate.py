"""Cross-reference checks a schema cannot express: every id named exists, once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import holidays as holiday_calendars

from evroam.core.tariffs import HourlyPriceTariff
from evroam.territory.model import Premise, Territory, Utility


@dataclass(frozen=True)
class Problem:
    """One thing wrong, at a path inside the file such as utilities[1].premises[3].account."""

    path: str
    message: str


def problems(territory: Territory) -> list[Problem]:
    found: list[Problem] = []
    found += _duplicates((f"utilities[{i}].id", u.id) for i, u in enumerate(territory.utilities))
    # PEV, premise, account, portal and EUMD ids are unique across the whole territory:
    # the clearinghouse and every message name them without saying which utility.
    found += _duplicates(_ids(territory, "pevs"))
    found += _duplicates(_ids(territory, "premises"))
    found += _duplicates(
        (f"utilities[{i}].customers[{j}].accounts[{k}].id", a.id)
        for i, u in enumerate(territory.utilities)
        for j, c in enumerate(u.customers)
        for k, a in enumerate(c.accounts)
    )
    found += _duplicates(
        (f"utilities[{i}].premises[{j}].portals[{k}].id", p.id)
        for i, u in enumerate(territory.utilities)
        for j, pr in enumerate(u.premises)
        for k, p in enumerate(pr.portals)
    )
    found += _duplicates(
        (f"utilities[{i}].premises[{j}].eumd.id", pr.eumd.id)
        for i, u in enumerate(territory.utilities)
        for j, pr in enumerate(u.premises)
        if pr.eumd is not None
    )
    # A station's id is its identity on the wire (/ocpp/{id}): one station, one premise.
    found += _duplicates(
        (f"utilities[{i}].premises[{j}].stations[{k}].id", st.id)
        for i, u in enumerate(territory.utilities)
        for j, pr in enumerate(u.premises)
        for k, st in enumerate(pr.stations)
    )
    all_pevs = {p.id for u in territory.utilities for p in u.pevs}
    for i, utility in enumerate(territory.utilities):
        found += _utility_problems(f"utilities[{i}]", utility, all_pevs)
    if territory.clearinghouse is not None:
        known = {u.id for u in territory.utilities}
        for k, member in enumerate(territory.clearinghouse.members):
            if member not in known:
                found.append(Problem(f"clearinghouse.members[{k}]", f"unknown utility {member!r}"))
    return found


def _ids(territory: Territory, kind: str) -> Iterator[tuple[str, str]]:
    for i, utility in enumerate(territory.utilities):
        for j, item in enumerate(getattr(utility, kind)):
            yield f"utilities[{i}].{kind}[{j}].id", item.id


def _duplicates(entries: Iterable[tuple[str, str]]) -> list[Problem]:
    seen: dict[str, str] = {}
    found = []
    for path, value in entries:
        if value in seen:
            found.append(Problem(path, f"duplicate id {value!r} (first at {seen[value]})"))
        else:
            seen[value] = path
    return found


def _utility_problems(at: str, u: Utility, all_pevs: set[str]) -> list[Problem]:
    found: list[Problem] = []

    def missing(path: str, what: str, value: str | None, known: Iterable[str]) -> None:
        if value is not None and value not in set(known):
            found.append(Problem(f"{at}.{path}", f"unknown {what} {value!r}"))

    tariffs = [t.id for t in u.tariffs]
    found += _duplicates((f"{at}.tariffs[{k}].id", t) for k, t in enumerate(tariffs))
    found += _duplicates((f"{at}.programs[{k}].id", p.id) for k, p in enumerate(u.programs))
    found += _duplicates((f"{at}.feeders[{k}].id", f.id) for k, f in enumerate(u.feeders))
    found += _duplicates((f"{at}.customers[{k}].id", c.id) for k, c in enumerate(u.customers))
    missing("default_tariff", "tariff", u.default_tariff, tariffs)
    missing("guest_tariff", "tariff", u.guest_tariff, tariffs)
    for k, tariff in enumerate(u.tariffs):
        if isinstance(tariff, HourlyPriceTariff):
            missing(f"tariffs[{k}].fallback_tariff", "tariff", tariff.fallback_tariff, tariffs)
            fallback = next((t for t in u.tariffs if t.id == tariff.fallback_tariff), None)
            if isinstance(fallback, HourlyPriceTariff):
                found.append(
                    Problem(
                        f"{at}.tariffs[{k}].fallback_tariff",
                        f"fallback {tariff.fallback_tariff!r} must not be an hourly tariff",
                    )
                )
    if u.holidays is not None:
        try:
            holiday_calendars.country_holidays(u.holidays.country, subdiv=u.holidays.subdivision)
        except NotImplementedError as err:
            found.append(Problem(f"{at}.holidays", str(err)))
    programs = [p.id for p in u.programs]
    for k, program in enumerate(u.programs):
        missing(f"programs[{k}].tariff", "tariff", program.tariff, tariffs)
    accounts = list(u.accounts())
    feeders = [f.id for f in u.feeders]
    premises = [p.id for p in u.premises]
    for k, premise in enumerate(u.premises):
        missing(f"premises[{k}].account", "account", premise.account, accounts)
        missing(f"premises[{k}].feeder", "feeder", premise.feeder, feeders)
        for m, guest in enumerate(premise.visitors.permitted_pevs or ()):
            missing(f"premises[{k}].visitors.permitted_pevs[{m}]", "PEV", guest, all_pevs)
        for m, portal in enumerate(premise.portals):
            where = f"{at}.premises[{k}].portals[{m}]"
            if portal.type == "cordset_120v":
                if portal.amps is None:
                    found.append(Problem(f"{where}.amps", "a 120 V cordset needs amps: 15 or 20"))
                if portal.max_kw is not None:
                    found.append(
                        Problem(f"{where}.max_kw", "a cordset's rating follows from its amps")
                    )
            elif portal.max_kw is None:
                found.append(Problem(f"{where}.max_kw", f"a {portal.type} needs max_kw"))
        found += _station_problems(f"{at}.premises[{k}]", premise)
    for k, pev in enumerate(u.pevs):
        missing(f"pevs[{k}].owner_account", "account", pev.owner_account, accounts)
        missing(f"pevs[{k}].program", "program", pev.program, programs)
        missing(f"pevs[{k}].home_premise", "premise", pev.home_premise, premises)
    return found


def _station_problems(at: str, premise: Premise) -> list[Problem]:
    """Each EVSE of a station is one of this premise's energy portals, and no portal is
    claimed twice (its readings and sessions would belong to two EVSEs)."""
    found: list[Problem] = []
    portals = {p.id for p in premise.portals}
    claimed: dict[str, str] = {}
    for k, station in enumerate(premise.stations):
        found += _duplicates(
            (f"{at}.stations[{k}].evses[{m}].id", str(e.id)) for m, e in enumerate(station.evses)
        )
        for m, evse in enumerate(station.evses):
            where = f"{at}.stations[{k}].evses[{m}].portal"
            if evse.portal not in portals:
                found.append(
                    Problem(where, f"unknown energy portal {evse.portal!r} at this premise")
                )
            elif evse.portal in claimed:
                found.append(
                    Problem(
                        where,
                        f"portal {evse.portal!r} already taken (first at {claimed[evse.portal]})",
                    )
                )
            else:
                claimed[evse.portal] = where
    return found
