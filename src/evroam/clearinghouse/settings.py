"""What `evroam serve clearinghouse` is configured with: EVROAM_CH_ID, the operator token,
each member's registration token A in EVROAM_CH_REGISTRATION_<MEMBER> and how long it is
good for (EVROAM_REGISTRATION_TTL_DAYS), the key sealing tokens B at rest
(EVROAM_CH_TOKEN_KEY), and the server's TLS certificate."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
)

from evroam.core.settings import MIN_SECRET_CHARS, Secret, SettingError
from evroam.db.settings import DatabaseSettings
from evroam.protocols.roaming.http import registration_env

REGISTRATION = "EVROAM_CH_REGISTRATION_"

FLAGS = {
    "database_url": "--db",
    "host": "--host",
    "port": "--port",
    "forward_timeout": "--forward-timeout",
    "retry_every": "--retry-every",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
}


class _Registrations(PydanticBaseSettingsSource):
    """Every EVROAM_CH_REGISTRATION_* variable, the environment over the file: their names
    depend on the members, so no field can name them."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.sources = [s for s in sources if isinstance(s, EnvSettingsSource)]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ gathers the one field itself

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for source in self.sources:  # weakest first
            for name, value in source.env_vars.items():
                if name.upper().startswith(REGISTRATION) and value:
                    found[name.upper()] = value
        return {"registration_tokens": found} if found else {}


class ClearinghouseSettings(DatabaseSettings):
    """The clearinghouse's server."""

    ch_id: str = "CH"  # used when no --territory names the clearinghouse
    operator_token: Secret | None = None  # issuing statements, forwarding now
    registration_tokens: dict[str, SecretStr] = Field(default_factory=dict)  # var -> A
    host: str = "127.0.0.1"
    port: int = 8200
    forward_timeout: float = 2.0
    retry_every: float = 2.0
    # A registration token A is single-use and expires this long after it was issued.
    registration_ttl_days: float = Field(default=7.0, gt=0, le=3650)
    ch_token_key: Secret | None = None  # encrypts the members' tokens B at rest
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _together(self) -> Self:
        if self.tls_cert is not None and self.tls_key is None:
            raise SettingError(self.variable("tls_key"), "not set (the certificate needs it)")
        if self.tls_key is not None and self.tls_cert is None:
            raise SettingError(self.variable("tls_cert"), "not set (the key needs it)")
        return self

    @property
    def registration_ttl(self) -> timedelta:
        return timedelta(days=self.registration_ttl_days)

    def token_key(self) -> str | None:
        return None if self.ch_token_key is None else self.ch_token_key.get_secret_value()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        registrations = _Registrations(settings_cls, dotenv_settings, env_settings)
        return init_settings, env_settings, dotenv_settings, registrations, file_secret_settings

    def registration_token(self, member: str) -> str | None:
        """Member's token A, if configured; SettingError when it is too short."""
        variable = registration_env(member)
        token = self.registration_tokens.get(variable)
        if token is None:
            return None
        if len(token.get_secret_value()) < MIN_SECRET_CHARS:
            raise SettingError(variable, f"must be at least {MIN_SECRET_CHARS} characters")
        return token.get_secret_value()
