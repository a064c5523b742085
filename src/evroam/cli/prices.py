"""`evroam prices`: publish the hourly prices of real-time tariffs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evroam.cli.common import fail, open_engine, out
from evroam.territory.store import read_territory

prices_app = typer.Typer(no_args_is_help=True, help="Hourly prices of real-time tariffs.")


@prices_app.command("load")
def prices_load(
    ctx: typer.Context,
    file: Path,
    utility: Annotated[str, typer.Option(help="The publishing utility.")],
    tariff: Annotated[str, typer.Option(help="Its hourly tariff.")],
) -> None:
    """Publish hourly prices from a CSV file (start,price_per_kwh); later hours replace."""
    from evroam.utility.prices import PriceFileError, publish_prices, read_price_file

    engine = open_engine(ctx)
    with engine.connect() as conn:
        territory = read_territory(conn)
    if territory is None or utility not in {u.id for u in territory.utilities}:
        fail(f"--utility: unknown utility {utility!r}")
    try:
        prices = read_price_file(file)
        with engine.begin() as conn:
            count = publish_prices(conn, territory.utility(utility), tariff, prices)
    except PriceFileError as exc:
        fail(str(exc))
    out.print(f"published {count} hourly prices for {utility} {tariff}")
