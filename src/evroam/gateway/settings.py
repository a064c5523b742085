"""What a premise gateway process is configured with: EVROAM_GATEWAY_<NAME>, or the option
of the same name (`--url`, `--token`, `--premise`, ...), which wins."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from evroam.core.settings import EvroamSettings, Secret

FLAGS = {
    "url": "--url",
    "token": "--token",
    "outbox": "--outbox",
    "timeout_s": "--timeout-s",
    "premise": "--premise",
    "eumd_id": "--eumd-id",
    "interval_s": "--interval-s",
    "portals": "--portal",
}


class GatewayLinkSettings(EvroamSettings):
    """Enough to deliver an outbox: the utility, the premise's token, the outbox file."""

    model_config = SettingsConfigDict(env_prefix="EVROAM_GATEWAY_")

    url: str  # the utility's base URL
    token: Secret  # this premise's gateway token, issued by `evroam gateway token`
    outbox: Path
    timeout_s: float = Field(default=5.0, gt=0)


class GatewaySettings(GatewayLinkSettings):
    """A gateway process: the link, and the premise it serves."""

    premise: str
    eumd_id: str | None = None  # none: the premise has no EUMD
    interval_s: int = Field(default=900, gt=0)
    # PORTAL_ID:RATING_W, one per energy portal (EVROAM_GATEWAY_PORTALS: comma-separated)
    portals: Annotated[tuple[tuple[str, int], ...], NoDecode] = ()

    @field_validator("portals", mode="before")
    @classmethod
    def _portals(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        return tuple(parse_portal(p) if isinstance(p, str) else p for p in value)


def parse_portal(text: str) -> tuple[str, int]:
    """`PORTAL_ID:RATING_W` -> (portal id, rating in W); ValueError names what was expected."""
    portal_id, sep, rating = text.strip().rpartition(":")
    if not sep or not portal_id or not rating.isdigit() or int(rating) <= 0:
        raise ValueError(f"expected PORTAL_ID:RATING_W, got {text!r}")
    return portal_id, int(rating)
