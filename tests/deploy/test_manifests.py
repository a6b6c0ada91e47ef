"""The deployment files: Dockerfile, docker-compose.yml and the kustomize tree under deploy/k8s.

Offline checks only (no Docker engine, no cluster):
- docker-compose.yml against the Compose Specification's JSON schema, the copy that
  check-jsonschema vendors (``--builtin-schema vendor.compose-spec``);
- every Kubernetes manifest, raw and as kustomize renders each overlay, against the
  Kubernetes OpenAPI schemas that kubernetes-validate ships, in strict mode (unknown
  fields are errors);
- that the kustomizations hang together, and the behaviour a reviewer looks for: probes,
  limits, the hardened security context, ports that line up, secrets only from the Secret,
  network policies that let exactly the known callers reach each internal API, and
  environments that the services' own settings classes accept.

Rendering needs `kustomize` or `kubectl` (>= 1.21, which embeds kustomize) on PATH; those tests
skip without one.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
INITDB = ROOT / "deploy" / "compose" / "initdb.sql"
K8S = ROOT / "deploy" / "k8s"
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
OVERLAYS = {"development": "envelopepay-dev", "production": "envelopepay"}

# The fixed facts about the services.
PORTS = {"gateway": 8000, "sync": 8001, "envelope": 8002, "mailer": 8003, "payments": 8004}
COMMON_ENV = {
    "ENVIRONMENT",
    "DATABASE_URL",
    "AMQP_URL",
    "HTTP_HOST",
    "HTTP_PORT",
    "INTERNAL_TOKEN",
    # In a container the default (its own loopback) is wrong: the envelope puts a URL on its
    # internal API into email.requested, and the mailer fetches the email from it to retry.
    "INTERNAL_BASE_URL",
    "PUBLIC_BASE_URL",
    "LOG_LEVEL",
    "MIGRATE_ON_START",
}
SERVICE_ENV = {
    "gateway": {
        "SECRET_KEY",
        "SYNC_URL",
        "ENVELOPE_URL",
        "MAILER_URL",
        "PAYMENTS_URL",
        "SESSION_COOKIE_SECURE",
        "TRACKING_SECRET",
    },
    "sync": {
        "CLIO_BASE_URL",
        "CLIO_CLIENT_ID",
        "CLIO_CLIENT_SECRET",
        "CLIO_TOKEN_KEYS",
        "SYNC_INTERVAL_SECONDS",
    },
    # Refused at its development default outside development (services/envelope/settings.py).
    "envelope": {"LINK_SECRET"},
    "mailer": {
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMTP_STARTTLS",
        "SMTP_TLS",
        "MAIL_FROM",
        "MESSAGE_ID_DOMAIN",
        "TRACKING_SECRET",
        "BOUNCE_INTAKE",
    },
    "payments": {
        "PAYMENTS_PROCESSOR",
        "STRIPE_API_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "ACH_SETTLE_SECONDS",
    },
}
# Values that must never sit in a ConfigMap or a literal in a manifest.
SECRET_ENV = {
    "DATABASE_URL",
    "AMQP_URL",
    "INTERNAL_TOKEN",
    "SECRET_KEY",
    "LINK_SECRET",
    "CLIO_CLIENT_SECRET",
    "CLIO_TOKEN_KEYS",
    "SMTP_PASSWORD",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    # gateway and mailer: the tracking tokens' key; mailer: its bounce intakes' credentials
    "TRACKING_SECRET",
    "BOUNCE_IMAP_PASSWORD",
    "BOUNCE_WEBHOOK_SECRET",
}
DATABASES = {name: f"envelopepay_{name}" for name in PORTS}
# Who calls whose internal HTTP API; everything else goes over RabbitMQ.
CALLERS = {
    "sync": {"gateway"},
    "envelope": {"gateway", "mailer"},  # the mailer fetches each email's content
    "mailer": {"gateway"},
    "payments": {"gateway"},
}

# The oldest Kubernetes minor we promise to run on, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.33", kubernetes_validate.major_minor(kubernetes_validate.latest_version()))

KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "images",
    "replicas",
    "patches",
    "labels",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
}


# --- loading ----------------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


@cache
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as f:
        return yaml.safe_load(f)


@cache
def compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendored.joinpath("compose-spec.json").read_text())


def compose_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(
        compose_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def kustomization_dirs() -> list[Path]:
    return sorted(path.parent for path in K8S.rglob("kustomization.yaml"))


def kustomization(directory: Path) -> dict[str, Any]:
    (doc,) = load_docs(directory / "kustomization.yaml")
    return doc


def patch_files() -> set[Path]:
    """Files that kustomizations use as patches: partial objects, checked once rendered."""
    found = set()
    for directory in kustomization_dirs():
        for patch in kustomization(directory).get("patches", []):
            if "path" in patch:
                found.add((directory / patch["path"]).resolve())
    return found


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/k8s that holds whole Kubernetes objects."""
    patches = patch_files()
    return sorted(
        path
        for path in K8S.rglob("*.yaml")
        if path.name != "kustomization.yaml" and path.resolve() not in patches
    )


@cache
def raw_objects() -> tuple[dict[str, Any], ...]:
    """The objects the kustomizations include, as written (secret.example.yaml excluded)."""
    return tuple(
        doc for path in manifest_files() if path != SECRET_EXAMPLE for doc in load_docs(path)
    )


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed: cannot render kustomize")
    result = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)} {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def of_kind(objects, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects, kind: str, name: str) -> dict[str, Any]:
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def k8s_errors(obj: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(map(str, error.path))
        return f"{obj['kind']}/{obj['metadata']['name']}: {where}: {error.message}"
    return None


def app_deployments(objects) -> list[dict[str, Any]]:
    return [
        obj
        for obj in of_kind(objects, "Deployment")
        if obj["metadata"]["labels"].get("app.kubernetes.io/component") == "service"
    ]


def container_env(container: dict[str, Any], config_maps) -> dict[str, dict[str, Any]]:
    """Every variable a container sees, name -> where it comes from."""
    env: dict[str, dict[str, Any]] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        for key in named(config_maps, "ConfigMap", ref)["data"]:
            env[key] = {"configMap": ref}
    for var in container.get("env", []):
        env[var["name"]] = var.get("valueFrom", {"value": var.get("value")})
    return env


def security_findings(deployment: dict[str, Any]) -> list[str]:
    pod = deployment["spec"]["template"]["spec"]
    pod_ctx = pod.get("securityContext", {})
    name = deployment["metadata"]["name"]
    problems = []
    if pod_ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
    for container in pod.get("initContainers", []) + pod["containers"]:
        ctx = {**pod_ctx, **container.get("securityContext", {})}
        where = f"{name}/{container['name']}"
        if ctx.get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if ctx.get("runAsUser") != 10001:
            problems.append(f"{where}: runAsUser is not 10001")
        own = container.get("securityContext", {})
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if own.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if "ALL" not in own.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if own.get("capabilities", {}).get("add"):
            problems.append(f"{where}: adds capabilities")
        if own.get("privileged"):
            problems.append(f"{where}: privileged")
    return problems


def resource_findings(deployment: dict[str, Any]) -> list[str]:
    pod = deployment["spec"]["template"]["spec"]
    problems = []
    for container in pod.get("initContainers", []) + pod["containers"]:
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(bound, {}):
                    problems.append(
                        f"{deployment['metadata']['name']}/{container['name']}: "
                        f"no {resource} {bound}"
                    )
    return problems


def probe_findings(deployment: dict[str, Any]) -> list[str]:
    problems = []
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                problems.append(f"{deployment['metadata']['name']}/{container['name']}: no {probe}")
    return problems


# --- Compose ----------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification():
    assert compose_errors(compose()) == []


def test_compose_file_passes_check_jsonschema_itself():
    # check-jsonschema parses YAML with ruamel; merge keys and anchors must survive it too.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_rejects_what_compose_would_reject():
    broken = copy.deepcopy(compose())
    broken["services"]["gateway"]["helthcheck"] = broken["services"]["gateway"].pop("healthcheck")
    assert any("helthcheck" in error for error in compose_errors(broken))
    broken = copy.deepcopy(compose())
    broken["services"]["sync"]["depends_on"]["rabbitmq"]["condition"] = "service_ready"
    assert compose_errors(broken)


def test_compose_runs_every_service_from_the_one_image():
    services = compose()["services"]
    for name in PORTS:
        service = services[name]
        assert service["build"] == ".", name
        assert service["command"] == ["python", "-m", f"services.{name}"]
    images = {services[name]["image"] for name in PORTS}
    assert len(images) == 1, images


def test_compose_dependencies_wait_for_health_or_a_finished_migration():
    services = compose()["services"]
    one_shots = {name for name, service in services.items() if service.get("restart") == "no"}
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: short depends_on only waits for a start"
        for dependency, how in depends_on.items():
            expected = (
                "service_completed_successfully" if dependency in one_shots else "service_healthy"
            )
            assert how.get("condition") == expected, f"{name} -> {dependency}"
            if expected == "service_healthy":
                check = services[dependency].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {dependency}, which has no healthcheck"
                )


def test_compose_services_migrate_before_they_start():
    services = compose()["services"]
    for name in PORTS:
        migrate = services[f"{name}-migrate"]
        assert migrate["command"] == ["python", "-m", f"services.{name}", "migrate"]
        assert migrate["environment"] == services[name]["environment"], name
        assert services[name]["depends_on"][f"{name}-migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_healthchecks_hit_each_services_ready_endpoint():
    for name in PORTS:
        test = compose()["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "python", name
        assert "/health/ready" in test[-1] and "HTTP_PORT" in test[-1], name


def test_compose_gives_each_service_the_environment_it_reads():
    services = compose()["services"]
    for name, port in PORTS.items():
        env = services[name]["environment"]
        assert isinstance(env, dict), name
        missing = (COMMON_ENV | SERVICE_ENV[name]) - env.keys()
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert env["HTTP_PORT"] == str(port)
        assert env["HTTP_HOST"] == "0.0.0.0"
        assert env["INTERNAL_BASE_URL"] == f"http://{name}:{port}"
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://"), name
        assert env["DATABASE_URL"].endswith(f"@postgres:5432/{DATABASES[name]}"), name
        assert env["AMQP_URL"].startswith("amqp://") and "@rabbitmq:5672" in env["AMQP_URL"]
    gateway = services["gateway"]["environment"]
    for name in ("sync", "envelope", "mailer", "payments"):
        assert gateway[f"{name.upper()}_URL"] == f"http://{name}:{PORTS[name]}"
    assert services["mailer"]["environment"]["SMTP_HOST"] == "mailpit"
    assert services["mailer"]["environment"]["SMTP_PORT"] == "1025"
    assert services["sync"]["environment"]["CLIO_BASE_URL"] == "http://clio-sandbox:8090"
    sandbox = services["clio-sandbox"]["environment"]
    assert sandbox["CLIO_SANDBOX_HOST"] == "0.0.0.0" and sandbox["CLIO_SANDBOX_PORT"] == "8090"
    assert sandbox["CLIO_SANDBOX_CLIENT_ID"] == services["sync"]["environment"]["CLIO_CLIENT_ID"]
    assert (
        sandbox["CLIO_SANDBOX_CLIENT_SECRET"]
        == services["sync"]["environment"]["CLIO_CLIENT_SECRET"]
    )
    assert services["payments"]["environment"]["PAYMENTS_PROCESSOR"] == "test"
    assert {services[name]["environment"]["INTERNAL_TOKEN"] for name in PORTS} == {
        gateway["INTERNAL_TOKEN"]
    }, "the services must share one INTERNAL_TOKEN"


def test_compose_secrets_are_visibly_for_development_only():
    for name in PORTS:
        env = compose()["services"][name]["environment"]
        for var in SECRET_ENV & env.keys():
            if env[var]:
                assert "dev-only" in env[var], f"{name}: {var} does not say it is dev-only"


def test_compose_postgres_creates_one_database_per_service():
    postgres = compose()["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert (
        "./deploy/compose/initdb.sql:/docker-entrypoint-initdb.d/initdb.sql:ro"
        in postgres["volumes"]
    )
    created = set(re.findall(r"CREATE DATABASE (\w+);", INITDB.read_text()))
    assert created == set(DATABASES.values())
    assert postgres["healthcheck"]["test"][1] == "pg_isready"


def test_compose_infrastructure_images_and_ports():
    services = compose()["services"]
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert "rabbitmq-diagnostics" in services["rabbitmq"]["healthcheck"]["test"]
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert services["clio-sandbox"]["command"] == ["python", "-m", "sandbox.clio"]
    assert services["gateway"]["ports"] == ["8000:8000"]
    # Only the gateway is published on all interfaces; the rest bind to loopback, if at all.
    for name, service in services.items():
        if name != "gateway":
            for port in service.get("ports", []):
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port}"


# --- the settings the code actually reads -----------------------------------------------------


def settings_class(name: str) -> type:
    """The pydantic-settings class of services/<name>/settings.py."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    base = importlib.import_module("shared.settings").ServiceSettings
    module = importlib.import_module(f"services.{name}.settings")
    (cls,) = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module.__name__
    ]
    return cls


def load_settings(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    cls = settings_class(name)
    for field in cls.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT / "deploy")  # away from any developer's .env
    return cls()


@pytest.mark.parametrize("name", sorted(PORTS))
def test_compose_environment_is_what_the_service_reads(name: str, monkeypatch):
    env = compose()["services"][name]["environment"]
    fields = settings_class(name).model_fields
    assert {key for key in env if key.lower() not in fields} == set(), "set but never read"
    settings = load_settings(name, env, monkeypatch)
    assert settings.http_host == "0.0.0.0" and settings.http_port == PORTS[name]
    assert settings.database_url == env["DATABASE_URL"]
    assert settings.internal_base_url == f"http://{name}:{PORTS[name]}"
    assert settings.migrate_on_start is False


def test_compose_clio_sandbox_listens_where_sync_looks():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sandbox = importlib.import_module("sandbox.clio.settings").SandboxSettings.from_env(
        compose()["services"]["clio-sandbox"]["environment"]
    )
    sync = compose()["services"]["sync"]["environment"]
    assert (sandbox.host, sandbox.port) == ("0.0.0.0", 8090)
    assert sync["CLIO_BASE_URL"] == f"http://clio-sandbox:{sandbox.port}"
    assert (sandbox.client_id, sandbox.client_secret) == (
        sync["CLIO_CLIENT_ID"],
        sync["CLIO_CLIENT_SECRET"],
    )


@pytest.mark.parametrize("name", sorted(PORTS))
def test_kubernetes_settings_start_in_production(name: str, monkeypatch):
    """Base ConfigMap plus the example Secret: a production config the service accepts."""
    objects = raw_objects()
    config_maps = of_kind(objects, "ConfigMap")
    (secret,) = load_docs(SECRET_EXAMPLE)
    (deployment,) = [d for d in app_deployments(objects) if d["metadata"]["name"] == name]
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for var, source in container_env(server, config_maps).items():
        if "configMap" in source:
            env[var] = named(config_maps, "ConfigMap", source["configMap"])["data"][var]
        elif "secretKeyRef" in source:
            env[var] = secret["stringData"][source["secretKeyRef"]["key"]]
        else:
            env[var] = source["value"]
    own = {var["name"] for var in server["env"]}
    fields = settings_class(name).model_fields
    assert {var for var in own if var.lower() not in fields} == set(), "set but never read"
    settings = load_settings(name, env, monkeypatch)  # raises if a dev secret is left
    assert settings.environment == "production"
    assert settings.http_host == "0.0.0.0" and settings.http_port == PORTS[name]
    assert settings.migrate_on_start is False


def test_every_config_map_key_is_read_by_some_service():
    fields = set().union(*(settings_class(name).model_fields for name in PORTS))
    data = named(raw_objects(), "ConfigMap", "envelopepay-config")["data"]
    assert {key for key in data if key.lower() not in fields} == set()


# --- Dockerfile -------------------------------------------------------------------------------


def dockerignore_allows(path: str) -> bool:
    """Whether the build context keeps `path`, by .dockerignore's last-match-wins rules.

    A pattern matches the path or any folder above it (an ignored folder takes its contents
    along). fnmatch's `*` also spans "/", close enough to Docker's `**` for these patterns.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    keep = True
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        candidates = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            keep = negated
    return keep


def test_dockerfile_builds_the_locked_environment_into_a_slim_non_root_image():
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.MULTILINE)
    assert stages == ["builder", "runtime"]
    assert re.search(r"uv sync --frozen --no-dev", text)
    assert "COPY --from=builder /app/.venv /app/.venv" in text
    for package in ("libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0"):
        assert package in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "/health/ready" in text.split("HEALTHCHECK", 1)[1]
    runtime = text.split("AS runtime", 1)[1]
    assert "pip install" not in runtime and "uv " not in runtime, "uv belongs to the builder"


def test_dockerignore_keeps_what_the_dockerfile_copies_and_nothing_private():
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources, "no COPY found"
    for source in sources:
        kept = source + "module.py" if source.endswith("/") else source
        assert dockerignore_allows(kept), f"COPY {source}: .dockerignore leaves it out"
    for private in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        "var/sync.db",
        "tests/x.py",
        "services/sync/__pycache__/a.pyc",
        "shared/.env",
        "services/x.db",
    ):
        assert not dockerignore_allows(private), f"{private} would be sent to the build"


def test_dockerignore_matcher_can_tell_kept_from_ignored():
    assert dockerignore_allows("services/gateway/app.py")
    assert not dockerignore_allows("README.md")


# --- Kubernetes: schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)) if isinstance(p, Path) else p
)
def test_manifest_matches_the_kubernetes_schema(path: Path, version: str):
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    errors = [error for doc in docs if (error := k8s_errors(doc, version))]
    assert errors == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_rendered_overlay_matches_the_kubernetes_schema(overlay: str, version: str):
    objects = render(K8S / "overlays" / overlay)
    errors = [error for obj in objects if (error := k8s_errors(obj, version))]
    assert errors == []


def test_strict_schema_rejects_a_misspelt_field():
    deployment = copy.deepcopy(named(raw_objects(), "Deployment", "gateway"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert k8s_errors(deployment, K8S_VERSIONS[-1]) is not None
    service = copy.deepcopy(named(raw_objects(), "Service", "gateway"))
    service["spec"]["ports"][0]["port"] = "eight thousand"
    assert k8s_errors(service, K8S_VERSIONS[0]) is not None


# --- Kubernetes: the kustomize tree -----------------------------------------------------------


def test_every_kustomization_is_well_formed_and_lists_only_what_exists():
    dirs = kustomization_dirs()
    assert {str(d.relative_to(K8S)) for d in dirs} == {
        "base",
        "components/opentelemetry",
        "components/network-policies",
        "overlays/development",
        "overlays/production",
    }
    for directory in dirs:
        doc = kustomization(directory)
        unknown = doc.keys() - KUSTOMIZATION_KEYS
        assert not unknown, f"{directory}: unknown keys {unknown}"
        if directory.parent.name == "components":
            assert (doc["apiVersion"], doc["kind"]) == (
                "kustomize.config.k8s.io/v1alpha1",
                "Component",
            )
        else:
            assert (doc["apiVersion"], doc["kind"]) == (
                "kustomize.config.k8s.io/v1beta1",
                "Kustomization",
            )
        for entry in doc.get("resources", []):
            target = directory / entry
            assert target.is_file() or (target / "kustomization.yaml").is_file(), (
                f"{directory}: resource {entry} does not exist"
            )
        for entry in doc.get("components", []):
            target = directory / entry
            assert kustomization(target)["kind"] == "Component", f"{directory}: {entry}"
        for patch in doc.get("patches", []):
            assert ("path" in patch) != ("patch" in patch), f"{directory}: {patch}"
            if "path" in patch:
                assert (directory / patch["path"]).is_file(), f"{directory}: {patch['path']}"


def test_every_manifest_is_used_and_the_example_secret_is_not():
    listed = set()
    for directory in kustomization_dirs():
        doc = kustomization(directory)
        patches = [patch["path"] for patch in doc.get("patches", []) if "path" in patch]
        for entry in doc.get("resources", []) + patches:
            listed.add((directory / entry).resolve())
    for path in K8S.rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        if path == SECRET_EXAMPLE:
            assert path.resolve() not in listed, "the example Secret must not be deployed"
        else:
            assert path.resolve() in listed, f"{path.relative_to(K8S)} is in no kustomization"


def test_base_has_one_manifest_per_service_with_deployment_service_and_account():
    listed = kustomization(K8S / "base")["resources"]
    for name in PORTS:
        assert f"{name}.yaml" in listed
        docs = load_docs(K8S / "base" / f"{name}.yaml")
        kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
        assert {("Deployment", name), ("Service", name), ("ServiceAccount", name)} <= kinds


def test_overlay_images_and_replicas_name_things_that_exist():
    objects = raw_objects()
    images = {
        container["image"].split(":")[0]
        for deployment in of_kind(objects, "Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
    }
    deployments = {d["metadata"]["name"] for d in of_kind(objects, "Deployment")}
    for overlay in OVERLAYS:
        doc = kustomization(K8S / "overlays" / overlay)
        assert doc["namespace"] == OVERLAYS[overlay]
        assert [image["name"] for image in doc["images"]] == ["envelopepay"]
        assert "envelopepay" in images
        for replica in doc.get("replicas", []):
            assert replica["name"] in deployments, f"{overlay}: {replica['name']}"


# --- Kubernetes: behaviour --------------------------------------------------------------------


def deployment_sets():
    """The Deployments as written, and as each overlay renders them when kustomize is here."""
    sets = [("raw", raw_objects())]
    if kustomize_command():
        sets += [(overlay, render(K8S / "overlays" / overlay)) for overlay in sorted(OVERLAYS)]
    return sets


def test_every_deployment_has_probes_limits_and_the_hardened_security_context():
    for label, objects in deployment_sets():
        deployments = of_kind(objects, "Deployment")
        assert deployments, label
        problems = []
        for deployment in deployments:
            problems += probe_findings(deployment)
            problems += resource_findings(deployment)
            problems += security_findings(deployment)
        assert problems == [], label


def test_the_checks_catch_a_weakened_deployment():
    deployment = copy.deepcopy(named(raw_objects(), "Deployment", "payments"))
    pod = deployment["spec"]["template"]["spec"]
    del pod["containers"][0]["livenessProbe"]
    del pod["containers"][0]["resources"]["limits"]
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    pod["initContainers"][0]["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
    assert probe_findings(deployment) == ["payments/server: no livenessProbe"]
    assert len(resource_findings(deployment)) == 2
    assert len(security_findings(deployment)) == 3


def test_app_services_probe_their_health_routes_and_write_only_to_empty_dirs():
    for deployment in app_deployments(raw_objects()):
        pod = deployment["spec"]["template"]["spec"]
        (server,) = pod["containers"]
        assert server["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert server["livenessProbe"]["httpGet"]["path"] == "/health/live"
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["initContainers"] + pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert set(mounts) == {"/app/var", "/tmp"}, deployment["metadata"]["name"]
            assert all("emptyDir" in volumes[name] for name in mounts.values())
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == deployment["metadata"]["name"]


def test_each_service_migrates_in_an_init_container_with_the_servers_settings():
    objects = raw_objects()
    deployments = {d["metadata"]["name"]: d for d in app_deployments(objects)}
    assert set(deployments) == set(PORTS)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (migrate,) = pod["initContainers"]
        (server,) = pod["containers"]
        assert migrate["command"] == ["python", "-m", f"services.{name}", "migrate"]
        assert server["command"] == ["python", "-m", f"services.{name}"]
        assert migrate["image"] == server["image"] == "envelopepay"
        assert migrate["env"] == server["env"] and migrate["envFrom"] == server["envFrom"]
    config = named(objects, "ConfigMap", "envelopepay-config")["data"]
    assert config["MIGRATE_ON_START"] == "false", "the init container already migrated"


def test_each_deployments_port_matches_its_service():
    for label, objects in deployment_sets():
        services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
        for deployment in of_kind(objects, "Deployment"):
            name = deployment["metadata"]["name"]
            service = services[name]
            pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert service["spec"]["selector"].items() <= pod_labels.items(), (label, name)
            assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
            ports = {
                port["name"]: port["containerPort"]
                for container in deployment["spec"]["template"]["spec"]["containers"]
                for port in container.get("ports", [])
            }
            for port in service["spec"]["ports"]:
                target = port["targetPort"]
                container_port = ports[target] if isinstance(target, str) else target
                assert container_port in ports.values(), (label, name, port)
                assert port["port"] == container_port, (label, name, port)
            if name in PORTS:
                assert list(ports.values()) == [PORTS[name]], name


def test_each_service_reads_its_settings_from_the_config_map_and_its_secrets_from_the_secret():
    objects = raw_objects()
    (secret,) = load_docs(SECRET_EXAMPLE)
    secret_keys = set(secret["stringData"])
    config_maps = of_kind(objects, "ConfigMap")
    assert not SECRET_ENV & set(named(config_maps, "ConfigMap", "envelopepay-config")["data"])
    used_keys = set()
    for deployment in app_deployments(objects):
        name = deployment["metadata"]["name"]
        (server,) = deployment["spec"]["template"]["spec"]["containers"]
        env = container_env(server, config_maps)
        missing = (COMMON_ENV | SERVICE_ENV[name]) - env.keys()
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert env["HTTP_PORT"] == {"value": str(PORTS[name])}
        assert env["INTERNAL_BASE_URL"] == {"value": f"http://{name}:{PORTS[name]}"}
        for var in SECRET_ENV & env.keys():
            ref = env[var].get("secretKeyRef")
            assert ref, f"{name}: {var} must come from the Secret"
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret_keys, f"{name}: {ref['key']} missing from the example"
            used_keys.add(ref["key"])
        assert env["DATABASE_URL"]["secretKeyRef"]["key"] == f"{name}-database-url"
    assert used_keys == secret_keys, "the example Secret lists keys nothing reads"
    for name in PORTS:
        assert secret["stringData"][f"{name}-database-url"].endswith(f"/{DATABASES[name]}")


def test_gateway_reaches_the_internal_apis_at_their_service_ports():
    config = named(raw_objects(), "ConfigMap", "envelopepay-config")["data"]
    services = {s["metadata"]["name"]: s for s in of_kind(raw_objects(), "Service")}
    for name in ("sync", "envelope", "mailer", "payments"):
        url = config[f"{name.upper()}_URL"]
        assert url == f"http://{name}:{services[name]['spec']['ports'][0]['port']}"


def test_gateway_has_a_disruption_budget_that_still_lets_a_single_pod_drain():
    pdb = named(raw_objects(), "PodDisruptionBudget", "gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "gateway"}
    # minAvailable: 1 with one replica (development) would block every node drain.
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "gateway"}}}


def test_gateway_scales_in_production():
    objects = render(K8S / "overlays" / "production")
    hpa = named(objects, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in named(objects, "Deployment", "gateway")["spec"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_into_its_namespace_with_its_image(overlay: str):
    objects = render(K8S / "overlays" / overlay)
    namespace = OVERLAYS[overlay]
    assert named(objects, "Namespace", namespace)
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]
    images = {
        container["image"]
        for deployment in app_deployments(objects)
        for container in deployment["spec"]["template"]["spec"]["initContainers"]
        + deployment["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 1, images
    (image,) = images
    repository, _, tag = image.rpartition(":")
    assert tag and tag != "latest" and "/" not in tag, image
    if overlay == "development":
        assert image == "envelopepay:dev"
        config = named(objects, "ConfigMap", "envelopepay-config")["data"]
        assert config["ENVIRONMENT"] == "development"
        assert config["PAYMENTS_PROCESSOR"] == "test"
    else:
        assert repository != "envelopepay", "production pulls from a registry"
        config = named(objects, "ConfigMap", "envelopepay-config")["data"]
        assert config["ENVIRONMENT"] == "production"
        assert config["SESSION_COOKIE_SECURE"] == "true"
        assert config["PUBLIC_BASE_URL"].startswith("https://")


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_opentelemetry_component_points_every_service_at_the_collector(overlay: str):
    objects = render(K8S / "overlays" / overlay)
    config_maps = of_kind(objects, "ConfigMap")
    collector = named(objects, "Service", "otel-collector")
    assert 4318 in {port["port"] for port in collector["spec"]["ports"]}
    for deployment in app_deployments(objects):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["initContainers"] + pod["containers"]:
            env = container_env(container, config_maps)
            assert "OTEL_EXPORTER_OTLP_ENDPOINT" in env, deployment["metadata"]["name"]
    endpoint = named(config_maps, "ConfigMap", "envelopepay-config")["data"][
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ]
    assert endpoint == "http://otel-collector:4318"


def test_base_leaves_tracing_off():
    config = named(render(K8S / "base"), "ConfigMap", "envelopepay-config")["data"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in config


# --- Kubernetes: network policies -------------------------------------------------------------


def network_policies() -> list[dict[str, Any]]:
    return load_docs(K8S / "components" / "network-policies" / "network-policies.yaml")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is modelled here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def ingress_allowed(policies, source: dict[str, str], target: dict[str, str], port: int) -> bool:
    """Whether a pod labelled `source` may open `port` on a pod labelled `target`."""
    governing = [
        p
        for p in policies
        if "Ingress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], target)
    ]
    if not governing:
        return True
    for policy in governing:
        for rule in policy["spec"].get("ingress", []):
            ports = [entry["port"] for entry in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers = rule.get("from")
            if not peers or any(selects(peer["podSelector"], source) for peer in peers):
                return True
    return False


def pod_labels(name: str) -> dict[str, str]:
    objects = raw_objects()
    return named(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]


def test_network_policies_deny_by_default_and_let_only_the_gateway_in():
    policies = network_policies()
    default = named(policies, "NetworkPolicy", "default-deny-ingress")
    assert default["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    outsider = {"app": "somebody-else"}
    gateway = pod_labels("gateway")
    assert ingress_allowed(policies, outsider, gateway, 8000)
    assert not ingress_allowed(policies, outsider, gateway, 8001)
    for name, callers in CALLERS.items():
        target = pod_labels(name)
        assert not ingress_allowed(policies, outsider, target, PORTS[name]), name
        for caller in set(PORTS) - {name}:
            allowed = ingress_allowed(policies, pod_labels(caller), target, PORTS[name])
            assert allowed == (caller in callers), f"{caller} -> {name}: {allowed}"
            assert not ingress_allowed(policies, pod_labels(caller), target, PORTS[name] + 100)
    assert ingress_allowed(policies, pod_labels("mailer"), {"app": "otel-collector"}, 4318)
    assert not ingress_allowed(policies, outsider, {"app": "otel-collector"}, 4318)


def test_every_pod_in_production_has_an_allow_rule():
    objects = render(K8S / "overlays" / "production")
    policies = of_kind(objects, "NetworkPolicy")
    assert policies
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        own = [
            policy
            for policy in policies
            if policy["spec"]["podSelector"] and selects(policy["spec"]["podSelector"], labels)
        ]
        assert own, f"{deployment['metadata']['name']} is unreachable under default deny"
