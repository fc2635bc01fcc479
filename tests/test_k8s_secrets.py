"""The dev overlay's own Secret: the Job that creates `mailer-secrets` on the first `kubectl apply -k` and
keeps it on every later one, its least-privilege account, and its script run on the host, as the Job runs
it, against a small fake API server over TLS on loopback (no cluster here).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import functools
import importlib.util
import ipaddress
import json
import os
import ssl
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy.engine import make_url

from mailer.settings import MIN_SECRET_BYTES, Settings, password_weakness, secret_weakness
from tests.test_deploy import (
    K8S,
    ROOT,
    SECRET_EXAMPLE,
    TOOL_TIMEOUT_S,
    by_kind,
    dockerfile_uid,
    kustomize,
    on_the_host,
    secrets_script,
)

DEV = K8S / "overlays" / "dev"
SCRIPT = DEV / "create_secret.py"
SECRET_JOB = DEV / "secret-job.yaml"
SECRET_NAME = "mailer-secrets"
JOB_NAME = "mailer-create-secret"
NAMESPACE = "mailer"
# What the fake API server expects, and the script sends from the token file.
SERVICE_ACCOUNT_TOKEN = "a-service-account-token"
# A proxy that nobody runs: a script that used the environment's proxy would fail to connect.
DEAD_PROXY = "http://127.0.0.1:9"
CERT_LIFETIME = datetime.timedelta(hours=1)
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@functools.cache
def script() -> ModuleType:
    """deploy/k8s/overlays/dev/create_secret.py as a module, for its table of keys."""
    name = "deploy_k8s_dev_create_secret"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def secret_keys() -> set[str]:
    return set(script().GENERATED) | {script().DATABASE_URL_KEY}


def pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each workload's pod spec, by `Kind/name`."""
    return {
        f"{m['kind']}/{m['metadata']['name']}": m["spec"]["template"]["spec"]
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def secret_references(spec: dict[str, Any]) -> set[tuple[str, str | None]]:
    """(Secret name, key or None for all of it) of every envFrom and secretKeyRef of a pod's containers."""
    found: set[tuple[str, str | None]] = set()
    for container in spec.get("initContainers", []) + spec["containers"]:
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                found.add((source["secretRef"]["name"], None))
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                found.add((ref["name"], ref["key"]))
    return found


def mounts_a_token(spec: dict[str, Any]) -> bool:
    """Whether a pod gets an API token: unless it says otherwise, the default ServiceAccount's is mounted."""
    return bool(spec.get("automountServiceAccountToken", True))


def job_argument(container: dict[str, Any], flag: str) -> str:
    (value,) = [arg.removeprefix(f"--{flag}=") for arg in container["args"] if arg.startswith(f"--{flag}=")]
    return str(value)


# --- the rendered overlays -------------------------------------------------------------------------------


def test_the_dev_overlay_creates_its_secret_with_an_account_that_may_do_nothing_else() -> None:
    manifests = [m for m in yaml.safe_load_all(kustomize("dev")) if m]
    job = by_kind(manifests, "Job")[JOB_NAME]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    # It creates the one Secret every pod of the overlay reads, and nothing the pods read is missing from it.
    assert job_argument(container, "secret") == SECRET_NAME
    readers = {name: secret_references(spec) for name, spec in pod_specs(manifests).items()}
    assert {secret for refs in readers.values() for secret, _ in refs} == {SECRET_NAME}
    assert {key for refs in readers.values() for _, key in refs} - {None} <= secret_keys()
    for name in ("Deployment/mailer", "Job/mailer-migrate", "StatefulSet/postgres", "Deployment/sandbox"):
        assert readers[name], f"{name} reads the Secret"

    # Its account: get on that one name, create (which RBAC cannot narrow to a name), nothing else.
    account = by_kind(manifests, "ServiceAccount")
    assert list(account) == [pod["serviceAccountName"]]
    assert account[pod["serviceAccountName"]]["automountServiceAccountToken"] is False
    (role,) = by_kind(manifests, "Role").values()
    assert "ClusterRole" not in {m["kind"] for m in manifests}
    verbs: set[str] = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""], rule
        assert rule["resources"] == ["secrets"], rule
        verbs |= set(rule["verbs"])
        if rule["verbs"] == ["create"]:
            # A create names no object when it is authorized: a rule with names would refuse every create.
            assert "resourceNames" not in rule, rule
        else:
            assert rule.get("resourceNames") == [SECRET_NAME], rule
    assert verbs == {"get", "create"}
    (binding,) = by_kind(manifests, "RoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    assert {m["metadata"]["namespace"] for m in (job, role, binding, *account.values())} == {NAMESPACE}

    # Its pod is the only one with an API token.
    tokens = {name for name, spec in pod_specs(manifests).items() if mounts_a_token(spec)}
    assert tokens == {f"Job/{JOB_NAME}"}

    # The restricted Pod Security level, as the namespace enforces it.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }

    # The mailer image (already in the cluster) runs the script from a ConfigMap, the file in the repository.
    deployment = by_kind(manifests, "Deployment")["mailer"]
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config = by_kind(manifests, "ConfigMap")[volume["configMap"]["name"]]
    assert container["command"] == ["python", f"{mount['mountPath']}/{SCRIPT.name}"]
    assert config["data"][SCRIPT.name] == SCRIPT.read_text()
    assert pod["restartPolicy"] == "OnFailure"
    assert job["spec"]["backoffLimit"] > 0

    # The database URL it writes points at the dev PostgreSQL, as its user, with its database.
    postgres = by_kind(manifests, "StatefulSet")["postgres"]["spec"]["template"]["spec"]["containers"][0]
    postgres_env = {v["name"]: v.get("value") for v in postgres["env"]}
    service = by_kind(manifests, "Service")["postgres"]
    url = make_url(job_argument(container, "database-url"))
    assert url.drivername == "postgresql"
    assert (url.username, url.database) == (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_DB"])
    assert (url.host, url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])


def test_prod_renders_no_secret_and_no_secret_job() -> None:
    manifests = [m for m in yaml.safe_load_all(kustomize("prod")) if m]
    kinds = {m["kind"] for m in manifests}
    access = {"Secret", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    assert not kinds & access
    assert set(by_kind(manifests, "Job")) == {"mailer-migrate"}
    assert JOB_NAME not in by_kind(manifests, "ConfigMap")
    tokens = [name for name, spec in pod_specs(manifests).items() if mounts_a_token(spec)]
    assert not tokens


def test_the_script_makes_the_keys_of_the_secret_example_as_compose_makes_them() -> None:
    example = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert set(example["stringData"]) == secret_keys()
    # The same names as compose's secrets of mailer and PostgreSQL, at least as many random bytes each.
    compose = {s.variable: s for s in secrets_script().SECRETS if s.reader in ("mailer", "postgres")}
    assert set(script().GENERATED) == set(compose)
    assert all(s.random_bytes <= script().KEY_BYTES for s in compose.values())


def test_the_password_goes_into_the_database_url_escaped_and_a_url_with_one_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = script().with_password("postgresql://mailer@postgres:5432/mailer", "p@ss/w:rd")
    assert url == "postgresql://mailer:p%40ss%2Fw%3Ard@postgres:5432/mailer"
    assert make_url(url).password == "p@ss/w:rd"
    for bad in ("postgresql://postgres:5432/mailer", "postgresql://mailer:chosen@postgres:5432/mailer"):
        with pytest.raises(ValueError, match="with no password"):
            script().with_password(bad, "x")
        # Refused before anything is read or sent: there is no service account here.
        code = script().main(["--secret=s", f"--database-url={bad}", "--service-account-dir=/nonexistent"])
        assert code == 1
        assert "with no password" in capsys.readouterr().err


# --- the script against a fake API server ----------------------------------------------------------------


@dataclass
class Tls:
    """A cluster CA and the API server's certificate for 127.0.0.1, signed by it."""

    ca_pem: bytes
    server: ssl.SSLContext


def certificate_authority(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CERT_LIFETIME)
        .not_valid_after(now + CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_tls(directory: Path) -> Tls:
    ca_key, ca = certificate_authority("fake cluster CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CERT_LIFETIME)
        .not_valid_after(now + CERT_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return Tls(ca.public_bytes(serialization.Encoding.PEM), server)


@dataclass
class Call:
    method: str
    path: str
    authorization: str
    body: Any


@dataclass
class FakeApiServer:
    """The two requests the script makes, answered as the API server would, for one namespace."""

    url: str = ""
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    # Set: every request is answered with this status (RBAC refusing, say).
    refuse_with: int | None = None
    # Set: the Secret appears between the script's GET and its POST.
    made_meanwhile: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        prefix = f"/api/v1/namespaces/{NAMESPACE}/secrets"
        app.router.add_get(prefix + "/{name}", self.get)
        app.router.add_post(prefix, self.create)
        return app

    async def record(self, request: web.Request) -> web.Response | None:
        body = await request.json() if request.can_read_body else None
        self.calls.append(Call(request.method, request.path, request.headers.get("Authorization", ""), body))
        if request.headers.get("Authorization") != f"Bearer {SERVICE_ACCOUNT_TOKEN}":
            return status(401, "Unauthorized")
        if self.refuse_with is not None:
            return status(self.refuse_with, 'secrets is forbidden: User "system:serviceaccount:x" cannot')
        return None

    async def get(self, request: web.Request) -> web.Response:
        if refused := await self.record(request):
            return refused
        name = request.match_info["name"]
        if name not in self.secrets:
            return status(404, f'secrets "{name}" not found')
        return web.json_response(self.secrets[name])

    async def create(self, request: web.Request) -> web.Response:
        if refused := await self.record(request):
            return refused
        manifest = self.calls[-1].body
        name = manifest["metadata"]["name"]
        if self.made_meanwhile:
            self.secrets[name] = {"kind": "Secret", "metadata": {"name": name}, "data": {}}
        if name in self.secrets:
            return status(409, f'secrets "{name}" already exists')
        self.secrets[name] = manifest
        return web.json_response(manifest, status=201)


def status(code: int, message: str) -> web.Response:
    """A Status object, as the API server answers an error."""
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}
    return web.json_response(body, status=code)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path)


@pytest.fixture
async def api_server(tls: Tls) -> AsyncIterator[FakeApiServer]:
    fake = FakeApiServer()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"https://{host}:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def service_account(directory: Path, ca_pem: bytes) -> Path:
    """What the kubelet mounts in the Job's pod: the token, the cluster's CA and the namespace."""
    directory.mkdir(exist_ok=True)
    (directory / "token").write_text(SERVICE_ACCOUNT_TOKEN + "\n")
    (directory / "ca.crt").write_bytes(ca_pem)
    (directory / "namespace").write_text(NAMESPACE)
    return directory


def job_container() -> dict[str, Any]:
    """The secret Job's container as written in secret-job.yaml (kustomize changes only its image)."""
    (job,) = [m for m in yaml.safe_load_all(SECRET_JOB.read_text()) if m["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


async def run_job(api_url: str, account_dir: Path) -> Run:
    """The Job's command line on this machine: this venv's Python, the script from the repository, and the
    API server and service-account directory of this test instead of the pod's."""
    container = job_container()
    (mount,) = container["volumeMounts"]
    in_pod = f"{mount['mountPath']}/{SCRIPT.name}"
    argv = [str(SCRIPT) if part == in_pod else part for part in on_the_host(container["command"])]
    assert str(SCRIPT) in argv, argv
    argv += [*container["args"], f"--api-server={api_url}", f"--service-account-dir={account_dir}"]
    env = {"PATH": "/usr/bin:/bin", "HTTPS_PROXY": DEAD_PROXY, "https_proxy": DEAD_PROXY}
    child = await asyncio.create_subprocess_exec(*argv, env=env, stdout=PIPE, stderr=PIPE)
    async with asyncio.timeout(TOOL_TIMEOUT_S):
        out, err = await child.communicate()
    assert child.returncode is not None
    return Run(child.returncode, out.decode(), err.decode())


def decoded(manifest: dict[str, Any]) -> dict[str, str]:
    values = {}
    for key, value in manifest["data"].items():
        try:
            values[key] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AssertionError(f"{key}: not base64 of UTF-8 text: {exc}") from None
    return values


async def test_the_first_run_creates_the_secret_and_a_second_keeps_it(
    api_server: FakeApiServer, tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = service_account(tmp_path / "account", tls.ca_pem)
    first = await run_job(api_server.url, account)
    assert first.returncode == 0, first.stderr
    prefix = f"/api/v1/namespaces/{NAMESPACE}/secrets"
    assert [(c.method, c.path) for c in api_server.calls] == [
        ("GET", f"{prefix}/{SECRET_NAME}"),
        ("POST", prefix),
    ]
    assert {c.authorization for c in api_server.calls} == {f"Bearer {SERVICE_ACCOUNT_TOKEN}"}
    manifest = api_server.calls[1].body
    assert (manifest["apiVersion"], manifest["kind"], manifest["type"]) == ("v1", "Secret", "Opaque")
    assert manifest["metadata"]["name"] == SECRET_NAME
    assert "ownerReferences" not in manifest["metadata"], "it must outlive the Job"

    values = decoded(manifest)
    assert set(values) == secret_keys()
    assert all(len(value.encode()) >= MIN_SECRET_BYTES for value in values.values()), {
        key: len(value) for key, value in values.items()
    }
    assert len(set(values.values())) == len(values), "each value its own"
    assert not [v for v in values.values() if v in first.stdout + first.stderr], "no value is printed"
    assert secret_weakness(values["MAILER_JWT_SECRET"], MIN_SECRET_BYTES) is None
    assert secret_weakness(values["MAILER_SESSION_SECRET"], MIN_SECRET_BYTES) is None
    assert password_weakness(values["MAILER_ADMIN_PASSWORD"]) is None
    url = make_url(values["MAILER_DATABASE_URL"])
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "mailer",
        values["POSTGRES_PASSWORD"],
        "postgres",
        5432,
        "mailer",
    )
    # What a mailer pod of the dev overlay gets (the dev ConfigMap's values and this Secret) is accepted.
    for name in [n for n in os.environ if n.startswith("MAILER_")]:
        monkeypatch.delenv(name)
    for name, value in {**dev_config(), **values}.items():
        if name.startswith("MAILER_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == values["MAILER_JWT_SECRET"]

    # A re-apply runs the Job again: it finds the Secret and leaves it as it is.
    stored = json.dumps(api_server.secrets, sort_keys=True)
    second = await run_job(api_server.url, account)
    assert second.returncode == 0, second.stderr
    assert [c.method for c in api_server.calls] == ["GET", "POST", "GET"]
    assert json.dumps(api_server.secrets, sort_keys=True) == stored
    assert "kept" in second.stdout


def dev_config() -> dict[str, str]:
    """The dev overlay's ConfigMap `mailer-config`: the base's env file, the overlay's literals over it."""
    values = dict(
        line.split("=", 1) for line in (K8S / "base" / "mailer.env").read_text().splitlines() if "=" in line
    )
    kustomization = yaml.safe_load((DEV / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "mailer-config"]
    values.update(literal.split("=", 1) for literal in generator["literals"])
    return values


async def test_an_existing_secret_is_kept_whatever_it_holds(
    api_server: FakeApiServer, tls: Tls, tmp_path: Path
) -> None:
    existing = {"kind": "Secret", "metadata": {"name": SECRET_NAME}, "data": {"MAILER_JWT_SECRET": "b3du"}}
    api_server.secrets[SECRET_NAME] = existing
    run = await run_job(api_server.url, service_account(tmp_path / "account", tls.ca_pem))
    assert run.returncode == 0, run.stderr
    assert [c.method for c in api_server.calls] == ["GET"]
    assert api_server.secrets == {SECRET_NAME: existing}


async def test_a_secret_made_between_the_check_and_the_creation_is_kept(
    api_server: FakeApiServer, tls: Tls, tmp_path: Path
) -> None:
    api_server.made_meanwhile = True
    run = await run_job(api_server.url, service_account(tmp_path / "account", tls.ca_pem))
    assert run.returncode == 0, run.stderr
    assert [c.method for c in api_server.calls] == ["GET", "POST"]
    assert api_server.secrets[SECRET_NAME]["data"] == {}, "the other one's Secret stays"
    assert "kept" in run.stdout


async def test_a_refusal_fails_the_run_so_that_the_job_retries(
    api_server: FakeApiServer, tls: Tls, tmp_path: Path
) -> None:
    api_server.refuse_with = 403
    run = await run_job(api_server.url, service_account(tmp_path / "account", tls.ca_pem))
    assert run.returncode == 1
    assert "403" in run.stderr
    assert "forbidden" in run.stderr, "the API server's own message, for `kubectl logs`"
    assert [c.method for c in api_server.calls] == ["GET"]
    assert not api_server.secrets


async def test_an_api_server_the_cluster_ca_did_not_sign_gets_nothing(
    api_server: FakeApiServer, tmp_path: Path
) -> None:
    _, other_ca = certificate_authority("another CA")
    account = service_account(tmp_path / "account", other_ca.public_bytes(serialization.Encoding.PEM))
    run = await run_job(api_server.url, account)
    assert run.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in run.stderr
    assert not api_server.calls, "not even the token was sent"


def test_the_docs_tell_how_to_read_the_generated_admin_password() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "kubectl apply -k deploy/k8s/overlays/dev" in docs
    read = (
        f"kubectl -n {NAMESPACE} get secret {SECRET_NAME} -o jsonpath='{{.data.MAILER_ADMIN_PASSWORD}}' "
        "| base64 -d"
    )
    assert read in docs
