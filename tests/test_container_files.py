"""Static checks of the container setup: Dockerfile, docker-compose.yml,
.dockerignore and the helper scripts in docker/.

No Docker engine is needed. The compose checks use PyYAML when it is
importable (it resolves the x-app merge keys); the security checks that matter
most are plain-text and always run.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.tools import skip_unless_required

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
HEALTHCHECK_SCRIPT = ROOT / "docker" / "healthcheck.py"
ENTRYPOINT_SCRIPT = ROOT / "docker" / "entrypoint.sh"

IMAGE = "kasparro-etl:local"
INFRA_SERVICES = {"postgres", "redis"}
APP_SERVICES = {"migrate", "api", "worker", "beat", "flower", "upstream"}
# Only with `docker compose --profile observability`: dashboards and alerts.
OBSERVABILITY_SERVICES = {"prometheus", "grafana"}
OBSERVABILITY_PROFILE = "observability"
ONE_SHOT_SERVICES = {"migrate"}
LONG_RUNNING = (INFRA_SERVICES | APP_SERVICES | OBSERVABILITY_SERVICES) - ONE_SHOT_SERVICES
# Services that talk to Postgres and so must wait for the schema.
NEEDS_DATABASE = {"api", "worker", "beat"}

# The process contract (see the brief / README).
EXPECTED_COMMANDS = {
    "migrate": ["sh", "/app/docker/migrate.sh"],
    "api": ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
    "worker": ["celery", "-A", "kasparro.worker", "worker", "--loglevel=INFO"],
    "beat": ["celery", "-A", "kasparro.worker", "beat", "--loglevel=INFO",
             "--schedule", "/tmp/celerybeat-schedule"],
    "flower": ["celery", "-A", "kasparro.worker", "flower", "--port=5555"],
    "upstream": ["python", "-m", "kasparro.fake_upstream", "--host", "0.0.0.0",
                 "--port", "8900", "--data-dir", "data/upstream", "--advance-every", "300"],
}

# Endpoint (or command fragment) each service's healthcheck must probe.
EXPECTED_HEALTH_PROBES = {
    "postgres": "pg_isready",
    "redis": "redis-cli ping",
    "api": "http://127.0.0.1:8000/health/live",
    "worker": "celery -A kasparro.worker inspect ping -d celery@$HOSTNAME",
    "beat": "healthcheck.py beat",
    "flower": "http://127.0.0.1:5555/healthcheck",
    "upstream": "http://127.0.0.1:8900/coingecko/api/v3/ping",
    "prometheus": "http://127.0.0.1:9090/-/ready",
    "grafana": "http://127.0.0.1:3000/api/health",
}

SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|BASIC_AUTH)$")
# A variable holding a secret (READS_REQUIRE_KEY is a switch).
SECRET_VARIABLE = re.compile(r"(^API_KEY|_API_KEY|SECRET|PASSWORD|TOKEN|BASIC_AUTH)$")
# Secrets that must come from .env with no default at all.
REQUIRED_SECRETS = ("API_KEY", "FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD", "APP_DB_PASSWORD")
# Every other secret has an empty default or none.
ALLOWED_SECRET_DEFAULTS: dict[str, str] = {}
# Secrets a third-party image reads under its own name, from our variable in .env.
RENAMED_SECRETS = {"GF_SECURITY_ADMIN_PASSWORD": "GRAFANA_ADMIN_PASSWORD"}
ENV_EXAMPLE = ROOT / ".env.example"
# What a container needs whatever .env (shared with `make run`, so full of 127.0.0.1) says.
CONTAINER_SPECIFIC = {"BROKER_URL", "RESULT_BACKEND", "REDIS_URL", "FAKE_UPSTREAM_URL", "APP_ENV"}
# Read by compose, or by one service: passwords go into URLs, each secret to the services that use it.
NOT_FOR_EVERY_SERVICE = {"FAKE_UPSTREAM_ADMIN_TOKEN", "POSTGRES_PASSWORD", "APP_DB_PASSWORD", "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD",
                         "GRAFANA_ADMIN_USER", "GRAFANA_PORT", "PROMETHEUS_PORT", "PUBLISH_ADDRESS", "API_KEY",
                         "COINGECKO_API_KEY", "COINPAPRIKA_API_KEY", "DATABASE_URL", "GUNICORN_BIND",
                         "COMPOSE_PROJECT_NAME", "POSTGRES_SHARED_BUFFERS"}
# The services that read kasparro.config's settings: every app service but the fake upstream.
SETTINGS_READERS = APP_SERVICES - {"upstream"}
# The secrets (by the .env variable they come from) each service may hold; any other is a leak.
SECRETS_NEEDED = {
    "postgres": {"POSTGRES_PASSWORD"},
    "migrate": {"POSTGRES_PASSWORD", "APP_DB_PASSWORD"},
    "api": {"APP_DB_PASSWORD", "API_KEY"},
    "worker": {"APP_DB_PASSWORD", "COINGECKO_API_KEY", "COINPAPRIKA_API_KEY"},
    "beat": set(),
    "flower": {"FLOWER_BASIC_AUTH"},
    "upstream": {"FAKE_UPSTREAM_ADMIN_TOKEN"},
    "redis": set(),
    "prometheus": {"FLOWER_BASIC_AUTH"},
    "grafana": {"GRAFANA_ADMIN_PASSWORD"},
}
# The demo's fake upstream starts only with this profile (make up adds it when OFFLINE is on).
DEMO_PROFILE = "demo"
DEMO_SERVICES = {"upstream"}
DATABASE_URL_OF_THE_APP = re.compile(
    r"postgresql\+psycopg2://kasparro_app:\$\{APP_DB_PASSWORD:\?[^}]+\}@postgres:5432/kasparro")


# --------------------------------------------------------------------------
# helpers


def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(compose_text())
    assert isinstance(data, dict) and "services" in data
    return data


def services(compose: dict) -> dict:
    return compose["services"]


def as_argv(command) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def healthcheck_text(service: dict) -> str:
    test = service.get("healthcheck", {}).get("test", [])
    if isinstance(test, str):
        return test
    if test and test[0] == "CMD-SHELL":
        return " ".join(test[1:])
    if test and test[0] == "CMD":
        return " ".join(test[1:])
    return " ".join(test)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def env_files(service: dict) -> list[str]:
    value = service.get("env_file", [])
    items = [value] if isinstance(value, (str, dict)) else value
    return [item if isinstance(item, str) else item["path"] for item in items]


def example_variables() -> set[str]:
    """Every variable .env.example documents, commented out or not."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


# --------------------------------------------------------------------------
# compose: structure


def test_compose_has_exactly_the_expected_services(compose):
    assert set(services(compose)) == INFRA_SERVICES | APP_SERVICES | OBSERVABILITY_SERVICES


def test_every_long_running_service_has_a_healthcheck(compose):
    for name in LONG_RUNNING:
        service = services(compose)[name]
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check.get("test"), f"{name} healthcheck has no test"
        assert check["test"] not in (["NONE"], "NONE")
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name} healthcheck lacks {key}"


@pytest.mark.parametrize("name,probe", sorted(EXPECTED_HEALTH_PROBES.items()))
def test_healthchecks_probe_the_right_thing(compose, name, probe):
    text = healthcheck_text(services(compose)[name]).replace("$$", "$")
    assert probe in text, f"{name} healthcheck {text!r} does not probe {probe!r}"


def test_worker_healthcheck_escapes_hostname_for_the_container_shell(compose):
    test = services(compose)["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert "$$HOSTNAME" in compose_text()


def test_beat_healthcheck_watches_the_schedule_file_beat_writes(compose):
    beat = services(compose)["beat"]
    argv = as_argv(beat["command"])
    schedule = argv[argv.index("--schedule") + 1]
    test = beat["healthcheck"]["test"]
    assert test[test.index("--schedule") + 1] == schedule


def test_one_shot_migrate_does_not_restart_or_inherit_the_api_healthcheck(compose):
    migrate = services(compose)["migrate"]
    assert str(migrate.get("restart", "no")) in ("no", "False", "false")
    assert migrate.get("healthcheck", {}).get("disable") is True


def test_long_running_services_restart_unless_stopped(compose):
    for name in LONG_RUNNING:
        assert services(compose)[name].get("restart") == "unless-stopped", name


def test_app_services_share_one_image_through_the_x_app_anchor(compose):
    text = compose_text()
    assert re.search(r"^x-app:\s*&app\s*$", text, re.M), "x-app anchor missing"
    assert len(re.findall(r"^\s+<<:\s*\*app\s*$", text, re.M)) == len(APP_SERVICES)
    for name in APP_SERVICES:
        service = services(compose)[name]
        assert service["image"] == IMAGE, name
        build = service.get("build")
        context = build if isinstance(build, str) else build["context"]
        assert context == ".", name
    for name in INFRA_SERVICES:
        assert "build" not in services(compose)[name]


@pytest.mark.parametrize("name,argv", sorted(EXPECTED_COMMANDS.items()))
def test_commands_match_the_process_contract(compose, name, argv):
    assert as_argv(services(compose)[name]["command"]) == argv


def test_infrastructure_images_and_volume(compose):
    svc = services(compose)
    assert svc["postgres"]["image"].startswith("postgres:15@sha256:")
    assert svc["redis"]["image"].startswith("redis:7@sha256:")
    volumes = svc["postgres"].get("volumes", [])
    named = [v.split(":", 1)[0] for v in volumes if isinstance(v, str)]
    assert named and all(n in (compose.get("volumes") or {}) for n in named)
    assert any(v.endswith(":/var/lib/postgresql/data") for v in volumes)


def test_published_ports(compose):
    def targets(name):
        ports = services(compose)[name].get("ports", [])
        return {str(p).rsplit(":", 1)[-1] for p in ports}

    assert targets("api") == {"8000"}
    assert targets("flower") == {"5555"}
    for name in ("postgres", "redis", "worker", "beat", "migrate", "upstream"):
        assert not services(compose)[name].get("ports"), f"{name} should not publish ports"


# --------------------------------------------------------------------------
# compose: start-up order


def test_depends_on_always_uses_conditions(compose):
    for name, service in services(compose).items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form"
        for dep, spec in deps.items():
            assert dep in services(compose), f"{name} depends on unknown {dep}"
            expected = ("service_completed_successfully" if dep in ONE_SHOT_SERVICES
                        else "service_healthy")
            assert spec.get("condition") == expected, f"{name} -> {dep}"


def test_database_users_wait_for_migrations(compose):
    for name in NEEDS_DATABASE:
        deps = services(compose)[name].get("depends_on", {})
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name
    assert services(compose)["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_broker_users_wait_for_redis(compose):
    for name in ("api", "worker", "beat", "flower"):
        assert services(compose)[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_beat_waits_for_worker(compose):
    # beat sends the first ETL run on start: a worker must be there to take it.
    assert services(compose)["beat"]["depends_on"]["worker"]["condition"] == "service_healthy"


# --------------------------------------------------------------------------
# compose: configuration and secrets


def test_service_hostnames_are_set_explicitly(compose):
    for name in SETTINGS_READERS:
        env = environment(services(compose)[name])
        assert env["BROKER_URL"] == "redis://redis:6379/0", name
        assert env["RESULT_BACKEND"] == "redis://redis:6379/1", name
        assert env["LOG_FORMAT"].endswith("json}") or env["LOG_FORMAT"] == "json", name
        assert "SOURCES_FILE" in env and "ETL_INTERVAL_SECONDS" in env, name
        for passthrough in ("COINGECKO_BASE_URL", "COINPAPRIKA_BASE_URL"):
            assert passthrough in env, f"{name} does not pass {passthrough}"
    for name in ("migrate", "api", "worker"):
        assert DATABASE_URL_OF_THE_APP.fullmatch(environment(services(compose)[name])["DATABASE_URL"]), name
    for key in ("COINGECKO_API_KEY", "COINPAPRIKA_API_KEY"):
        assert environment(services(compose)["worker"])[key] == f"${{{key}:-}}"


def test_the_app_connects_as_its_own_role_and_only_the_migrate_job_holds_the_superuser(compose):
    holders = {name for name, service in services(compose).items() if "POSTGRES_PASSWORD" in str(service)}
    assert holders == {"postgres", "migrate"}
    admin = environment(services(compose)["migrate"])["ADMIN_DATABASE_URL"]
    assert admin.startswith("postgresql+psycopg2://postgres:${POSTGRES_PASSWORD:?") and admin.endswith("/postgres")
    script = (ROOT / "docker" / "migrate.sh").read_text(encoding="utf-8")
    # The superuser hands the database over, then the migrations run without its password.
    assert script.index("docker/app_role.py") < script.index("unset ADMIN_DATABASE_URL") < script.index("init-db")


def test_the_fake_upstream_is_a_demo_only_and_production_calls_the_real_apis_by_default(compose):
    for name, service in services(compose).items():
        expected = {DEMO_PROFILE} if name in DEMO_SERVICES else set()
        assert set(service.get("profiles", [])) - {OBSERVABILITY_PROFILE} == expected, name
    # Without the demo profile nothing may wait for the upstream (compose would refuse to start).
    for name, service in services(compose).items():
        assert "upstream" not in service.get("depends_on", {}), name
    assert environment(services(compose)["worker"])["OFFLINE"] == "${OFFLINE:-0}"
    # make up adds the profile when OFFLINE is on, so the first `make up` (.env.example: OFFLINE=1) works offline.
    assert re.search(r"^OFFLINE=1$", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M)


@pytest.mark.parametrize("offline,profile", [("1", True), ("true", True), ("0", False), ("", False)])
def test_make_up_starts_the_fake_upstream_exactly_when_offline_is_on(tmp_path, offline, profile):
    (tmp_path / ".env").write_text(f"OFFLINE={offline}\n")
    dry = subprocess.run(["make", "-n", "-f", str(ROOT / "Makefile"), "up", "COMPOSE=compose"], cwd=tmp_path,
                         capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "OFFLINE"})
    (recipe,) = [line for line in dry.stdout.replace("\\\n", " ").splitlines() if "up -d" in line]

    done = subprocess.run(["sh", "-c", recipe.replace("compose $profile up -d", 'echo "profile=$profile"')],
                          cwd=tmp_path, capture_output=True, text=True, check=True)

    assert done.stdout.strip() == ("profile=--profile demo" if profile else "profile=")


def test_offline_demo_points_at_upstream(compose, tmp_path):
    from kasparro.catalog import declared_sources

    env = environment(services(compose)["worker"])
    assert env["FAKE_UPSTREAM_URL"] == "http://upstream:8900"
    specs = declared_sources({"SOURCES_FILE": str(ROOT / "sources.toml"), "OFFLINE": True,
                              "FAKE_UPSTREAM_URL": env["FAKE_UPSTREAM_URL"]})
    assert specs["coinpaprika"]["base_url"] == "http://upstream:8900/coinpaprika/v1"
    assert specs["coingecko"]["base_url"] == "http://upstream:8900/coingecko/api/v3"


def test_api_key_must_come_from_env_file(compose):
    value = environment(services(compose)["api"])["API_KEY"]
    assert value.startswith("${API_KEY:?"), f"api: API_KEY={value!r}"
    assert environment(services(compose)["flower"])["FLOWER_BASIC_AUTH"].startswith(
        "${FLOWER_BASIC_AUTH:?")


def test_each_service_holds_only_the_secrets_it_needs(compose):
    for name, service in services(compose).items():
        assert "env_file" not in service, f"{name} gets the whole .env, every secret in it"
        # Secrets by the variable they are read from, wherever they appear (a URL's password too).
        held = set(re.findall(r"\$\{(\w+)", json.dumps(service.get("environment", {}))))
        secrets = {var for var in held if SECRET_VARIABLE.search(var)}
        assert secrets <= SECRETS_NEEDED[name], f"{name} holds {sorted(secrets - SECRETS_NEEDED[name])}"
    assert environment(services(compose)["upstream"]) == {
        "LOG_FORMAT": "${LOG_FORMAT:-json}", "FAKE_UPSTREAM_ADMIN_TOKEN": "${FAKE_UPSTREAM_ADMIN_TOKEN:-}"}


def test_compose_publishes_on_loopback_unless_publish_address_says_otherwise(compose):
    published = {name: service["ports"] for name, service in services(compose).items() if service.get("ports")}
    assert set(published) == {"api", "flower", "prometheus", "grafana"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("${PUBLISH_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port!r}"


def test_images_are_pinned_by_digest(compose, dockerfile):
    images = [service["image"] for service in services(compose).values() if "build" not in service]
    images += [args.split()[0] for ins, args in dockerfile if ins == "FROM"]
    for image in images:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), f"{image} is pinned by tag only"


def test_no_secret_has_a_literal_value_in_compose(compose):
    for name, service in services(compose).items():
        for key, value in environment(service).items():
            if not SECRET_NAME.search(key):
                continue
            match = re.fullmatch(r"\$\{(\w+)(?:(:?[-?])(.*))?\}", value)
            assert match, f"{name}: {key} has a literal value"
            var, op, rest = match.groups()
            assert var == RENAMED_SECRETS.get(key, key), f"{name}: {key} is read from ${{{var}}}"
            if key in REQUIRED_SECRETS or key in RENAMED_SECRETS:
                assert op == ":?", f"{name}: {key} must use ${{{key}:?...}}"
            elif op in (":-", "-"):
                assert rest == ALLOWED_SECRET_DEFAULTS.get(key, ""), (
                    f"{name}: {key} has the default {rest!r}")


def test_every_documented_setting_reaches_every_settings_reader_and_the_shell_wins(compose):
    variables = example_variables()
    assert {"READS_REQUIRE_KEY", "API_KEY", "LOG_FORMAT"} <= variables
    for name in SETTINGS_READERS:
        env = environment(services(compose)[name])
        for var in sorted(variables - CONTAINER_SPECIFIC - NOT_FOR_EVERY_SERVICE):
            # ${VAR...} is interpolated from the shell first and .env second: the shell wins, as under make run.
            assert re.match(rf"\$\{{{var}(\}}|:?[-?])", env.get(var, "")), f"{name}: {var}={env.get(var)!r}"
        for var in CONTAINER_SPECIFIC:
            assert var in env and "127.0.0.1" not in env[var], f"{name}: {var}"
    assert "${APP_DB_PASSWORD:?" in environment(services(compose)["api"])["DATABASE_URL"]


def test_containers_log_json_unless_told_otherwise(compose, dockerfile):
    for name in APP_SERVICES:
        assert environment(services(compose)[name])["LOG_FORMAT"] == "${LOG_FORMAT:-json}", name
    # .env feeds the interpolation, so a LOG_FORMAT set in the example would win over json in containers
    assert not re.search(r"^LOG_FORMAT=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M)
    env = " ".join(args for ins, args in dockerfile if ins == "ENV")
    assert re.search(r"\bLOG_FORMAT=json\b", env)


def test_required_secrets_fail_clearly_in_plain_text():
    # Independent of PyYAML: the :? form with a message, and no literal value.
    text = compose_text()
    for key in REQUIRED_SECRETS:
        # Wherever it is used, a whole value or a URL's password.
        uses = re.findall(rf"\$\{{{key}([^}}]*)\}}", text)
        assert uses, f"{key} is not passed to any service"
        for rest in uses:
            assert re.fullmatch(r":\?.+", rest), f"${{{key}{rest}}}"
    # nothing like API_KEY=abc or API_KEY: abc anywhere in committed container files
    for path in (DOCKERFILE, COMPOSE_FILE, ENTRYPOINT_SCRIPT):
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*(?:ENV\s+|ARG\s+|export\s+|-\s*)?(API_KEY|FLOWER_BASIC_AUTH)\s*[=:]\s*(\S.*)?$",
                         line)
            if m and m.group(2):
                assert m.group(2).startswith("${"), f"{path.name}: {line.strip()}"


# --------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_base_image(dockerfile):
    froms = [args for ins, args in dockerfile if ins == "FROM"]
    assert froms and froms[-1].split()[0].startswith("python:3.11-slim@sha256:")


def test_dockerfile_known_instructions_only(dockerfile):
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "EXPOSE",
             "HEALTHCHECK", "CMD", "ENTRYPOINT", "LABEL", "VOLUME", "STOPSIGNAL", "SHELL",
             "ONBUILD"}
    assert {ins for ins, _ in dockerfile} <= known


def _arg_defaults(dockerfile) -> dict[str, str]:
    defaults = {}
    for ins, args in dockerfile:
        if ins == "ARG" and "=" in args:
            key, _, value = args.partition("=")
            defaults[key.strip()] = value.strip().strip('"')
    return defaults


def test_dockerfile_runs_as_fixed_non_root_uid(dockerfile):
    users = [args for ins, args in dockerfile if ins == "USER"]
    assert users, "no USER instruction"
    user = users[-1]
    for key, value in _arg_defaults(dockerfile).items():
        user = user.replace("${%s}" % key, value).replace("$" + key, value)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} is not a fixed non-zero uid"
    if gid:
        assert gid.isdigit() and int(gid) != 0
    # the user is actually created with that uid
    created = " ".join(args for ins, args in dockerfile if ins == "RUN")
    for key, value in _arg_defaults(dockerfile).items():
        created = created.replace('"${%s}"' % key, value).replace("${%s}" % key, value)
    assert re.search(rf"useradd\b.*--uid {uid}\b", created)
    # nothing after USER switches back to root
    last_user_index = max(i for i, (ins, _) in enumerate(dockerfile) if ins == "USER")
    assert not any(ins == "RUN" for ins, _ in dockerfile[last_user_index + 1:])


def test_dockerfile_layer_order_is_cache_friendly(dockerfile):
    steps = [(ins, args) for ins, args in dockerfile]
    copy_reqs = next(i for i, (ins, a) in enumerate(steps)
                     if ins == "COPY" and a.split()[0] == "requirements.txt")
    pip = next(i for i, (ins, a) in enumerate(steps)
               if ins == "RUN" and "pip install" in a)
    copy_all = next(i for i, (ins, a) in enumerate(steps)
                    if ins == "COPY" and a.split()[:1] == ["."])
    assert copy_reqs < pip < copy_all
    assert "--no-cache-dir" in steps[pip][1] and "-r requirements.txt" in steps[pip][1]


def test_dockerfile_environment_ports_healthcheck_and_cmd(dockerfile):
    env = " ".join(args for ins, args in dockerfile if ins == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    exposed = {p.split("/")[0] for ins, args in dockerfile if ins == "EXPOSE" for p in args.split()}
    assert exposed == {"8000", "5555", "8900"}
    health = [args for ins, args in dockerfile if ins == "HEALTHCHECK"]
    assert len(health) == 1 and "/health/live" in health[0] and ":8000" in health[0]
    cmd = [args for ins, args in dockerfile if ins == "CMD"]
    assert exec_form(cmd[-1]) == EXPECTED_COMMANDS["api"]
    entrypoint = [args for ins, args in dockerfile if ins == "ENTRYPOINT"]
    assert entrypoint and exec_form(entrypoint[-1])[-1] == "/app/docker/entrypoint.sh"
    workdir = [args for ins, args in dockerfile if ins == "WORKDIR"]
    assert workdir[-1] == "/app"


def test_dockerignore_keeps_secrets_and_environments_out():
    patterns = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    # var/: make run's databases and their passwords must not be baked into the image.
    for required in (".env", ".venv", ".git", "var"):
        assert required in patterns, f".dockerignore lacks {required}"
    # files the image needs must not be ignored
    for needed in ("requirements.txt", "kasparro", "docker", "migrations", "data",
                   "wsgi.py", "celeryconfig.py", "gunicorn.conf.py", "sources.toml"):
        assert needed not in patterns and f"/{needed}" not in patterns


def test_helper_scripts_referenced_by_the_container_files_exist():
    text = compose_text() + DOCKERFILE.read_text(encoding="utf-8")
    for ref in set(re.findall(r"/app/(docker/[\w.-]+)", text)):
        assert (ROOT / ref).is_file(), ref


# --------------------------------------------------------------------------
# helper scripts (run locally, loopback only)


def _run_healthcheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK_SCRIPT), *args],
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_http_probe(tmp_path):
    (tmp_path / "ping").write_text("OK\n")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert _run_healthcheck("http", f"{base}/ping", "--expect", "OK").returncode == 0
        assert _run_healthcheck("http", f"{base}/ping", "--expect", "NOPE").returncode == 1
        assert _run_healthcheck("http", f"{base}/missing").returncode == 1
    finally:
        server.shutdown()
        server.server_close()
    assert _run_healthcheck("http", f"{base}/ping", "--timeout", "2").returncode == 1


def test_healthcheck_beat_requires_a_fresh_schedule_and_a_live_process(tmp_path):
    schedule = tmp_path / "celerybeat-schedule"
    no_process = _run_healthcheck("beat", "--schedule", str(schedule))
    assert no_process.returncode == 1  # no process, or (if a real beat runs here) no file
    fake_beat = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "celery", "beat"])
    try:
        assert _run_healthcheck("beat", "--schedule", str(schedule)).returncode == 1
        schedule.with_name(schedule.name + ".db").write_bytes(b"")
        assert _run_healthcheck("beat", "--schedule", str(schedule)).returncode == 0
        old = time.time() - 3600
        os.utime(schedule.with_name(schedule.name + ".db"), (old, old))
        stale = _run_healthcheck("beat", "--schedule", str(schedule), "--max-age", "900")
        assert stale.returncode == 1 and "stale" in stale.stderr
    finally:
        fake_beat.kill()
        fake_beat.wait(timeout=10)


def _entrypoint_env(**env: str) -> dict[str, str]:
    out = subprocess.run(["sh", str(ENTRYPOINT_SCRIPT), "env"], capture_output=True, text=True,
                         timeout=30, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env})
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_entrypoint_drops_every_empty_setting_so_defaults_apply():
    env = _entrypoint_env(WEB_CONCURRENCY="", READS_REQUIRE_KEY="", LOG_LEVEL="DEBUG")
    assert "WEB_CONCURRENCY" not in env and "READS_REQUIRE_KEY" not in env
    assert env["LOG_LEVEL"] == "DEBUG"


def test_entrypoint_keeps_configured_urls_and_drops_empty_ones():
    env = _entrypoint_env(OFFLINE="0", COINGECKO_BASE_URL="https://example.invalid/api/v3",
                          COINPAPRIKA_BASE_URL="")
    assert env["COINGECKO_BASE_URL"] == "https://example.invalid/api/v3"
    assert "COINPAPRIKA_BASE_URL" not in env


# --------------------------------------------------------------------------
# compose: the observability profile (files checked further in tests/test_alerts.py)

OBSERVABILITY_DIR = ROOT / "docker" / "observability"


def test_observability_services_run_only_in_their_profile(compose):
    for name, service in services(compose).items():
        if name in DEMO_SERVICES:
            continue
        expected = [OBSERVABILITY_PROFILE] if name in OBSERVABILITY_SERVICES else None
        # Without a profile a service starts on plain `docker compose up`; the ETL stack must not change.
        assert service.get("profiles") == expected, name


def test_observability_mounts_exist_and_stay_read_only(compose):
    for name in OBSERVABILITY_SERVICES:
        binds = [v for v in services(compose)[name]["volumes"] if v.startswith("./")]
        assert binds, name
        for bind in binds:
            host, _, options = bind.partition(":")
            assert (ROOT / host).exists(), bind
            assert options.endswith(":ro"), f"{name} may write into the checkout: {bind}"
            assert (ROOT / host).resolve().is_relative_to(OBSERVABILITY_DIR), bind
    named = [v.split(":", 1)[0] for name in OBSERVABILITY_SERVICES for v in services(compose)[name]["volumes"]
             if not v.startswith("./")]
    assert named and all(volume in compose["volumes"] for volume in named)


def test_prometheus_renders_its_config_with_the_flower_login(compose):
    prometheus = services(compose)["prometheus"]
    assert prometheus["entrypoint"] == ["/bin/sh", "/etc/prometheus/start.sh"]
    assert (OBSERVABILITY_DIR / "prometheus" / "start.sh").is_file()
    assert environment(prometheus)["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert {dep: spec["condition"] for dep, spec in prometheus["depends_on"].items()} == {
        "api": "service_healthy", "flower": "service_healthy"}


def test_grafana_login_comes_from_env_and_waits_for_prometheus(compose):
    grafana = services(compose)["grafana"]
    env = environment(grafana)
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_SECURITY_ADMIN_USER"] == "${GRAFANA_ADMIN_USER:-admin}"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert {"GRAFANA_ADMIN_PASSWORD", "GRAFANA_ADMIN_USER", "GRAFANA_PORT", "PROMETHEUS_PORT"} <= example_variables()
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith("/etc/grafana/dashboards/")
    assert (OBSERVABILITY_DIR / "grafana" / "dashboards" / home.rsplit("/", 1)[1]).is_file()


def test_observability_ports_are_published(compose):
    def targets(name):
        return {str(p).rsplit(":", 1)[-1] for p in services(compose)[name].get("ports", [])}

    assert targets("prometheus") == {"9090"}
    assert targets("grafana") == {"3000"}


def compose_cli() -> list[str] | None:
    """Return the Compose command this machine has (v2 plugin or Debian's docker-compose 1.29), or None."""
    for command in (["docker", "compose"], ["docker-compose"]):
        try:
            if subprocess.run([*command, "version"], capture_output=True, timeout=30, check=False).returncode == 0:
                return command
        except OSError:
            continue
    return None


@pytest.mark.parametrize("profile", [[], ["--profile", OBSERVABILITY_PROFILE], ["--profile", DEMO_PROFILE]])
def test_compose_config_validates_with_the_compose_cli(tmp_path, profile):
    command = compose_cli()
    if command is None:
        skip_unless_required("REQUIRE_COMPOSE", "neither `docker compose` nor `docker-compose` is installed (Debian: "
                             "apt-get install docker-compose; .ci/run does this)")
    secrets = {"API_KEY": "key", "FLOWER_BASIC_AUTH": "user:password", "POSTGRES_PASSWORD": "password",
               "APP_DB_PASSWORD": "password", "GRAFANA_ADMIN_PASSWORD": "password"}
    (tmp_path / ".env").write_text("".join(f"{key}={value}\n" for key, value in secrets.items()))
    # Only the .env above: a variable set in this shell would win over it.
    env = {k: v for k, v in os.environ.items() if k not in example_variables()}

    result = subprocess.run([*command, "-f", str(COMPOSE_FILE), "--project-directory", str(tmp_path), "-p", "kasparro",
                             *profile, "config"], capture_output=True, text=True, env=env, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    active = {OBSERVABILITY_PROFILE: OBSERVABILITY_SERVICES, DEMO_PROFILE: DEMO_SERVICES}.get(profile[-1] if profile
                                                                                          else "", set())
    expected = INFRA_SERVICES | (APP_SERVICES - DEMO_SERVICES) | active
    rendered = pytest.importorskip("yaml").safe_load(result.stdout)["services"]
    assert expected <= set(rendered)
    # Compose v2 renders a port as a mapping, 1.29 as "127.0.0.1:8000:8000/tcp".
    hosts = [port["host_ip"] if isinstance(port, dict) else str(port).split(":")[0]
             for service in rendered.values() for port in service.get("ports", [])]
    assert hosts and set(hosts) == {"127.0.0.1"}, f"published beyond loopback without PUBLISH_ADDRESS: {hosts}"


class FakeEngine(ThreadingHTTPServer):
    """A Docker engine API that owns nothing: it answers what compose asks and records every request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), FakeEngineHandler)


class FakeEngineHandler(SimpleHTTPRequestHandler):
    server: FakeEngine

    def _answer(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        path = self.path.split("?")[0]
        if path.endswith("/version"):
            status, body = 200, {"ApiVersion": "1.41", "MinAPIVersion": "1.12", "Version": "20.10.0", "Os": "linux",
                                 "Arch": "amd64"}
        elif path.endswith("/_ping"):
            status, body = 200, "OK"
        elif self.command == "GET" and path.endswith("/volumes"):
            status, body = 200, {"Volumes": [], "Warnings": []}
        elif self.command == "GET" and path.endswith("/info"):
            status, body = 200, {"ID": "fake", "OSType": "linux", "ServerVersion": "20.10.0"}
        elif self.command == "GET" and path.endswith("/json"):
            status, body = 200, []
        else:
            # Nothing exists here: compose says "not found" and goes on to the next thing to remove.
            status, body = 404, {"message": "not found"}
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Api-Version", "1.41")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_compose_down_v_typed_by_hand_removes_make_ups_volumes_whatever_the_folder_is_called(tmp_path):
    command = compose_cli()
    if command is None:
        skip_unless_required("REQUIRE_COMPOSE", "neither `docker compose` nor `docker-compose` is installed (Debian: "
                             "apt-get install docker-compose; .ci/run does this)")
    # A checkout in a folder not called kasparro, with the .env `make up` / `make run` would write.
    folder = tmp_path / "my-etl-checkout"
    folder.mkdir()
    (folder / "docker-compose.yml").write_text(compose_text(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in example_variables() and not k.startswith("COMPOSE_")
           and not k.startswith("DOCKER_")}
    subprocess.run(["sh", str(ROOT / "scripts" / "ensure-env.sh"), str(folder / ".env")], env=env, check=True,
                   capture_output=True)
    engine = FakeEngine()
    threading.Thread(target=engine.serve_forever, daemon=True).start()
    try:
        result = subprocess.run([*command, "down", "-v"], cwd=folder, capture_output=True, text=True, timeout=120,
                                env={**env, "DOCKER_HOST": f"tcp://127.0.0.1:{engine.server_address[1]}"})
    finally:
        engine.shutdown()
        engine.server_close()
    removed = {line.split("/volumes/")[1] for line in engine.requests if line.startswith("DELETE") and "/volumes/" in line}
    assert "kasparro_postgres-data" in removed, f"{removed}\n{result.stdout}{result.stderr}"


# --------------------------------------------------------------------------
# where the API listens


def gunicorn_bind(**env: str) -> str:
    """Return the address gunicorn.conf.py binds under `env` (GUNICORN_BIND unset unless given)."""
    code = "import runpy; print(runpy.run_path('gunicorn.conf.py')['bind'])"
    base = {k: v for k, v in os.environ.items() if k != "GUNICORN_BIND"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_make_run_serves_the_api_on_loopback_unless_gunicorn_bind_widens_it():
    assert gunicorn_bind() == "127.0.0.1:8000"
    assert gunicorn_bind(GUNICORN_BIND="0.0.0.0:8000") == "0.0.0.0:8000"
    procfile = (ROOT / "Procfile").read_text(encoding="utf-8")
    (api,) = [line for line in procfile.splitlines() if line.startswith("api:")]
    assert "--bind" not in api and "-b " not in api  # gunicorn.conf.py decides
    assert "--address=127.0.0.1" in procfile  # Flower's, under make run


def test_containers_listen_on_every_interface_where_the_port_mapping_decides(compose, dockerfile):
    env = " ".join(args for ins, args in dockerfile if ins == "ENV")
    assert re.search(r"\bGUNICORN_BIND=0\.0\.0\.0:8000\b", env)
    assert environment(services(compose)["api"])["GUNICORN_BIND"] == "0.0.0.0:8000"
