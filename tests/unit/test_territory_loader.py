"""The territory loader: the example loads; each mistake is one line naming file, path, value."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from evroam.territory.loader import TerritoryFileError, load_territory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "territory.yaml"

Variant = Callable[[str, Callable[[dict[str, Any]], None]], Path]


def load_error(path: Path) -> list[str]:
    with pytest.raises(TerritoryFileError) as caught:
        load_territory(path)
    assert str(caught.value) == "\n".join(caught.value.lines)
    return caught.value.lines


def test_example_loads_with_both_utilities_and_the_clearinghouse() -> None:
    territory = load_territory(EXAMPLE)
    assert [u.id for u in territory.utilities] == ["PGX", "MHE"]
    assert territory.clearinghouse is not None
    assert territory.clearinghouse.members == ("PGX", "MHE")
    pgx = territory.utility("PGX")
    assert pgx.time_zone == "America/Los_Angeles"
    assert len(pgx.premises) == 13  # 8 + Oak Lane's 5 (feeder PGX-F103, ALM)
    assert len(pgx.pevs) == 10
    assert pgx.accounts()["PGX-A-2001"].name == "Bayside Mall LLC"
    flat = pgx.tariff("PGX-E1")
    assert flat.kind == "flat"
    assert str(flat.price_per_kwh) == "0.24000"  # scale kept as written
    assert pgx.premises[4].esi.communicating is False  # PGX-P-ERIN
    assert pgx.premises[3].eumd is None  # PGX-P-DAVE
    assert pgx.premises[4].visitors.policy == "host_pays"  # the default


def test_cordset_rating_is_120_volts_times_amps_times_0_8() -> None:
    pgx = load_territory(EXAMPLE).utility("PGX")
    portals = {ep.id: ep for p in pgx.premises for ep in p.portals}
    assert portals["PGX-EP-BOB-2"].rating_w() == 1440  # 120 V x 15 A x 0.8
    assert portals["PGX-EP-CAROL-1"].rating_w() == 1920  # 120 V x 20 A x 0.8
    assert portals["PGX-EP-MALL-DC1"].rating_w() == 50_000
    assert pgx.pevs[2].max_kw == Decimal("6.6")
    assert pgx.pevs[2].max_w() == 6600


def test_unchanged_variant_still_loads(territory_variant: Variant) -> None:
    # the bad files are the example with one change: an unchanged copy must load the same
    path = territory_variant("same", lambda d: None)
    assert load_territory(path) == load_territory(EXAMPLE)


def test_bad_file_gets_one_line_naming_file_path_and_value(bad_territory: Any) -> None:
    lines = load_error(bad_territory.path)
    assert lines == [bad_territory.line]
    assert lines[0].startswith(f"{bad_territory.path}: {bad_territory.where}: ")


def test_missing_account_line(territory_variant: Variant) -> None:
    # the table in conftest drives the parametrized test; this one spells a line out in full
    path = territory_variant(
        "acct", lambda d: d["utilities"][0]["premises"][0].__setitem__("account", "PGX-A-9999")
    )
    assert load_error(path) == [
        f"{path}: utilities[0].premises[0].account: unknown account 'PGX-A-9999'"
    ]


def test_every_problem_gets_its_own_line(territory_variant: Variant) -> None:
    def two_mistakes(d: dict[str, Any]) -> None:
        d["utilities"][0]["premises"][0]["account"] = "PGX-A-9999"
        d["utilities"][0]["programs"][0]["tariff"] = "PGX-NOPE"

    path = territory_variant("two", two_mistakes)
    assert load_error(path) == [
        f"{path}: utilities[0].programs[0].tariff: unknown tariff 'PGX-NOPE'",
        f"{path}: utilities[0].premises[0].account: unknown account 'PGX-A-9999'",
    ]


def test_more_than_five_price_decimals_is_refused(territory_variant: Variant) -> None:
    path = territory_variant(
        "six_places",
        lambda d: d["utilities"][0]["tariffs"][0].__setitem__("price_per_kwh", "0.240001"),
    )
    assert load_error(path) == [
        f"{path}: utilities[0].tariffs[0].price_per_kwh: "
        "Decimal input should have no more than 5 decimal places (got '0.240001')"
    ]


def test_negative_tou_period_price_names_the_period(territory_variant: Variant) -> None:
    path = territory_variant(
        "tou", lambda d: d["utilities"][0]["tariffs"][2]["periods"].__setitem__("on_peak", "-1")
    )
    assert load_error(path) == [
        f"{path}: utilities[0].tariffs[2].periods.on_peak: "
        "Input should be greater than or equal to 0 (got '-1')"
    ]


def test_missing_required_field(territory_variant: Variant) -> None:
    path = territory_variant("no_tz", lambda d: d["utilities"][0].pop("time_zone"))
    assert load_error(path) == [f"{path}: utilities[0].time_zone: required field is missing"]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert load_error(path) == [f"{path}: cannot read: No such file or directory"]
