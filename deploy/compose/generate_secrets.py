"""The secrets of the compose stack, one file each in a directory (the `secrets` volume), made on the first
start so that `cp .env.example .env && docker compose up -d` needs nothing filled in.

    python generate_secrets.py DIR [--owner READER=UID[:GID]]... [--pgpass HOST:PORT:DATABASE:USER]

For each secret: a value given in the environment (from .env) is written, replacing the file's; otherwise an
existing file is kept as it is (a second start changes nothing, so tokens, sessions and the PostgreSQL
password survive); otherwise a random value is written. Files are mode 0600, owned by the user of the
process that reads it (`--owner`); a reader without `--owner` reads as the user running this (root in
compose: PostgreSQL's entrypoint reads its file as root before it drops to its own user).

`--pgpass` also writes `pgpass`, the PostgreSQL password file (`PGPASSFILE`) from which mailer's driver takes
the password of a database URL that has none: one line, HOST:PORT:DATABASE:USER:PASSWORD.

Standard library only: it runs with the image's Python before anything of mailer starts. It prints which
files it made or kept, never a value.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

FILE_MODE = 0o600
# 32 random bytes for a key: as much as HS256 can use, and mailer's minimum (MIN_SECRET_BYTES) for its
# JWT and session secrets. 18 bytes (24 characters) for a password a person may have to type or paste.
KEY_BYTES = 32
PASSWORD_BYTES = 18
PGPASS_FILE = "pgpass"


@dataclass(frozen=True)
class Secret:
    file: str  # the name its reader looks for (mailer's: the variable's name, lower-case)
    variable: str  # the .env variable that gives it a value instead
    random_bytes: int
    reader: str  # whose process reads it: the key of an --owner


SECRETS = (
    Secret("mailer_jwt_secret", "MAILER_JWT_SECRET", KEY_BYTES, "mailer"),
    Secret("mailer_session_secret", "MAILER_SESSION_SECRET", KEY_BYTES, "mailer"),
    Secret("mailer_admin_password", "MAILER_ADMIN_PASSWORD", PASSWORD_BYTES, "mailer"),
    # The sandbox (same image, same user) checks the token mailer sends.
    Secret("mailer_provider_token", "MAILER_PROVIDER_TOKEN", KEY_BYTES, "mailer"),
    Secret("postgres_password", "POSTGRES_PASSWORD", KEY_BYTES, "postgres"),
    Secret("grafana_admin_password", "GRAFANA_ADMIN_PASSWORD", PASSWORD_BYTES, "grafana"),
)
POSTGRES_PASSWORD = next(s for s in SECRETS if s.variable == "POSTGRES_PASSWORD")


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def parse_owner(text: str) -> tuple[str, Owner]:
    reader, sep, ids = text.partition("=")
    uid, _, gid = ids.partition(":")
    if not sep or not reader or not uid.isdigit() or not (gid.isdigit() or gid == ""):
        raise argparse.ArgumentTypeError(f"{text!r}: expected READER=UID or READER=UID:GID")
    return reader, Owner(int(uid), int(gid or uid))


def parse_pgpass_fields(text: str) -> str:
    fields = text.split(":")
    if len(fields) != 4 or not all(fields):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT:DATABASE:USER")
    return text


def read(path: Path) -> str | None:
    """The file's value as its readers see it (surrounding whitespace stripped), None when absent."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def write(path: Path, value: str, owner: Owner | None) -> None:
    """Replace the file in one step: a reader sees the old value or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)  # left by a run that was killed halfway
    # A new file, 0600 from its creation (the umask can only take bits away): never readable by others.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        data = (value + "\n").encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)


def settle(path: Path, owner: Owner | None) -> None:
    """A kept file gets the mode and owner it should have (an earlier run may have used other ones)."""
    st = path.lstat()
    if st.st_mode & 0o777 != FILE_MODE:
        os.chmod(path, FILE_MODE)
    if owner is not None and (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
        os.chown(path, owner.uid, owner.gid)


def ensure(path: Path, value: str, owner: Owner | None) -> str:
    """Write `value` unless the file holds it already; what was done, for the log."""
    if read(path) == value:
        settle(path, owner)
        return "kept"
    write(path, value, owner)
    return "written"


def generate(
    directory: Path, env: dict[str, str], owners: dict[str, Owner], pgpass: str | None
) -> dict[str, str]:
    """Every secret in place in `directory`; file name -> what was done."""
    directory.mkdir(parents=True, exist_ok=True)
    done: dict[str, str] = {}
    for secret in SECRETS:
        path = directory / secret.file
        owner = owners.get(secret.reader)
        given = env.get(secret.variable, "").strip()
        if "\n" in given:
            raise ValueError(f"{secret.variable} holds a line break")
        if given:
            done[secret.file] = f"{ensure(path, given, owner)} from {secret.variable}"
        elif path.is_file():
            settle(path, owner)
            done[secret.file] = "kept"
        else:
            write(path, secrets.token_urlsafe(secret.random_bytes), owner)
            done[secret.file] = "generated"
    if pgpass is not None:
        password = read(directory / POSTGRES_PASSWORD.file)
        assert password is not None  # written above
        # The password is the last field, taken to the end of the line: written as it is, colons included.
        line = f"{pgpass}:{password}"
        done[PGPASS_FILE] = ensure(directory / PGPASS_FILE, line, owners.get("mailer"))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--owner",
        type=parse_owner,
        action="append",
        default=[],
        metavar="READER=UID[:GID]",
        help="who owns the files READER reads (mailer, postgres, grafana); default: the user running this",
    )
    parser.add_argument(
        "--pgpass",
        type=parse_pgpass_fields,
        metavar="HOST:PORT:DATABASE:USER",
        help=f"write {PGPASS_FILE}, the PostgreSQL password file, for these with the PostgreSQL password",
    )
    args = parser.parse_args(argv)
    try:
        done = generate(args.directory, dict(os.environ), dict(args.owner), args.pgpass)
    except (OSError, ValueError) as exc:
        print(f"generate_secrets: {exc}", file=sys.stderr)
        return 1
    for name, what in done.items():
        print(f"generate_secrets: {args.directory / name}: {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
