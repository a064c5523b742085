"""How every evroam process is configured: one pydantic-settings class per server kind, on
this base.

A value comes from, strongest first: an explicit command-line option, an `EVROAM_...`
environment variable, the settings file (a dotenv file of the same `EVROAM_...` lines,
named by `--config FILE` or `EVROAM_CONFIG`), the default. A bad or missing value is one
`SettingError` naming the variable, which the command line prints as one line, exit 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

from pydantic import AfterValidator, SecretStr, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "EVROAM_"
MIN_SECRET_CHARS = 16  # tokens and keys people choose; the generated ones are longer


class SettingError(Exception):
    """One setting is missing or unacceptable: `str()` is the one line to print. Not a
    ValueError, so a model validator raising it is not wrapped by pydantic."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def check_secret(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < MIN_SECRET_CHARS:
        raise PydanticCustomError("weak_secret", f"must be at least {MIN_SECRET_CHARS} characters")
    return value


# A token or key: never shown in a repr, refused when shorter than MIN_SECRET_CHARS.
Secret = Annotated[SecretStr, AfterValidator(check_secret)]


class _ConfigFile(BaseSettings):
    """Where the settings file is when no --config option names it."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore")

    config: Path | None = None


class EvroamSettings(BaseSettings):
    """The base of every server kind's settings: `EVROAM_` + the field name, upper case."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_ignore_empty=True,  # VAR= is the same as unset, as it always was
        env_file_encoding="utf-8",
        extra="ignore",  # one file may hold the settings of several server kinds
        frozen=True,
    )

    @classmethod
    def load(
        cls,
        config: Path | None = None,
        *,
        flags: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Self:
        """The settings, with `options` (the command line's values; None: not given) over the
        environment over the file `config` (default: EVROAM_CONFIG, else none).

        `flags` names the command-line option of a field, for messages about a value given
        there. Raises SettingError.
        """
        given = {name: value for name, value in options.items() if value is not None}
        where = "--config"
        if config is None:
            where = PREFIX + "CONFIG"
            config = _load(_ConfigFile).config
        if config is not None:
            _check_readable(config, where)
        try:
            return cls(_env_file=config, **given)
        except ValidationError as exc:
            raise _setting_error(cls, exc, given, flags or {}) from None

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of a field."""
        return (cls.model_config.get("env_prefix") or "").upper() + field.upper()


S = TypeVar("S", bound=BaseSettings)


def _check_readable(config: Path, where: str) -> None:
    """The settings file is UTF-8 text we may read: else one SettingError, not a traceback
    from deep inside the dotenv reader."""
    if not config.is_file():
        raise SettingError(where, f"no such file {config}")
    try:
        config.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SettingError(where, f"cannot read {config}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        byte, offset = exc.object[exc.start], exc.start
        raise SettingError(
            where, f"{config}: not UTF-8 text (byte 0x{byte:02x} at offset {offset})"
        ) from None


def _load(kind: type[S]) -> S:
    try:
        return kind()
    except ValidationError as exc:
        raise _setting_error(kind, exc, {}, {}) from None


def _setting_error(
    kind: type[BaseSettings],
    exc: ValidationError,
    given: Mapping[str, Any],
    flags: Mapping[str, str],
) -> SettingError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    if field in given and field in flags:
        where = flags[field]
    elif issubclass(kind, EvroamSettings) and field in kind.model_fields:
        where = kind.variable(field)
    else:
        where = PREFIX + field.upper()
    if first["type"] == "missing":
        hint = f" (nor {flags[field]})" if field in flags else ""
        return SettingError(where, f"not set{hint}")
    problem = first["msg"].removeprefix("Value error, ")
    info = kind.model_fields.get(field)
    secret = info is None or "SecretStr" in str(info.annotation)
    if first["type"] not in ("weak_secret", "value_error") and not secret and "input" in first:
        problem += f" (got {first['input']!r})"  # never a secret's value
    return SettingError(where, problem)
