"""Every deployment file through its real validator, plus what no validator knows: the names the service
reads, the numeric user, probes and grace periods that fit the service. The image is not built here (no
Docker engine on the test machines): its command line runs on the host with the container's environment.

A validator that is not installed skips its test with a message, except in CI, where that is a failure
(`MAILER_TEST_TOOLS_ELSEWHERE=kubectl` names tools that another CI job runs instead).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import aiohttp
import pytest
import yaml
from asyncpg.connect_utils import _read_password_from_pgpass
from sqlalchemy.engine import make_url

from mailer.cli import SECRETS_DIR_VARIABLE
from mailer.settings import MIN_SECRET_BYTES, Settings, password_weakness, secret_weakness
from tests.conftest import IN_CI
from tests.polling import eventually
from tests.process_support import START_TIMEOUT_S, Child, Processes, Service, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
GITLAB_CI = ROOT / ".gitlab-ci.yml"
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# `resources:` directories, `labels:`, `replicas:` and `patches:` need kustomize v4 or later.
MIN_KUSTOMIZE = (4,)
SECRET_EXAMPLE = K8S / "examples" / "secret.example.yaml"
SECRETS_SCRIPT = ROOT / "deploy" / "compose" / "generate_secrets.py"
# A validator is a separate process that loads its schemas; none takes more than a few seconds.
TOOL_TIMEOUT_S = 60
# Words in a variable's name that make it a secret: an example must leave it empty.
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN")
SETTINGS_NAMES = frozenset(f"MAILER_{name.upper()}" for name in Settings.model_fields)
# What mailer reads from the environment: its settings, where the files of more of them are, and its
# PostgreSQL driver's password file (asyncpg reads PGPASSFILE as libpq does).
SERVICE_NAMES = SETTINGS_NAMES | {SECRETS_DIR_VARIABLE, "PGPASSFILE"}
# `${NAME}`, `${NAME:-default}` or `${NAME:?message}` in a compose file; `$$` is a literal `$`.
COMPOSE_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}")
COMPOSE_SUBSTITUTION = re.compile(r"\$\$|" + COMPOSE_VARIABLE.pattern)


def missing_tool(name: str, why: str) -> NoReturn:
    """Skip the test, or fail it in CI unless MAILER_TEST_TOOLS_ELSEWHERE says another job runs the tool."""
    if IN_CI and name not in os.environ.get("MAILER_TEST_TOOLS_ELSEWHERE", "").split(","):
        pytest.fail(f"{why}; CI needs it (see .ci/run and .gitlab-ci.yml)")
    pytest.skip(why)


def require_tool(name: str) -> str:
    """The path of a validator: the project's venv first (PyPI tools), then PATH (system tools)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        missing_tool(name, f"{name} is not installed")
    return found


def run_tool(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, cwd=ROOT
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{shlex.join(result.args)}:\n{result.stdout}{result.stderr}"


# --- reading the files -----------------------------------------------------------------------------------


def dockerfile_lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def final_stage() -> list[str]:
    lines = dockerfile_lines()
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def dockerfile_uid() -> int:
    """The numeric user of the final stage (`USER 10001` or `USER ${ARG}` with the ARG's default)."""
    stage = final_stage()
    args = dict(line.removeprefix("ARG ").split("=", 1) for line in stage if line.startswith("ARG "))
    (user,) = [line.removeprefix("USER ").split(":")[0] for line in stage if line.startswith("USER ")]
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], user)
    assert user.isdigit(), f"USER {user} is not numeric: runAsNonRoot cannot check a name"
    return int(user)


def image_env() -> dict[str, str]:
    """The MAILER_* variables the image sets (ENV in the final stage)."""
    env: dict[str, str] = {}
    for line in final_stage():
        if line.startswith("ENV "):
            for word in shlex.split(line.removeprefix("ENV ")):
                name, _, value = word.partition("=")
                if name.startswith("MAILER_"):
                    env[name] = value
    return env


def image_json_instruction(keyword: str) -> list[str]:
    """An exec-form instruction of the final stage as its argument list (CMD, or HEALTHCHECK's CMD)."""
    (line,) = [line for line in final_stage() if line.startswith(keyword + " ")]
    argv = json.loads(line[line.index("[") :])
    assert isinstance(argv, list)
    return [str(part) for part in argv]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME:-default}` / `${NAME:?error}` substitution, as `docker compose config` does it."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        assert kind != "?", f"{name} is required: {rest}"
        return rest if kind == "-" else ""

    return COMPOSE_SUBSTITUTION.sub(one, value)


def env_example() -> dict[str, str | None]:
    """Every variable .env.example names: its value when set, None when only mentioned in a comment."""
    names: dict[str, str | None] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line):
            names[match.group(1)] = match.group(2)
        elif match := re.match(r"^#\s*([A-Z][A-Z0-9_]*)=", line):
            names.setdefault(match.group(1), None)
    return names


@functools.cache
def kustomize_version(kubectl: str) -> tuple[int, ...] | None:
    """The kustomize built into `kubectl`, or None when it reports none (kubectl < 1.24)."""
    result = run_tool([kubectl, "version", "--client", "-o", "json"])
    reported = json.loads(result.stdout or "{}").get("kustomizeVersion", "") if result.returncode == 0 else ""
    numbers = re.findall(r"\d+", reported)
    return tuple(int(n) for n in numbers) if numbers else None


def kustomize(overlay: str) -> str:
    kubectl = require_tool("kubectl")
    version = kustomize_version(kubectl)
    if version is None or version < MIN_KUSTOMIZE:
        # Debian's kubernetes-client (1.20) embeds kustomize v2, which reads neither `resources:` directories
        # nor `patches:`; that is a missing tool, not a broken file.
        found = "v" + ".".join(map(str, version)) if version else "too old to report its version"
        missing_tool(
            "kubectl", f"the kustomize of {kubectl} is {found}; the overlays need v{MIN_KUSTOMIZE[0]}+"
        )
    result = run_tool([kubectl, "kustomize", str(K8S / "overlays" / overlay)])
    assert_ok(result)
    return result.stdout


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


# --- the validators --------------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    assert_ok(run_tool([require_tool("hadolint"), str(DOCKERFILE)]))


def test_the_compose_file_matches_the_compose_schema() -> None:
    tool = require_tool("check-jsonschema")
    assert_ok(run_tool([tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]))


def test_the_gitlab_pipeline_matches_the_gitlab_ci_schema() -> None:
    tool = require_tool("check-jsonschema")
    assert_ok(run_tool([tool, "--builtin-schema", "vendor.gitlab-ci", str(GITLAB_CI)]))


def test_the_compose_proxy_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    # The compose file mounts it as conf.d/default.conf, included inside `http` by the image's nginx.conf.
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    include {ROOT / 'deploy' / 'compose' / 'nginx.conf'};\n}}\n"
    )
    mount = "./deploy/compose/nginx.conf:/etc/nginx/conf.d/default.conf:ro"
    assert mount in compose()["services"]["proxy"]["volumes"]
    assert_ok(run_tool([nginx, "-t", "-q", "-e", "stderr", "-p", f"{tmp_path}/", "-c", str(main)]))


def test_the_kubernetes_validator_is_strict() -> None:
    # The overlays' test below means something only if an unknown field fails validation.
    manifest = yaml.safe_load((K8S / "base" / "service.yaml").read_text())
    manifest["spec"]["portz"] = []
    result = run_tool(
        [require_tool("kubernetes-validate"), "--strict", "--quiet", "-"], yaml.safe_dump(manifest)
    )
    assert result.returncode != 0
    assert "portz" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_and_is_valid_kubernetes(overlay: str) -> None:
    rendered = kustomize(overlay)
    assert_ok(run_tool([require_tool("kubernetes-validate"), "--strict", "--quiet", "-"], rendered))


def test_the_secret_example_is_valid_and_holds_no_usable_value() -> None:
    assert_ok(run_tool([require_tool("kubernetes-validate"), "--strict", "--quiet", str(SECRET_EXAMPLE)]))
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert secret["metadata"]["name"] == "mailer-secrets"
    assert secret["stringData"], "the example lists the keys"
    assert all(value == "" for value in secret["stringData"].values()), secret["stringData"]


# --- what the validators cannot know ---------------------------------------------------------------------


def test_the_image_is_multi_stage_non_root_and_checks_its_own_health() -> None:
    lines = dockerfile_lines()
    assert sum(line.startswith("FROM ") for line in lines) >= 2
    assert dockerfile_uid() != 0
    healthcheck = next(line for line in final_stage() if line.startswith("HEALTHCHECK "))
    assert "--start-period=" in healthcheck
    assert re.search(r" CMD \[", healthcheck), "exec form: no shell between Docker and the probe"
    assert image_json_instruction("CMD") == ["python", "run.py"]
    # Dependencies are installed before the code is copied, so a code change reuses their layer.
    build = lines[: len(lines) - len(final_stage())]
    installs = next(i for i, line in enumerate(build) if "pip install" in line and "requirements" in line)
    copies_code = next(i for i, line in enumerate(build) if line.startswith("COPY mailer"))
    assert installs < copies_code
    assert image_env()["MAILER_HOST"] == "0.0.0.0"


def test_the_docker_build_context_leaves_the_venv_out() -> None:
    patterns = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # Everything is excluded, then only what the Dockerfile copies is let back in.
    assert patterns[0] == "*"
    copied = {
        word.rstrip("/")
        for line in dockerfile_lines()
        if line.startswith("COPY ") and "--from=" not in line
        for word in line.split()[1:-1]
    }
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert copied <= allowed, copied - allowed
    assert not any(name.startswith(".venv") for name in allowed)


def test_compose_builds_once_and_every_service_restarts_and_is_checked() -> None:
    services = compose()["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["migrate"]
    image = services["migrate"]["image"]
    for name in ("mailer", "sandbox"):
        assert services[name]["image"] == image, name
    assert services["mailer"]["deploy"]["replicas"] >= 2
    assert services["mailer"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in services.items():
        # The one-shot secrets job runs once per `up`; a failure there must stop the stack, not loop.
        expected = ("no",) if name == "secrets" else ("unless-stopped", "always", "on-failure")
        assert service.get("restart") in expected, name
    assert "pgdata" in compose()["volumes"]
    # Docker kills at the end of stop_grace_period: after the service's own grace on SIGTERM, not during it.
    grace_s = float(image_env()["MAILER_SHUTDOWN_GRACE_S"])
    assert float(services["mailer"]["stop_grace_period"].removesuffix("s")) > grace_s
    # The sandbox serves no /healthz: the image's HTTP check would keep it unhealthy forever.
    sandbox_check = " ".join(services["sandbox"]["healthcheck"]["test"])
    assert "/healthz" not in sandbox_check
    assert "9000" in sandbox_check
    assert {name for name, s in services.items() if "monitoring" in s.get("profiles", [])} == {
        "prometheus",
        "grafana",
    }


def test_compose_reads_only_names_the_service_knows_and_env_example_documents() -> None:
    mailer_env: dict[str, str] = compose()["services"]["mailer"]["environment"]
    unknown = set(mailer_env) - SERVICE_NAMES
    assert not unknown, f"not read by mailer/settings.py: {unknown}"
    assert set(image_env()) <= SETTINGS_NAMES
    documented = env_example()
    referenced = {m.group(1): m.group(2) for m in COMPOSE_VARIABLE.finditer(COMPOSE.read_text())}
    missing = set(referenced) - set(documented)
    assert not missing, f"used by docker-compose.yml, absent from .env.example: {missing}"
    # `cp .env.example .env && docker compose up -d` is the whole set-up: no variable may be required.
    required = sorted(name for name, kind in referenced.items() if kind == "?")
    assert not required, f"required by docker-compose.yml: {required}"


def test_env_example_sets_nothing_and_ships_no_usable_secret() -> None:
    for name, value in env_example().items():
        if any(word in name for word in SECRET_WORDS):
            assert not value, f"{name} has a value in .env.example; examples leave secrets empty"
    # Every line is a commented-out default: the copied .env changes nothing until someone edits it.
    assigned = [name for name, value in env_example().items() if value is not None]
    assert not assigned, f"set in .env.example: {assigned}"
    assert "openssl rand" in ENV_EXAMPLE.read_text()


def test_config_example_env_is_accepted_by_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "config" / "example.env").read_text()
    set_values = dict(re.findall(r"^(MAILER_[A-Z0-9_]+)=(.*)$", text, re.MULTILINE))
    mentioned = set(re.findall(r"^#\s*(MAILER_[A-Z0-9_]+)=", text, re.MULTILINE))
    unknown = (set(set_values) | mentioned) - SERVICE_NAMES
    assert not unknown, f"not read by mailer/settings.py: {unknown}"
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    for name, value in set_values.items():
        monkeypatch.setenv(name, value)
    # As loaded with `set -a; . ./file`: every value set there is valid as it stands.
    Settings()
    assert not any(word in name for name in set_values for word in SECRET_WORDS), "secrets stay commented"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_fits_the_service_and_the_image(overlay: str) -> None:
    manifests = [m for m in yaml.safe_load_all(kustomize(overlay)) if m]
    kinds = {m["kind"] for m in manifests}
    expected = {"Namespace", "ConfigMap", "Deployment", "Service", "Ingress", "PodDisruptionBudget"}
    assert expected | {"HorizontalPodAutoscaler", "Job"} <= kinds
    assert "Secret" not in kinds, "the Secret stays out of the kustomization"
    # Each object names it: one without would land in the namespace of kubectl's context instead.
    assert {m["metadata"].get("namespace") for m in manifests if m["kind"] != "Namespace"} == {"mailer"}

    # The service's settings (the dev overlay has one more ConfigMap: the secret Job's script).
    (config,) = [
        m for name, m in by_kind(manifests, "ConfigMap").items() if name.startswith("mailer-config-")
    ]
    unknown = set(config["data"]) - SETTINGS_NAMES
    assert not unknown, f"not read by mailer/settings.py: {unknown}"
    assert config["data"]["MAILER_HOST"] == "0.0.0.0"

    deployment = by_kind(manifests, "Deployment")["mailer"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] >= 2
    assert by_kind(manifests, "HorizontalPodAutoscaler")["mailer"]["spec"]["minReplicas"] >= 2
    assert pod["spec"]["securityContext"]["runAsUser"] == dockerfile_uid()
    (container,) = pod["spec"]["containers"]
    port = int(config["data"]["MAILER_PORT"])
    assert container["ports"][0]["containerPort"] == port
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == port
    assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pause_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace_s = float(config["data"]["MAILER_SHUTDOWN_GRACE_S"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > pause_s + grace_s

    # The namespace enforces the "restricted" Pod Security Standard: every pod must meet it.
    namespace = by_kind(manifests, "Namespace")["mailer"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = m["spec"]["template"]["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, m["metadata"]["name"]
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for c in spec["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]

    if overlay == "dev":
        assert "postgres" in by_kind(manifests, "StatefulSet")
        assert "sandbox" in by_kind(manifests, "Deployment")
        assert config["data"]["MAILER_PROVIDER_URL"] == "http://sandbox:9000"
    else:
        assert "StatefulSet" not in kinds
        assert config["data"]["MAILER_ENV"] == "production"
        assert config["data"]["MAILER_PROVIDER_URL"].startswith("https://")
        image = container["image"]
        assert ":" in image, image
        assert not image.endswith((":latest", ":dev")), image
        assert by_kind(manifests, "Ingress")["mailer"]["spec"]["tls"]


# --- the compose secrets ---------------------------------------------------------------------------------


@functools.cache
def secrets_script() -> ModuleType:
    """deploy/compose/generate_secrets.py as a module, for its table of secrets."""
    name = "deploy_compose_generate_secrets"
    spec = importlib.util.spec_from_file_location(name, SECRETS_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def compose_secrets_dir() -> str:
    """Where the containers see the secrets: MAILER_SECRETS_DIR of the mailer service."""
    return str(compose()["services"]["mailer"]["environment"][SECRETS_DIR_VARIABLE])


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's mounts as container path -> source (a volume's name, or a ./ path of the repository)."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        mounts[target] = source
    return mounts


def compose_owners() -> dict[str, int]:
    """The secrets job's --owner=READER=UID arguments."""
    owners: dict[str, int] = {}
    for part in compose()["services"]["secrets"]["command"]:
        if part.startswith("--owner="):
            reader, _, uid = part.removeprefix("--owner=").partition("=")
            owners[reader] = int(uid.split(":")[0])
    return owners


def expected_uid(reader: str) -> int:
    """Who owns the files of `reader` after a run here: the compose owner as root, else this user."""
    return compose_owners().get(reader, 0) if os.geteuid() == 0 else os.getuid()


def pgpass_fields() -> str:
    """HOST:PORT:DATABASE:USER of the password file the secrets job writes."""
    (part,) = [p for p in compose()["services"]["secrets"]["command"] if p.startswith("--pgpass=")]
    return str(part).removeprefix("--pgpass=")


def driver_password(pgpass: Path, url: str) -> str | None:
    """The password asyncpg takes from `pgpass` for `url` (which has none): its own reader of the file."""
    parsed = make_url(url)
    assert parsed.password is None, "the URL holds no password"
    password: str | None = _read_password_from_pgpass(
        passfile=pgpass,
        hosts=[parsed.host],
        ports=[parsed.port],
        database=parsed.database,
        user=parsed.username,
    )
    return password


def secrets_command_on_host(target: Path) -> list[str]:
    """The secrets job's command with its container paths mapped to this machine: the script from the
    repository, the volume at `target`. Not root, it cannot give files away: they stay this user's."""
    service = compose()["services"]["secrets"]
    host_paths = {dst: str(ROOT / src) for dst, src in volume_mounts(service).items() if src.startswith("./")}
    argv = []
    for part in on_the_host(service["command"]):
        part = host_paths.get(part, part)
        if part == compose_secrets_dir():
            part = str(target)
        elif part.startswith("--owner=") and os.geteuid() != 0:
            reader = part.removeprefix("--owner=").partition("=")[0]
            part = f"--owner={reader}={os.getuid()}:{os.getgid()}"
        argv.append(part)
    assert str(SECRETS_SCRIPT) in argv, argv
    assert str(target) in argv, argv
    return argv


def run_secrets_job(target: Path, dotenv: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """What one `docker compose up` runs first, with .env holding `dotenv` (as shipped: nothing)."""
    environment = compose()["services"]["secrets"]["environment"]
    env = {**clean_env(), **{k: interpolate(str(v), dotenv or {}) for k, v in environment.items()}}
    result = subprocess.run(
        secrets_command_on_host(target),
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
        cwd=ROOT,
    )
    assert_ok(result)
    return result


def snapshot(directory: Path) -> dict[str, tuple[str, int, int]]:
    """Each file's value, inode and modification time: equal snapshots mean nothing was rewritten."""
    return {
        path.name: (path.read_text().strip(), path.stat().st_ino, path.stat().st_mtime_ns)
        for path in directory.iterdir()
    }


def test_the_compose_secrets_reach_each_reader_from_one_volume() -> None:
    services = compose()["services"]
    job = services["secrets"]
    directory = compose_secrets_dir()
    files = {secret.file for secret in secrets_script().SECRETS}
    mounts = volume_mounts(job)
    assert mounts[directory] == "secrets"
    assert f"secrets:{directory}" in job["volumes"], "the job writes: mounted read-write"
    assert mounts[job["command"][1]] == "./" + str(SECRETS_SCRIPT.relative_to(ROOT))
    assert "secrets" in compose()["volumes"]
    # Each secret's .env variable reaches the job (empty when unset), and nothing else does.
    assert job["environment"] == {s.variable: f"${{{s.variable}:-}}" for s in secrets_script().SECRETS}
    # mailer's files belong to the image's numeric user, which mailer and the sandbox run as.
    assert compose_owners()["mailer"] == dockerfile_uid()

    # Every container that reads a secret mounts the volume read-only and starts once the job succeeded.
    readers = {name for name, s in services.items() if "secrets" in volume_mounts(s).values()} - {"secrets"}
    assert {"migrate", "mailer", "sandbox", "postgres", "grafana"} <= readers
    for name in readers:
        assert f"secrets:{directory}:ro" in services[name]["volumes"], name
        assert services[name]["depends_on"]["secrets"]["condition"] == "service_completed_successfully", name
    # ...and finds its file there.
    postgres = services["postgres"]["environment"]
    assert "POSTGRES_PASSWORD" not in postgres
    assert postgres["POSTGRES_PASSWORD_FILE"] == f"{directory}/postgres_password"
    grafana_file = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert grafana_file == f"{directory}/grafana_admin_password"
    assert f"{directory}/mailer_provider_token" in services["sandbox"]["command"][-1]
    assert {"postgres_password", "grafana_admin_password", "mailer_provider_token"} <= files
    # mailer's database: PostgreSQL's role and database, the password from the driver's password file.
    mailer_env = dict(services["mailer"]["environment"])
    url = make_url(mailer_env["MAILER_DATABASE_URL"])
    assert (url.username, url.database, url.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_DB"],
        None,
    )
    assert pgpass_fields() == f"{url.host}:{url.port}:{url.database}:{url.username}"
    assert mailer_env.pop("PGPASSFILE") == f"{directory}/{secrets_script().PGPASS_FILE}"

    # No secret reaches mailer through the environment, where it would win over its file: neither the
    # compose file nor the image's ENV sets a variable that has a file.
    assert mailer_env.pop(SECRETS_DIR_VARIABLE) == directory
    assert not [name for name in mailer_env for word in SECRET_WORDS if word in name]
    from_files = {name.upper() for name in files if name.startswith("mailer_")}
    assert from_files <= SETTINGS_NAMES
    assert not from_files & (set(mailer_env) | set(image_env()))
    # The docs tell how to read the generated admin password, from where it really is.
    assert f"cat {directory}/mailer_admin_password" in (ROOT / "docs" / "deploy.md").read_text()


def test_the_secrets_job_generates_each_secret_once_and_a_second_start_keeps_them(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    first = run_secrets_job(target)
    script = secrets_script()
    made = snapshot(target)
    assert set(made) == {s.file for s in script.SECRETS} | {script.PGPASS_FILE}
    values = {name: value for name, (value, _, _) in made.items()}
    # Strong enough for the service's own rules, each its own, and never printed.
    assert secret_weakness(values["mailer_jwt_secret"], MIN_SECRET_BYTES) is None
    assert secret_weakness(values["mailer_session_secret"], MIN_SECRET_BYTES) is None
    assert password_weakness(values["mailer_admin_password"]) is None
    generated = [values[s.file] for s in script.SECRETS]
    assert len(set(generated)) == len(generated)
    assert not [value for value in values.values() if value in first.stdout + first.stderr]
    # mailer's driver finds PostgreSQL's password for the compose database URL.
    database_url = compose()["services"]["mailer"]["environment"]["MAILER_DATABASE_URL"]
    assert driver_password(target / script.PGPASS_FILE, database_url) == values["postgres_password"]
    # 0600, each owned by the user of the process that reads it.
    readers = {s.file: s.reader for s in script.SECRETS} | {script.PGPASS_FILE: "mailer"}
    for path in target.iterdir():
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600, path.name
        assert st.st_uid == expected_uid(readers[path.name]), path.name

    # The second `up`: nothing rewritten, so issued tokens, sessions and the database password stay valid.
    second = run_secrets_job(target)
    assert snapshot(target) == made
    assert "generated" not in second.stdout


def test_a_secret_set_in_dotenv_wins_and_stays_once_unset(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    run_secrets_job(target)
    before = snapshot(target)
    # Characters a URL would have to escape, and the password file's own separator.
    chosen = {"POSTGRES_PASSWORD": "pg pass/with@signs:1", "MAILER_ADMIN_PASSWORD": "the operator's choice"}
    run_secrets_job(target, chosen)
    after = snapshot(target)
    assert after["postgres_password"][0] == chosen["POSTGRES_PASSWORD"]
    assert after["mailer_admin_password"][0] == chosen["MAILER_ADMIN_PASSWORD"]
    database_url = compose()["services"]["mailer"]["environment"]["MAILER_DATABASE_URL"]
    assert driver_password(target / "pgpass", database_url) == chosen["POSTGRES_PASSWORD"]
    untouched = set(before) - {"postgres_password", "mailer_admin_password", "pgpass"}
    assert {name: after[name] for name in untouched} == {name: before[name] for name in untouched}
    # Taken out of .env again, the value chosen last stays (PostgreSQL created its role with it).
    run_secrets_job(target)
    assert snapshot(target) == after


# --- the image's command line on the host ----------------------------------------------------------------


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}


def on_the_host(argv: list[str]) -> list[str]:
    """A container command line with the image's `python` replaced by this venv's interpreter."""
    return [sys.executable if part == "python" else part for part in argv]


def swapped(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} not in {text!r}"
    return text.replace(old, new)


def compose_sandbox_on_host(secrets_dir: Path, port: int) -> list[str]:
    """The compose sandbox's command mapped to this machine: the secrets at `secrets_dir`, this venv's
    interpreter, loopback (tests listen nowhere else) and `port` instead of 9000."""
    shell, flag, script = compose()["services"]["sandbox"]["command"]
    assert (shell, flag) == ("sh", "-c")
    script = interpolate(script, {})
    script = swapped(script, compose_secrets_dir(), shlex.quote(str(secrets_dir)))
    script = swapped(script, "exec python ", f"exec {shlex.quote(sys.executable)} ")
    script = swapped(script, "--host=0.0.0.0", "--host=127.0.0.1")
    script = swapped(script, "--port=9000", f"--port={port}")
    return [shell, flag, script]


async def start_compose_sandbox(procs: Processes, secrets_dir: Path) -> tuple[Child, str]:
    port = free_port()
    child = procs.spawn("compose-sandbox", compose_sandbox_on_host(secrets_dir, port), clean_env())

    async def listening() -> bool:
        if not child.alive():
            raise AssertionError(f"the compose sandbox exited early:\n{child.log_tail()}")
        return "sandbox listening on " in child.log_path.read_text(errors="replace")

    await eventually(listening, START_TIMEOUT_S, "the compose sandbox listening")
    return child, f"http://127.0.0.1:{port}"


def container_env(secrets_dir: Path, database_url: str, provider_url: str, port: int) -> dict[str, str]:
    """What a compose mailer container gets: the image's ENV, then the compose environment with .env as
    .env.example ships it (nothing set), and the secrets the secrets job wrote, at `secrets_dir`. Only
    where it listens and what it talks to are changed: loopback (tests listen nowhere else), this test's
    sandbox, and this test's database, given in the environment (which wins over the URL file: the compose
    PostgreSQL is not here)."""
    composed = {
        name: interpolate(str(value), {}).replace(compose_secrets_dir(), str(secrets_dir))
        for name, value in compose()["services"]["mailer"]["environment"].items()
    }
    return {
        **image_env(),
        **composed,
        "MAILER_HOST": "127.0.0.1",
        "MAILER_PORT": str(port),
        "MAILER_DATABASE_URL": database_url,
        "MAILER_PROVIDER_URL": provider_url,
    }


async def probe_exit_code(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a health check command as Docker does (no shell) and return its exit code and output."""
    child = await asyncio.create_subprocess_exec(*argv, env=env, stdout=PIPE, stderr=STDOUT)
    async with asyncio.timeout(TOOL_TIMEOUT_S):
        output, _ = await child.communicate()
    assert child.returncode is not None
    return child.returncode, output.decode(errors="replace")


async def test_the_image_command_line_serves_with_the_container_env_and_generated_secrets(
    procs: Processes, db_url: str, tmp_path: Path
) -> None:
    secrets_dir = tmp_path / "secrets"
    run_secrets_job(secrets_dir)
    _, sandbox_url = await start_compose_sandbox(procs, secrets_dir)
    port = free_port()
    env = {**clean_env(), **container_env(secrets_dir, db_url, sandbox_url, port)}
    service = Service(
        procs.spawn("image-cmd", on_the_host(image_json_instruction("CMD")), env), f"http://127.0.0.1:{port}"
    )
    await service.wait_ready()

    # The image's HEALTHCHECK, run as Docker runs it, passes against the live service...
    probe = on_the_host(image_json_instruction("HEALTHCHECK"))
    code, output = await probe_exit_code(probe, env)
    assert code == 0, output
    # ...and fails where nothing listens.
    code, _ = await probe_exit_code(probe, {**env, "MAILER_PORT": str(free_port())})
    assert code != 0

    # The administrator signs in with the generated password, read from its file as docs/deploy.md says.
    password = (secrets_dir / "mailer_admin_password").read_text().strip()
    username = env["MAILER_ADMIN_USERNAME"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TOOL_TIMEOUT_S)) as session:
        form = {"username": username, "password": password}
        async with session.post(f"{service.url}/auth/token", data=form) as resp:
            assert resp.status == 200, await resp.text()
            token = (await resp.json())["access_token"]
        wrong = {"username": username, "password": password + "x"}
        async with session.post(f"{service.url}/auth/token", data=wrong) as resp:
            assert resp.status == 401, await resp.text()
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{service.url}/api/customers/", headers=headers) as resp:
            assert resp.status == 200, await resp.text()


async def test_the_compose_sandbox_checks_the_generated_token_and_passes_its_health_check(
    procs: Processes, tmp_path: Path
) -> None:
    secrets_dir = tmp_path / "secrets"
    run_secrets_job(secrets_dir)
    sandbox, url = await start_compose_sandbox(procs, secrets_dir)
    # It requires the token mailer sends: the one in mailer_provider_token.
    token = (secrets_dir / "mailer_provider_token").read_text().strip()
    body = {"id": 1, "phone": 79001234567, "text": "compose"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TOOL_TIMEOUT_S)) as session:
        for bearer, expected in ((token, 200), ("not-" + token, 401)):
            headers = {"Authorization": f"Bearer {bearer}"}
            async with session.post(f"{url}/send/1", json=body, headers=headers) as resp:
                assert resp.status == expected, await resp.text()

    test = compose()["services"]["sandbox"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    # The same check, pointed at the port this sandbox took instead of the container's 9000.
    probe = [part.replace("9000", url.rsplit(":", 1)[1]) for part in on_the_host(test[1:])]
    code, output = await probe_exit_code(probe, clean_env())
    assert code == 0, output
    sandbox.terminate()
    await sandbox.wait_exit(10)
    code, _ = await probe_exit_code(probe, clean_env())
    assert code != 0


def test_the_compose_sandbox_does_not_start_without_its_token(tmp_path: Path) -> None:
    # With no file to read, the shell stops before the sandbox starts, rather than start it open to all.
    argv = compose_sandbox_on_host(tmp_path / "no-secrets", free_port())
    result = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert result.returncode != 0
    assert "mailer_provider_token" in result.stderr
