"""The Secret of the dev overlay, made in the cluster so that `kubectl apply -k deploy/k8s/overlays/dev` needs
nothing created by hand: run by the Job `mailer-create-secret` (secret-job.yaml) on every apply.

    python create_secret.py --secret NAME --database-url postgresql://USER@HOST:PORT/DATABASE
        [--api-server URL] [--service-account-dir DIR]

If the Secret exists it is kept as it is, whatever it holds: a re-apply changes nothing, so tokens, admin
sessions and the PostgreSQL password (which the in-cluster PostgreSQL keeps in its volume from its first
start) stay valid. Otherwise it is created with a fresh random value for each key the base and the dev
PostgreSQL read, and the database URL with the new PostgreSQL password in it. A Secret that appears
between the check and the creation (409 Conflict: someone else made it) is kept too. Any other answer
exits 1, and the Job runs it again.

It talks to the API server with the pod's service-account token over HTTPS, checking the server's
certificate against the cluster's CA, as every in-cluster client does. Standard library only: it runs with
the mailer image's Python. It prints what it did and the names of the keys, never a value.

Why not deploy/compose/generate_secrets.py: kustomize puts into a ConfigMap only files in or below the
overlay, and the image holds nothing of deploy/, so the pod cannot import it. The keys and the generation
(`secrets.token_urlsafe` of 32 random bytes) are compose's; tests/test_k8s_secrets.py checks they agree.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

API_SERVER = "https://kubernetes.default.svc"
# Where the kubelet mounts the pod's service-account token, the cluster's CA and the pod's namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# 32 random bytes for every value: mailer's minimum for its JWT and session secrets (MIN_SECRET_BYTES), and
# no burden for the others, which nobody types (the admin password is read back with kubectl).
KEY_BYTES = 32
GENERATED = (
    "MAILER_JWT_SECRET",
    "MAILER_SESSION_SECRET",
    "MAILER_ADMIN_PASSWORD",
    # The sandbox checks the same token that mailer sends.
    "MAILER_PROVIDER_TOKEN",
    # Read by the dev PostgreSQL on its first start, and put into the database URL.
    "POSTGRES_PASSWORD",
)
DATABASE_URL_KEY = "MAILER_DATABASE_URL"
# One request to an API server in the same cluster; the Job runs the script again after a failure.
REQUEST_TIMEOUT_S = 10
LABELS = {"app.kubernetes.io/part-of": "mailer", "app.kubernetes.io/managed-by": "mailer-create-secret"}


class ApiError(Exception):
    """An answer of the API server that leaves the Secret's state unknown."""


def with_password(url: str, password: str) -> str:
    """`url` (a user, no password) with `password` in it, escaped as a URL needs."""
    parts = urllib.parse.urlsplit(url)
    if not parts.username or parts.password is not None or not parts.hostname:
        raise ValueError(f"{url!r}: expected SCHEME://USER@HOST[:PORT]/DATABASE, with no password")
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def secret_values(database_url: str, token: Callable[[int], str] = secrets.token_urlsafe) -> dict[str, str]:
    """A fresh value for each key of the Secret."""
    values = {key: token(KEY_BYTES) for key in GENERATED}
    values[DATABASE_URL_KEY] = with_password(database_url, values["POSTGRES_PASSWORD"])
    return values


def secret_manifest(name: str, values: dict[str, str]) -> dict[str, Any]:
    """The Secret as the API takes it: `data` holds each value base64-encoded."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": LABELS},
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(values.items())},
    }


class Api:
    """The Secrets of one namespace through the API server, as the pod's service account."""

    def __init__(self, server: str, account_dir: Path) -> None:
        self.token = (account_dir / "token").read_text().strip()
        namespace = (account_dir / "namespace").read_text().strip()
        self.secrets_url = f"{server.rstrip('/')}/api/v1/namespaces/{urllib.parse.quote(namespace)}/secrets"
        self.namespace = namespace
        context = ssl.create_default_context(cafile=str(account_dir / "ca.crt"))
        # Straight to the API server: a proxy from the environment has no business between them.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
        """The answer's status and the message of a Status answer (never a Secret's data)."""
        request = urllib.request.Request(
            url,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        try:
            with self.opener.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                return response.status, ""
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, status_message(exc.read())
            finally:
                exc.close()

    def exists(self, name: str) -> bool:
        status, message = self.call("GET", f"{self.secrets_url}/{urllib.parse.quote(name)}")
        if status == 200:
            return True
        if status == 404:
            return False
        raise ApiError(f"GET secret {self.namespace}/{name}: {status} {message}")

    def create(self, manifest: dict[str, Any]) -> bool:
        """True when created, False when it exists already (made by someone else since `exists`)."""
        status, message = self.call("POST", self.secrets_url, manifest)
        if status in (200, 201, 202):  # the API's conventions: 201 Created; 200 and 202 are successes too
            return True
        if status == 409:
            return False
        raise ApiError(f"POST secret {self.namespace}/{manifest['metadata']['name']}: {status} {message}")


def status_message(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    return str(answer.get("message", "")) if isinstance(answer, dict) else ""


def ensure_secret(api: Api, name: str, database_url: str) -> str:
    """The Secret in place; what was done, for the log."""
    if api.exists(name):
        return "exists: kept"
    values = secret_values(database_url)
    if not api.create(secret_manifest(name, values)):
        return "created meanwhile by someone else: kept"
    return f"created with fresh values for {', '.join(sorted(values))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--secret", required=True, help="the Secret's name")
    parser.add_argument(
        "--database-url",
        required=True,
        help="the PostgreSQL URL without password; the generated POSTGRES_PASSWORD goes into it",
    )
    parser.add_argument("--api-server", default=API_SERVER)
    parser.add_argument("--service-account-dir", type=Path, default=SERVICE_ACCOUNT_DIR)
    args = parser.parse_args(argv)
    try:
        with_password(args.database_url, "checked")  # a bad URL fails before anything is sent
        api = Api(args.api_server, args.service_account_dir)
        done = ensure_secret(api, args.secret, args.database_url)
    except (ApiError, OSError, ValueError) as exc:
        print(f"create_secret: {exc}", file=sys.stderr)
        return 1
    print(f"create_secret: secret {api.namespace}/{args.secret} {done}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
