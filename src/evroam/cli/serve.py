"""`evroam serve`: a utility or the clearinghouse as an HTTP server, configured by its
settings (utility/settings.py, clearinghouse/settings.py); options win over them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from evroam.clearinghouse.settings import FLAGS as CH_FLAGS
from evroam.clearinghouse.settings import ClearinghouseSettings
from evroam.cli.clearinghouse import clearinghouse_service, clearinghouse_warnings
from evroam.cli.common import (
    Access,
    check_port,
    check_tls_files,
    configured,
    fail,
    fail_lines,
    open_db,
)
from evroam.core.errors import Refused
from evroam.db.engine import default_url, make_engine
from evroam.territory.loader import TerritoryFileError, load_territory
from evroam.territory.store import save_territory
from evroam.utility.settings import FLAGS, UtilitySettings


def secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


serve_app = typer.Typer(no_args_is_help=True, help="Run a party as a server.")


@serve_app.command("utility")
def serve_utility(
    ctx: typer.Context,
    utility: Annotated[
        str | None,
        typer.Option(help="Which utility of the territory to serve (EVROAM_UTILITY_ID)."),
    ] = None,
    territory: Annotated[
        Path | None, typer.Option(help="Load this utility's part of the territory first.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Default 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Default 8100.")] = None,
    clearinghouse: Annotated[
        str | None,
        typer.Option(
            help="The clearinghouse's URL: register with the registration token in "
            "EVROAM_CH_REGISTRATION_TOKEN (once: the credentials are kept in "
            "EVROAM_CH_CREDENTIALS_FILE), publish the enrolled PEVs, roam through it."
        ),
    ] = None,
    clearinghouse_ca: Annotated[
        Path | None,
        typer.Option(help="CA certificate (PEM) to check an https:// clearinghouse by."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="The URL the clearinghouse calls back (default http://HOST:PORT)."),
    ] = None,
    ch_timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for a roaming authorization (2).")
    ] = None,
    sim_clock: Annotated[
        bool,
        typer.Option(
            "--sim-clock",
            hidden=True,
            help="A clock the operator sets (PUT /v1/operator/clock): simulations only.",
        ),
    ] = False,
    seed: Annotated[
        str | None,
        typer.Option(
            help="Seed of the randomized start delays (default: the utility id, so a restart "
            "draws the same delay for the same session)."
        ),
    ] = None,
    ocpp_basic_auth: Annotated[
        bool | None,
        typer.Option(
            help="OCPP security profile 1: stations present their Basic-auth password (on)."
        ),
    ] = None,
    ocpp_tls_only: Annotated[
        bool | None,
        typer.Option(help="OCPP security profile 2: refuse stations not on wss:// (off)."),
    ] = None,
    ocpp_heartbeat: Annotated[
        int | None, typer.Option(help="Heartbeat interval given to stations at boot, s (300).")
    ] = None,
    ocpp_port: Annotated[
        int | None,
        typer.Option(help="Take OCPP on a port of its own (less memory per station)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Server certificate (PEM): serve HTTPS and wss://.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
) -> None:
    """Serve one utility over HTTP: the gateway API, OCPP 1.6J/2.0.1 for charging stations
    at /ocpp/{station_id}, and with a clearinghouse its roaming CDR receiver."""
    import uvicorn

    from evroam.core.clock import FixedClock, utc_now
    from evroam.observability.health import http_check
    from evroam.observability.logs import log_startup, uvicorn_options
    from evroam.protocols.ocpp import OcppSettings, install_ocpp
    from evroam.protocols.roaming.credentials import CredentialsError, connect
    from evroam.protocols.roaming.http import HttpClearinghouseLink, tls_context
    from evroam.protocols.roaming.http import Refused as RoamingRefused
    from evroam.protocols.roaming.ports import Unavailable
    from evroam.utility.api import create_app
    from evroam.utility.ocpp_desk import TransactionDesk
    from evroam.utility.service import UtilityService

    settings = configured(
        UtilitySettings,
        ctx,
        flags=FLAGS,
        utility_id=utility,
        host=host,
        port=port,
        ch_url=clearinghouse,
        public_url=public_url,
        ch_timeout=ch_timeout,
        ch_ca_file=clearinghouse_ca,
        ocpp_basic_auth=ocpp_basic_auth,
        ocpp_tls_only=ocpp_tls_only,
        ocpp_heartbeat=ocpp_heartbeat,
        ocpp_port=ocpp_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    utility = settings.utility_id
    host, port = settings.host, settings.port
    clearinghouse, public_url = settings.ch_url, settings.public_url
    tls_cert, tls_key = settings.tls_cert, settings.tls_key
    check_tls_files(tls_cert, tls_key)
    check_port(host, port)
    if settings.ocpp_port is not None:
        check_port(host, settings.ocpp_port, "--ocpp-port")
    engine = open_db(default_url(settings), Access.SERVE)
    if territory is not None:
        try:
            loaded = load_territory(territory)
        except TerritoryFileError as exc:
            fail_lines(exc.lines)
        try:
            own = loaded.model_copy(update={"utilities": (loaded.utility(utility),)})
        except KeyError:
            fail(f"--utility: no utility {utility!r} in {territory}")
        with engine.begin() as conn:
            save_territory(conn, own)  # a utility's database holds only its own registry
    clock = FixedClock(utc_now()) if sim_clock else utc_now
    token_b = None
    link = None
    if clearinghouse is not None:
        verify = tls_context(None if settings.ch_ca_file is None else str(settings.ch_ca_file))
        scheme = "https" if tls_cert else "http"
        try:
            held = connect(
                clearinghouse,
                secret(settings.ch_registration_token),
                public_url or f"{scheme}://{host}:{port}",
                utility,
                settings.credentials_file(),
                verify=verify,
            )
        except (CredentialsError, RoamingRefused, Unavailable) as exc:
            fail(f"--clearinghouse: {exc}")
        token_b = held.token_b
        link = HttpClearinghouseLink(
            clearinghouse, held.token_c, timeout_s=settings.ch_timeout, verify=verify
        )
    service = UtilityService(
        engine,
        utility,
        clock,
        clearinghouse=link,
        rng_seed=utility if seed is None else seed,
    )
    try:
        service.registry()
    except Refused as exc:
        fail(str(exc))
    if link is not None:
        service.publish_roaming_tokens()
        service.roaming.retry_in_background()  # claims the clearinghouse did not take
    operator_token = secret(settings.operator_token)
    app = create_app(
        service,
        operator_token,
        clearinghouse_token=(lambda: token_b) if token_b else None,
        sim_clock=clock if isinstance(clock, FixedClock) else None,
    )
    if clearinghouse is not None:
        app.state.readiness.add(http_check("clearinghouse", clearinghouse, settings.ch_timeout))
    install_ocpp(
        app,
        TransactionDesk(service),  # the utility's service to its stations
        OcppSettings(
            basic_auth_required=settings.ocpp_basic_auth,
            tls_required=settings.ocpp_tls_only,
            heartbeat_s=settings.ocpp_heartbeat,
            port=settings.ocpp_port,
            host=host,
            tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None,
        ),
    )
    secret_key = secret(settings.portal_secret)
    if secret_key:
        from evroam.portal.app import install_portal

        install_portal(
            app,
            engine,
            {utility: service},
            secret_key=secret_key,
            clock=clock,
            https_only=tls_cert is not None,  # Secure cookies and HSTS when served over TLS
        )
    if settings.silent_session_hours > 0:
        from datetime import timedelta

        from evroam.utility.housekeeping import start_silent_session_closer

        start_silent_session_closer(
            service.metering, timedelta(hours=settings.silent_session_hours)
        )
    log_startup(
        "utility",
        f"{'https' if tls_cert else 'http'}://{host}:{port}",
        default_url(settings),
        tls_cert is not None,
        utility_id=utility,
        clearinghouse=clearinghouse,
        ocpp_port=settings.ocpp_port,
        portal="on" if secret_key else "off",
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        **uvicorn_options(),
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # compression costs ~64 KiB per station connection
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )


@serve_app.command("clearinghouse")
def serve_clearinghouse(
    ctx: typer.Context,
    territory: Annotated[
        Path | None, typer.Option(help="Members: the territory's clearinghouse.members.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Default 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option(help="Default 8200.")] = None,
    forward_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for a home utility to acknowledge a CDR (2)."),
    ] = None,
    retry_every: Annotated[
        float | None, typer.Option(help="Seconds between retries of undelivered CDRs (2).")
    ] = None,
    sim_clock: Annotated[
        bool,
        typer.Option(help="A simulated clock the operator moves (PUT /v1/operator/clock)."),
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Server certificate (PEM): serve HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
) -> None:
    """Serve the clearinghouse (OCPI 2.2.1-shaped roaming API and settlement) over HTTP, or
    HTTPS with --tls-cert and --tls-key.

    Registration token A of each member comes from EVROAM_CH_REGISTRATION_<UTILITY_ID>
    (non-alphanumerics as _), or from `evroam clearinghouse register`; the operator token
    (issuing statements) from EVROAM_OPERATOR_TOKEN. Each option can also be set as
    EVROAM_<OPTION> (EVROAM_PORT, EVROAM_RETRY_EVERY, ...).
    """
    import uvicorn

    from evroam.clearinghouse.api import create_app
    from evroam.core.clock import FixedClock, utc_now
    from evroam.observability.logs import log_startup, uvicorn_options

    settings = configured(
        ClearinghouseSettings,
        ctx,
        flags=CH_FLAGS,
        host=host,
        port=port,
        forward_timeout=forward_timeout,
        retry_every=retry_every,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    host, port = settings.host, settings.port
    tls_cert, tls_key = settings.tls_cert, settings.tls_key
    forward_timeout, retry_every = settings.forward_timeout, settings.retry_every
    clock = FixedClock(utc_now()) if sim_clock else None
    check_tls_files(tls_cert, tls_key)
    check_port(host, port)
    engine = open_db(default_url(settings), Access.SERVE)
    if engine.dialect.name == "postgresql":
        # One connection per request thread: overflow connections would be opened and
        # closed under bursts (a PostgreSQL backend each time).
        engine.dispose()
        engine = make_engine(default_url(settings), pool_size=40, max_overflow=10)
    service = clearinghouse_service(engine, territory, settings, clock)
    for line in clearinghouse_warnings(service, settings):
        logging.getLogger("evroam.server").warning("%s", line)
    operator_token = secret(settings.operator_token)
    app = create_app(
        service,
        operator_token,
        forward_timeout_s=forward_timeout,
        retry_every_s=retry_every if retry_every > 0 else None,
        sim_clock=clock,
    )
    log_startup(
        "clearinghouse",
        f"{'https' if tls_cert else 'http'}://{host}:{port}",
        default_url(settings),
        tls_cert is not None,
        clearinghouse_id=service.clearinghouse_id,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        **uvicorn_options(),
    )
