"""What `evroam serve utility` is configured with: every field is EVROAM_<NAME>, and the
command-line option of the same name overrides it."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from evroam.core.settings import Secret, SettingError
from evroam.db.settings import DatabaseSettings

# The command-line option of each field, for messages about a value given there.
FLAGS = {
    "database_url": "--db",
    "utility_id": "--utility",
    "ch_url": "--clearinghouse",
    "public_url": "--public-url",
    "ch_timeout": "--ch-timeout",
    "ch_ca_file": "--clearinghouse-ca",
    "host": "--host",
    "port": "--port",
    "ocpp_basic_auth": "--ocpp-basic-auth",
    "ocpp_tls_only": "--ocpp-tls-only",
    "ocpp_heartbeat": "--ocpp-heartbeat",
    "ocpp_port": "--ocpp-port",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
}


class UtilitySettings(DatabaseSettings):
    """One utility's server. Secrets are optional features: without EVROAM_OPERATOR_TOKEN no
    operator routes, without EVROAM_PORTAL_SECRET no portal; given, they must be strong."""

    utility_id: str
    operator_token: Secret | None = None
    portal_secret: Secret | None = None  # signs the portal's session cookie
    ch_url: str | None = None  # the clearinghouse to register with and roam through
    ch_registration_token: Secret | None = None  # token A, presented once to register
    ch_ca_file: Path | None = None  # the CA (PEM) the clearinghouse's certificate is checked by
    # Where the credentials got from the clearinghouse are kept across restarts (mode 0600);
    # default: beside the SQLite database, else in the user's data directory.
    ch_credentials_file: Path | None = None
    public_url: str | None = None  # what the clearinghouse calls back (http://HOST:PORT)
    ch_timeout: float = 2.0
    host: str = "127.0.0.1"
    port: int = 8100
    ocpp_basic_auth: bool = True
    ocpp_tls_only: bool = False
    ocpp_heartbeat: int = 300
    ocpp_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Close a session whose gateway or station said nothing for this long (0: never).
    silent_session_hours: float = Field(default=24.0, ge=0)

    @model_validator(mode="after")
    def _together(self) -> Self:
        if (
            self.ch_url is not None
            and self.ch_registration_token is None
            and not self.credentials_file().is_file()
        ):
            raise SettingError(
                self.variable("ch_registration_token"),
                "not set (registering with the clearinghouse needs it)",
            )
        if self.tls_cert is not None and self.tls_key is None:
            raise SettingError(self.variable("tls_key"), "not set (the certificate needs it)")
        if self.tls_key is not None and self.tls_cert is None:
            raise SettingError(self.variable("tls_cert"), "not set (the key needs it)")
        return self

    def credentials_file(self) -> Path:
        """Where this utility keeps its clearinghouse credentials (token C and B)."""
        from evroam.db.engine import default_url
        from evroam.protocols.roaming.credentials import default_file

        return self.ch_credentials_file or default_file(default_url(self), self.utility_id)
