"""PNG screenshots of the portal's main pages, for readers who do not run a server.

`python -m evroam.portal.screenshots docs/screenshots` (what `make screenshots` runs):
builds the demo database, serves the portal in this process, and drives Debian's headless
Chromium through Playwright (the dev extra) to each page, at desktop and phone widths.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from evroam.core.settings import EvroamSettings, SettingError
from evroam.portal.demo import ServerThread, demo_portal, prepare

CHROMIUM = "/usr/bin/chromium"  # Debian's


class ScreenshotSettings(EvroamSettings):
    """A tool, not a server: only which browser to drive (EVROAM_CHROMIUM)."""

    chromium: str = CHROMIUM


PASSWORD = "screenshot-password"

# (file name, login, path, phone width?)
PAGES: tuple[tuple[str, str, str, bool], ...] = (
    ("sign-in", "", "/login", False),
    ("customer-account", "pgx-c-alice", "/accounts/PGX-A-1001", False),
    (
        "customer-live-session",
        "pgx-c-alice",
        "/accounts/PGX-A-1001/sessions/PGX-P-ALICE/LIVE-ALICE",
        False,
    ),
    ("customer-bill", "pgx-c-bob", "/accounts/PGX-A-1002/bills/2026-03", False),
    ("customer-roaming-bill", "mhe-c-gina", "/accounts/MHE-A-3001/bills/2026-03", False),
    ("host-premise", "pgx-c-bob", "/accounts/PGX-A-1002/premises/PGX-P-BOB", False),
    ("operator-load", "operator-pgx", "/operator?day=2026-03-16", False),
    ("operator-review", "operator-pgx", "/operator/review", False),
    ("operator-settlement", "operator-pgx", "/operator/settlement?period=2026-03", False),
    ("phone-account", "pgx-c-alice", "/accounts/PGX-A-1001", True),
)


def take(out: Path, chromium: str = CHROMIUM) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="evroam-screenshots-"))
    demo = prepare(f"sqlite:///{folder / 'demo.db'}")
    app, _ = demo_portal(demo, PASSWORD)
    written = []
    with ServerThread(app) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        contexts = {}
        for name, login, path, phone in PAGES:
            key = (login, phone)
            if key not in contexts:
                width, height = (390, 844) if phone else (1100, 800)
                context = browser.new_context(
                    viewport={"width": width, "height": height}, device_scale_factor=1
                )
                page = context.new_page()
                if login:
                    page.goto(f"{server.url}/login")
                    page.fill("input[name=username]", login)
                    page.fill("input[name=password]", PASSWORD)
                    page.click("button[type=submit]")
                    page.wait_for_load_state()
                contexts[key] = page
            page = contexts[key]
            page.goto(server.url + path)
            target = out / f"{name}.png"
            page.screenshot(path=str(target), full_page=True)
            written.append(target)
        browser.close()
    demo.engine.dispose()
    return written


app = typer.Typer(add_completion=False, help=(__doc__ or "").splitlines()[0])


@app.command()
def run(
    out: Annotated[Path, typer.Argument(help="The folder to write the PNGs to.")] = Path(
        "docs/screenshots"
    ),
    chromium: Annotated[
        str | None,
        typer.Option(help=f"The Chromium binary to drive (EVROAM_CHROMIUM, else {CHROMIUM})."),
    ] = None,
) -> None:
    """Write a PNG of each main page of the portal on the demo database."""
    try:
        binary = ScreenshotSettings.load(chromium=chromium).chromium
    except SettingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in take(out, binary):
        print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> None:
    app(args=None if argv is None else list(argv), prog_name="python -m evroam.portal.screenshots")


if __name__ == "__main__":
    main()
