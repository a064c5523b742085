"""The example deployment under deploy/ is something an operator can install as is: every
systemd unit passes `systemd-analyze verify`, runs an evroam command that exists, and every
setting in the example environment files is one a server kind reads (a misspelt name would be
ignored silently and the server would start with its default)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evroam.clearinghouse.settings import ClearinghouseSettings
from evroam.cli import app
from evroam.core.settings import EvroamSettings
from evroam.utility.settings import UtilitySettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTALLED = "/opt/evroam/venv/bin/evroam"
UNITS = sorted((DEPLOY / "systemd").iterdir())
ENV_FILES = {
    "utility.env.example": UtilitySettings,
    "clearinghouse.env.example": ClearinghouseSettings,
}


def _instantiated(unit: Path, folder: Path) -> Path:
    """The unit as systemd would load it for instance PGX, with the evroam of this venv."""
    text = unit.read_text(encoding="utf-8").replace(
        INSTALLED, str(Path(sys.executable).parent / "evroam")
    )
    return _write(folder / unit.name.replace("@.", "@PGX."), text)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_units_are_the_ones_the_guide_names() -> None:
    names = {u.name for u in UNITS}
    assert names == {
        "evroam-utility@.service",
        "evroam-clearinghouse.service",
        "evroam-bill-run@.service",
        "evroam-bill-run@.timer",
    }
    guide = (DEPLOY.parent / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert all(name in guide for name in names)


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        assert os.environ.get("CI") != "true", "CI must verify units: install systemd"
        pytest.skip("systemd-analyze is not installed")
    files = [str(_instantiated(unit, tmp_path)) for unit in UNITS]
    done = subprocess.run([analyze, "verify", *files], capture_output=True, text=True, check=False)
    # systemd-analyze exits 0 on an unknown key and only warns: any output is a finding.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("unit", [u for u in UNITS if u.suffix == ".service"], ids=lambda u: u.name)
def test_every_unit_runs_an_evroam_command_that_exists(unit: Path) -> None:
    line = next(
        line.removeprefix("ExecStart=")
        for line in unit.read_text(encoding="utf-8").splitlines()
        if line.startswith("ExecStart=")
    )
    words = shlex.split(line.replace("%%", "%").replace("$$", "$"))
    if words[:2] == ["/bin/sh", "-c"]:  # the bill run computes its period in a shell
        words = shlex.split(words[2].removeprefix("exec "))
    assert words[0] == INSTALLED
    command = []  # the subcommand's words, up to its first option
    for word in words[1:]:
        if word.startswith("-"):
            break
        command.append(word)
    assert command, line
    help_run = CliRunner().invoke(app, [*command, "--help"])
    assert help_run.exit_code == 0, help_run.output


@pytest.mark.parametrize("name", sorted(ENV_FILES))
def test_every_example_setting_is_read_by_its_server(name: str) -> None:
    kind: type[EvroamSettings] = ENV_FILES[name]
    variables = re.findall(r"^(EVROAM_[A-Z_]+)=", (DEPLOY / "env" / name).read_text("utf-8"), re.M)
    known = {kind.variable(field) for field in kind.model_fields}
    if kind is ClearinghouseSettings:
        variables = [v for v in variables if not v.startswith("EVROAM_CH_REGISTRATION_")]
    assert variables and set(variables) <= known, set(variables) - known


@pytest.mark.parametrize("name", sorted(ENV_FILES))
def test_every_example_file_loads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in list(os.environ):
        if variable.startswith("EVROAM_"):
            monkeypatch.delenv(variable)
    kind = ENV_FILES[name]
    overrides = {"utility_id": "PGX"} if kind is UtilitySettings else {}
    settings = kind.load(DEPLOY / "env" / name, **overrides)
    assert settings.database_url is not None and settings.database_url.startswith("postgresql")
