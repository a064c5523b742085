"""One way to configure: each server kind's settings from the environment and a dotenv
file, options over the environment over the file, and one line naming the variable for a
missing or weak secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from evroam.clearinghouse.settings import ClearinghouseSettings
from evroam.core.settings import SettingError
from evroam.db.engine import default_url
from evroam.db.settings import DatabaseSettings
from evroam.gateway.settings import FLAGS as GATEWAY_FLAGS
from evroam.gateway.settings import GatewayLinkSettings, GatewaySettings
from evroam.utility.settings import FLAGS, UtilitySettings

STRONG = "a-strong-secret-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EVROAM_ variable of the developer's shell leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("EVROAM_"):
            monkeypatch.delenv(name)


def dotenv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "evroam.env"
    path.write_text(text, encoding="utf-8")
    return path


def test_utility_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVROAM_UTILITY_ID", "PGX")
    monkeypatch.setenv("EVROAM_DATABASE_URL", "sqlite:///u.db")
    monkeypatch.setenv("EVROAM_OPERATOR_TOKEN", STRONG)
    monkeypatch.setenv("EVROAM_PORTAL_SECRET", STRONG)
    monkeypatch.setenv("EVROAM_PORT", "9100")
    settings = UtilitySettings.load()
    assert settings.utility_id == "PGX"
    assert settings.database_url == "sqlite:///u.db"
    assert settings.operator_token is not None
    assert settings.operator_token.get_secret_value() == STRONG
    assert settings.port == 9100
    assert settings.host == "127.0.0.1"
    assert settings.ch_url is None


def test_secrets_never_show_in_a_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVROAM_OPERATOR_TOKEN", STRONG)
    settings = UtilitySettings.load(utility_id="PGX")
    assert STRONG not in repr(settings)
    assert STRONG not in str(settings)


def test_option_over_environment_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = dotenv(
        tmp_path,
        "EVROAM_UTILITY_ID=FROM-FILE\nEVROAM_PORT=7000\nEVROAM_HOST=0.0.0.0\n"
        f"EVROAM_OPERATOR_TOKEN={STRONG}\n# a comment\nEVROAM_CH_ID=ignored-here\n",
    )
    monkeypatch.setenv("EVROAM_PORT", "8000")
    monkeypatch.setenv("EVROAM_UTILITY_ID", "FROM-ENV")
    settings = UtilitySettings.load(config, utility_id="FROM-OPTION")
    assert settings.utility_id == "FROM-OPTION"  # option over environment
    assert settings.port == 8000  # environment over file
    assert settings.host == "0.0.0.0"  # file over default
    assert settings.operator_token is not None


def test_the_file_can_be_named_by_evroam_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVROAM_CONFIG", str(dotenv(tmp_path, "EVROAM_DATABASE_URL=sqlite:///f.db")))
    assert default_url() == "sqlite:///f.db"
    assert DatabaseSettings.load(database_url="sqlite:///o.db").database_url == "sqlite:///o.db"


def test_a_missing_settings_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SettingError) as given:
        DatabaseSettings.load(tmp_path / "nope.env")
    assert str(given.value) == f"--config: no such file {tmp_path / 'nope.env'}"
    monkeypatch.setenv("EVROAM_CONFIG", str(tmp_path / "gone.env"))
    with pytest.raises(SettingError) as named:
        DatabaseSettings.load()
    assert str(named.value) == f"EVROAM_CONFIG: no such file {tmp_path / 'gone.env'}"


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVROAM_DATABASE_URL", "")
    monkeypatch.setenv("EVROAM_OPERATOR_TOKEN", "")
    assert DatabaseSettings.load().database_url is None
    assert UtilitySettings.load(utility_id="PGX").operator_token is None


@pytest.mark.parametrize(
    "variable",
    [
        "EVROAM_OPERATOR_TOKEN",
        "EVROAM_PORTAL_SECRET",
        "EVROAM_CH_REGISTRATION_TOKEN",
    ],
)
def test_a_weak_secret_is_one_line_naming_the_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(variable, "short-secret")
    with pytest.raises(SettingError) as refused:
        UtilitySettings.load(
            utility_id="PGX",
            ch_url="http://127.0.0.1:8200",
            ch_credentials_file=tmp_path / "none-yet.json",  # never registered
        )
    assert str(refused.value) == f"{variable}: must be at least 16 characters"
    assert "short-secret" not in str(refused.value)


def test_a_weak_secret_in_the_file_names_the_variable(tmp_path: Path) -> None:
    config = dotenv(tmp_path, "EVROAM_UTILITY_ID=PGX\nEVROAM_PORTAL_SECRET=0123456789\n")
    with pytest.raises(SettingError) as refused:
        UtilitySettings.load(config)
    assert str(refused.value) == "EVROAM_PORTAL_SECRET: must be at least 16 characters"


def test_missing_settings_name_the_variable_and_the_option(tmp_path: Path) -> None:
    with pytest.raises(SettingError) as missing:
        UtilitySettings.load(flags=FLAGS)
    assert str(missing.value) == "EVROAM_UTILITY_ID: not set (nor --utility)"
    with pytest.raises(SettingError) as token_a:
        UtilitySettings.load(
            utility_id="PGX",
            ch_url="http://127.0.0.1:8200",
            ch_credentials_file=tmp_path / "none-yet.json",  # never registered
        )
    assert str(token_a.value) == (
        "EVROAM_CH_REGISTRATION_TOKEN: not set (registering with the clearinghouse needs it)"
    )
    with pytest.raises(SettingError) as key:
        UtilitySettings.load(utility_id="PGX", tls_cert=Path("cert.pem"))
    assert str(key.value) == "EVROAM_TLS_KEY: not set (the certificate needs it)"


def test_a_bad_value_names_the_option_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingError) as option:
        UtilitySettings.load(flags=FLAGS, utility_id="PGX", port="eighty")
    assert str(option.value) == (
        "--port: Input should be a valid integer, unable to parse string as an integer "
        "(got 'eighty')"
    )
    monkeypatch.setenv("EVROAM_PORT", "eighty")
    with pytest.raises(SettingError) as env:
        UtilitySettings.load(flags=FLAGS, utility_id="PGX")
    assert str(env.value).startswith("EVROAM_PORT: Input should be a valid integer")


def test_clearinghouse_member_tokens_from_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dotenv(
        tmp_path,
        "EVROAM_CH_ID=CH-WEST\n"
        "EVROAM_CH_REGISTRATION_PGX=pgx-token-from-the-file\n"
        "EVROAM_CH_REGISTRATION_MHE=mhe-token-from-the-file\n",
    )
    monkeypatch.setenv("EVROAM_CH_REGISTRATION_MHE", "mhe-token-from-the-environment")
    monkeypatch.setenv("EVROAM_CH_REGISTRATION_X_1", "token-of-x-1-0123456")
    settings = ClearinghouseSettings.load(config)
    assert settings.ch_id == "CH-WEST"
    assert settings.registration_token("PGX") == "pgx-token-from-the-file"
    assert settings.registration_token("MHE") == "mhe-token-from-the-environment"
    assert settings.registration_token("x-1") == "token-of-x-1-0123456"
    assert settings.registration_token("NONE") is None
    assert "token-from" not in repr(settings)
    assert ClearinghouseSettings.load().ch_id == "CH"


def test_a_weak_member_token_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVROAM_CH_REGISTRATION_PGX", "too-short")
    settings = ClearinghouseSettings.load()
    with pytest.raises(SettingError) as refused:
        settings.registration_token("PGX")
    assert str(refused.value) == "EVROAM_CH_REGISTRATION_PGX: must be at least 16 characters"


def test_gateway_settings_from_options_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dotenv(
        tmp_path,
        "EVROAM_GATEWAY_URL=http://file\nEVROAM_GATEWAY_PREMISE=PGX-P-ALICE\n"
        "EVROAM_GATEWAY_PORTALS=PGX-EP-ALICE-1:7200, PGX-EP-ALICE-2:3600\n",
    )
    monkeypatch.setenv("EVROAM_GATEWAY_TOKEN", STRONG)
    monkeypatch.setenv("EVROAM_GATEWAY_URL", "http://env")
    settings = GatewaySettings.load(config, outbox=tmp_path / "o", eumd_id="PGX-EUMD-ALICE")
    assert settings.url == "http://env"
    assert settings.premise == "PGX-P-ALICE"
    assert settings.portals == (("PGX-EP-ALICE-1", 7200), ("PGX-EP-ALICE-2", 3600))
    assert settings.interval_s == 900
    link = GatewayLinkSettings.load(config, outbox=tmp_path / "o")
    assert link.token.get_secret_value() == STRONG
    options = GatewaySettings.load(config, portals=["A:1000"], outbox=tmp_path / "o")
    assert options.portals == (("A", 1000),)


def test_gateway_refusals_name_the_option_or_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"url": "http://u", "premise": "P", "outbox": tmp_path / "o"}
    with pytest.raises(SettingError) as weak:
        GatewaySettings.load(flags=GATEWAY_FLAGS, token="short", **base)
    assert str(weak.value) == "--token: must be at least 16 characters"
    with pytest.raises(SettingError) as missing:
        GatewaySettings.load(flags=GATEWAY_FLAGS, **base)
    assert str(missing.value) == "EVROAM_GATEWAY_TOKEN: not set (nor --token)"
    with pytest.raises(SettingError) as portal:
        GatewaySettings.load(flags=GATEWAY_FLAGS, token=STRONG, portals=["bad"], **base)
    assert str(portal.value) == "--portal: expected PORTAL_ID:RATING_W, got 'bad'"
    monkeypatch.setenv("EVROAM_GATEWAY_PORTALS", "A:0")
    with pytest.raises(SettingError) as env:
        GatewaySettings.load(flags=GATEWAY_FLAGS, token=STRONG, **base)
    assert str(env.value) == "EVROAM_GATEWAY_PORTALS: expected PORTAL_ID:RATING_W, got 'A:0'"
