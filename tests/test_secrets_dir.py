"""MAILER_SECRETS_DIR: settings from one-value files named like the variables, the environment winning over
them, and a directory that is not there refused at start (docs/deploy.md, "Docker Compose")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailer.cli import SECRETS_DIR_VARIABLE, load_settings
from tests.process_support import run_python

JWT_SECRET_IN_FILE = "jwt-secret-from-a-file-0123456789abcdef"
ADMIN_PASSWORD_IN_FILE = "admin password from a file"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The test's environment without any MAILER_* variable: each test sets its own."""
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    # As the compose secrets job writes them (a trailing newline), and in either case.
    (directory / "mailer_jwt_secret").write_text(JWT_SECRET_IN_FILE + "\n")
    (directory / "MAILER_ADMIN_PASSWORD").write_text(ADMIN_PASSWORD_IN_FILE + "\n")
    (directory / "mailer_database_url").write_text(f"sqlite:///{tmp_path}/from-file.db\n")
    return directory


def test_values_come_from_the_files(env: pytest.MonkeyPatch, secrets_dir: Path) -> None:
    env.setenv(SECRETS_DIR_VARIABLE, str(secrets_dir))
    settings = load_settings()
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == JWT_SECRET_IN_FILE
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == ADMIN_PASSWORD_IN_FILE
    assert settings.database_url == f"sqlite:///{secrets_dir.parent}/from-file.db"
    # What has no file keeps its default.
    assert settings.session_secret is None
    assert settings.port == 8080


def test_the_environment_wins_over_a_file(env: pytest.MonkeyPatch, secrets_dir: Path) -> None:
    env.setenv(SECRETS_DIR_VARIABLE, str(secrets_dir))
    env.setenv("MAILER_ADMIN_PASSWORD", "admin password from the env")
    settings = load_settings()
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "admin password from the env"
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == JWT_SECRET_IN_FILE


def test_unset_or_empty_reads_no_files(env: pytest.MonkeyPatch, secrets_dir: Path) -> None:
    env.chdir(secrets_dir)  # files named like settings in the working directory are not read either
    assert load_settings().jwt_secret is None
    env.setenv(SECRETS_DIR_VARIABLE, "")
    assert load_settings().jwt_secret is None


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_a_secrets_dir_that_is_no_directory_is_named_and_nothing_starts(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "secrets"
    if kind == "a file":
        path.write_text("not a directory\n")
    db = tmp_path / "m.db"
    result = run_python(
        ["run.py"], {SECRETS_DIR_VARIABLE: str(path), "MAILER_DATABASE_URL": f"sqlite:///{db}"}
    )
    assert result.returncode == 2, result.stderr
    assert f"{SECRETS_DIR_VARIABLE}={path} is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists()


def test_a_weak_value_in_a_file_is_refused_by_name_without_echoing_it(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "mailer_session_secret").write_text("CHANGE-ME\n")
    db = tmp_path / "m.db"
    result = run_python(
        ["-m", "mailer", "migrate"],
        {SECRETS_DIR_VARIABLE: str(directory), "MAILER_DATABASE_URL": f"sqlite:///{db}"},
    )
    assert result.returncode == 2, result.stderr
    assert "MAILER_SESSION_SECRET: must be at least 32 bytes long" in result.stderr
    assert "CHANGE-ME" not in result.stderr
    assert not db.exists()
