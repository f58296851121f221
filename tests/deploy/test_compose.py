"""Deployment files: docker-compose.yml validates offline; the image does what `make run` does.

This machine has no container engine, so the compose file is checked with Debian's
``docker-compose config`` (v1, 1.29), which parses, validates and renders it without one. It
runs on a copy whose ``deploy/env/*.env`` are the committed ``*.env.example`` files: the real
env files hold secrets and are never committed, and this also proves the examples alone make a
complete configuration.

The image must stay equivalent to `make run`, so that what the tests prove about one holds for
the other: the facts compared below are read from both sides' files, never restated here.
"""

import ipaddress
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from replication.tasks import PRIORITY_QUEUE, queue_of

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
RUN_SH = ROOT / "scripts" / "run.sh"
INSTALL_DEPS = ROOT / "scripts" / "install-deps.sh"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
APP_SERVICES = ("migrate", "web-us", "web-eu", "worker-us", "worker-eu", "beat")
REGIONS = {"us": "us_s3", "eu": "eu_s3"}


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is missing: run `make install` (scripts/install-deps.sh)"
    return found


def _compose_copy(tmp_path: Path) -> Path:
    """Copy the compose project, with every example env file in place of the real one."""
    shutil.copy2(COMPOSE, tmp_path / COMPOSE.name)
    shutil.copy2(DOCKERFILE, tmp_path / DOCKERFILE.name)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("*.env"))
    for example in (tmp_path / "deploy" / "env").glob("*.env.example"):
        shutil.copy2(example, example.with_suffix(""))
    return tmp_path


def _config(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_docker_compose(), "-f", "docker-compose.yml", "config"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Return the compose file as `docker-compose config` renders it (rc 0 asserted)."""
    result = _config(_compose_copy(tmp_path_factory.mktemp("compose")))
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Return a service's mounts as {target: (source, mode)} (config renders "src:dst:mode")."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target, mode = [*spec.split(":"), "rw"][:3]
        mounts[target] = (source, mode)
    return mounts


def _addlocations(command: str) -> dict[str, dict[str, str]]:
    """Return the ``addlocation`` calls of a shell command: {location ID: {option: value}}."""
    calls = {}
    for location, args in re.findall(r"addlocation (\w+) ([^)]*)\)", command):
        calls[location] = dict(re.findall(r'--option "?(\w+)=([^"\s]+)', args))
    return calls


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else shlex.join(command)


_NGINX_TOKEN = re.compile(r"""'[^']*'|"[^"]*"|#[^\n]*|[;{}]|[^\s;{}'"#]+""")


def _nginx_directives() -> list[list[str]]:
    """Return every directive of nginx.conf (block openers included) as its words."""
    directives: list[list[str]] = []
    words: list[str] = []
    for token in _NGINX_TOKEN.findall(NGINX_CONF.read_text()):
        if token.startswith("#"):
            continue
        if token in (";", "{", "}"):
            if words:
                directives.append(words)
            words = []
        else:
            words.append(token[1:-1] if token[0] in "'\"" else token)
    return directives


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"^\s*#[^\n]*\n", "", DOCKERFILE.read_text(), flags=re.MULTILINE)
    text = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _run_sh_gunicorn() -> list[str]:
    """Return the words of the gunicorn command line of run.sh, continuations joined."""
    text = re.sub(r"\\\n", " ", RUN_SH.read_text())
    line = re.search(r'"\$BIN/gunicorn"[^\n]*', text)
    assert line is not None, "run.sh starts no gunicorn"
    return shlex.split(line.group(0))


def _option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


# --- docker-compose config ---------------------------------------------------------------------


def test_docker_compose_config_rejects_an_invalid_file(tmp_path: Path) -> None:
    directory = _compose_copy(tmp_path)
    text = (directory / "docker-compose.yml").read_text()
    (directory / "docker-compose.yml").write_text(
        text.replace("  redis:\n", "  redis:\n    bogus_key: 1\n", 1)
    )

    result = _config(directory)

    assert result.returncode != 0
    assert "bogus_key" in result.stderr


def test_docker_compose_config_fails_without_the_real_env_files(tmp_path: Path) -> None:
    directory = _compose_copy(tmp_path)
    (directory / "deploy" / "env" / "app.env").unlink()

    result = _config(directory)

    assert result.returncode != 0
    assert "app.env" in result.stderr


def test_the_compose_file_has_every_service_of_a_two_region_deployment(
    rendered: dict[str, Any],
) -> None:
    services = rendered["services"]

    expected = {"postgres", "redis", "minio-us", "minio-eu", "minio-init", "proxy", *APP_SERVICES}
    assert expected <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["minio-us"]["image"].startswith("minio/minio:")
    assert services["minio-eu"]["image"].startswith("minio/minio:")
    assert services["minio-init"]["image"].startswith("minio/mc:")
    assert {services[name]["image"] for name in APP_SERVICES} == {"quay-geo:latest"}
    assert all(services[name]["build"]["context"] for name in APP_SERVICES)


def test_long_running_services_have_health_checks_and_one_shots_do_not_restart(
    rendered: dict[str, Any],
) -> None:
    services = rendered["services"]
    one_shots = {"migrate", "minio-init"}
    checked = {"postgres", "redis", "minio-us", "minio-eu", "web-us", "web-eu", "worker-us"}
    checked |= {"worker-eu", "proxy"}

    for name in checked:
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        assert len(test) > 1, name
    for name in set(services) - one_shots:
        assert services[name]["restart"] == "unless-stopped", name
    for name in one_shots:
        assert services[name]["restart"] == "no", name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for region in REGIONS:
        assert "/health/instance" in " ".join(services[f"web-{region}"]["healthcheck"]["test"])


def test_state_lives_in_named_volumes(rendered: dict[str, Any]) -> None:
    services, volumes = rendered["services"], set(rendered["volumes"])

    for name, target in [
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("minio-us", "/data"),
        ("minio-eu", "/data"),
    ]:
        mounts = _mounts(services[name])
        assert mounts[target][0] in volumes, name


def test_each_region_prefers_its_own_location_in_web_and_worker(rendered: dict[str, Any]) -> None:
    services = rendered["services"]

    for region, location in REGIONS.items():
        for role in ("web", "worker"):
            environment = services[f"{role}-{region}"]["environment"]
            assert environment["QUAY_DISTRIBUTED_STORAGE_PREFERENCE"] == location


def test_each_worker_consumes_its_region_queue_the_priority_queue_and_the_default_one(
    rendered: dict[str, Any],
) -> None:
    for region, location in REGIONS.items():
        words = shlex.split(_command(rendered["services"][f"worker-{region}"]))
        assert words[:4] == ["celery", "-A", "quay_geo", "worker"]
        queues = _option(words, "-Q").split(",")
        assert sorted(queues) == sorted(
            [queue_of(location), PRIORITY_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE]
        )
    beat = shlex.split(_command(rendered["services"]["beat"]))
    assert beat[:4] == ["celery", "-A", "quay_geo", "beat"]


def test_app_services_share_postgres_and_redis_behind_the_tls_proxy(
    rendered: dict[str, Any],
) -> None:
    for name in APP_SERVICES:
        environment = rendered["services"][name]["environment"]
        assert environment["DJANGO_BEHIND_TLS_PROXY"] == "1", name
        assert re.fullmatch(
            r"postgres://[^@]+@postgres:5432/quaygeo", environment["DATABASE_URL"]
        ), name
        assert environment["CELERY_BROKER_URL"] == "redis://redis:6379/0", name
        assert environment["DJANGO_SECRET_KEY"], name
        assert environment["DJANGO_ALLOWED_HOSTS"], name
        assert "DJANGO_DEBUG" not in environment, name


def test_app_services_trust_forwarded_headers_from_the_proxy_alone(
    rendered: dict[str, Any],
) -> None:
    proxy_address = rendered["services"]["proxy"]["networks"]["default"]["ipv4_address"]
    subnet = rendered["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_address) in ipaddress.ip_network(subnet)
    for name in APP_SERVICES:
        environment = rendered["services"][name]["environment"]
        assert environment["QUAY_GEO_TRUSTED_PROXIES"] == proxy_address, name


def test_the_image_and_make_run_read_the_trusted_proxies_through_the_gunicorn_config() -> None:
    # gunicorn's own default trusts 127.0.0.1: the shared config replaces it by the setting.
    assert '"-c", "python:quay_geo.gunicorn_config"' in DOCKERFILE.read_text()
    assert "-c python:quay_geo.gunicorn_config" in RUN_SH.read_text()


def test_app_services_start_after_the_one_shot_migrate_succeeded(rendered: dict[str, Any]) -> None:
    services = rendered["services"]

    for name in set(APP_SERVICES) - {"migrate"}:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
    migrate = services["migrate"]["depends_on"]
    assert migrate["minio-init"]["condition"] == "service_completed_successfully"
    for region in REGIONS:
        condition = services["minio-init"]["depends_on"][f"minio-{region}"]["condition"]
        assert condition == "service_healthy"


def test_migrate_configures_each_region_on_its_own_minio_and_the_bucket_minio_init_made(
    rendered: dict[str, Any],
) -> None:
    services = rendered["services"]
    created = re.findall(r"mc mb --ignore-existing (\w+)/(\S+)", _command(services["minio-init"]))
    locations = _addlocations(_command(services["migrate"]))

    assert set(locations) == set(REGIONS.values())
    for region, location in REGIONS.items():
        options = locations[location]
        host = re.fullmatch(r"http://([\w.-]+):9000", options["endpoint_url"])
        assert host is not None
        assert host.group(1) in services[f"minio-{region}"]["networks"]["default"]["aliases"]
        assert (region, options["s3_bucket"]) in created
        # The same variables give MinIO its credentials and quay-geo the location's.
        for kind in ("ACCESS", "SECRET"):
            variable = f"$$S3_{region.upper()}_{kind}_KEY"
            assert options[f"s3_{kind.lower()}_key"] == variable
            assert variable in " ".join(services[f"minio-{region}"]["entrypoint"])


def test_secrets_come_from_git_ignored_env_files_with_committed_examples(
    rendered: dict[str, Any],
) -> None:
    text = COMPOSE.read_text()
    referenced = set(re.findall(r"deploy/env/[\w.-]+", text))

    assert referenced
    for path in referenced:
        assert path.endswith(".env"), path
        assert (ROOT / f"{path}.example").is_file(), path
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", path], cwd=ROOT, check=False, timeout=30
        )
        assert ignored.returncode == 0, f"{path} is not git-ignored"
    for example in (ROOT / "deploy" / "env").glob("*.env.example"):
        for line in example.read_text().splitlines():
            name, _, value = line.partition("=")
            if re.search(r"PASSWORD|SECRET", name) and not line.startswith("#"):
                assert "CHANGE-ME" in value, f"{example.name}: {name} looks like a real secret"


# --- the TLS proxy ------------------------------------------------------------------------------


def test_the_proxy_serves_one_region_per_port_with_mounted_certificates(
    rendered: dict[str, Any],
) -> None:
    proxy = rendered["services"]["proxy"]
    published = {(str(p["published"]), str(p["target"])) for p in proxy["ports"]}
    mounts = _mounts(proxy)

    assert {("443", "443"), ("8443", "8443")} <= published
    assert mounts["/etc/nginx/certs"][0].endswith("/deploy/certs")
    assert mounts["/etc/nginx/certs"][1] == "ro"
    assert mounts["/etc/nginx/nginx.conf"][0].endswith("/deploy/nginx.conf")
    directives = _nginx_directives()
    listens = [d for d in directives if d[0] == "listen"]
    passes = [d[1] for d in directives if d[0] == "proxy_pass"]
    assert ["listen", "443", "ssl"] in listens
    assert ["listen", "8443", "ssl"] in listens
    assert passes == ["http://web_us"] * 2 + ["http://web_eu"] * 2
    upstreams = {d[1]: d for d in directives if d[0] == "server" and len(d) > 1 and ":" in d[1]}
    assert {"web-us:8000", "web-eu:8000"} <= set(upstreams)
    assert ["ssl_certificate", "/etc/nginx/certs/tls.crt"] in directives
    assert ["ssl_certificate_key", "/etc/nginx/certs/tls.key"] in directives


@dataclass
class NginxBlock:
    """A directive of nginx.conf with the directives of its block, if it opens one."""

    words: list[str]
    children: list["NginxBlock"] = field(default_factory=list)

    def get(self, name: str) -> list[str]:
        """Return the arguments of the child directive ``name`` (asserted present once)."""
        found = [child.words[1:] for child in self.children if child.words[0] == name]
        assert len(found) == 1, (name, found)
        return found[0]

    def blocks(self, name: str) -> list["NginxBlock"]:
        return [child for child in self.children if child.words[0] == name]


def _nginx_tree() -> NginxBlock:
    """Return nginx.conf as a tree of directives."""
    root = NginxBlock(["main"])
    stack: list[NginxBlock] = [root]
    words: list[str] = []
    for token in _NGINX_TOKEN.findall(NGINX_CONF.read_text()):
        if token.startswith("#"):
            continue
        if token == ";":
            stack[-1].children.append(NginxBlock(words))
            words = []
        elif token == "{":
            block = NginxBlock(words)
            stack[-1].children.append(block)
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token)
    return root


def _seconds(value: list[str]) -> int:
    return int(value[0].rstrip("s"))


def test_the_proxy_reads_headers_and_small_bodies_itself_with_short_timeouts() -> None:
    # gunicorn has no read timeout: a client sending a byte at a time would hold a thread.
    http = _nginx_tree().blocks("http")[0]

    assert _seconds(http.get("client_header_timeout")) <= 15
    assert _seconds(http.get("client_body_timeout")) <= 60
    assert _seconds(http.get("send_timeout")) <= 60
    assert http.get("proxy_request_buffering") == ["on"]
    assert http.get("client_max_body_size") == ["16m"]
    assert http.get("proxy_http_version") == ["1.1"]
    assert _seconds(http.get("proxy_read_timeout")) >= 600
    headers = {tuple(d.words[1:]) for d in http.children if d.words[0] == "proxy_set_header"}
    assert ("X-Forwarded-Proto", "https") in headers
    assert ("Host", "$http_host") in headers


def test_blob_uploads_alone_stream_without_size_cap_or_buffering_a_few_per_client() -> None:
    http = _nginx_tree().blocks("http")[0]
    zones = [d.words for d in http.children if d.words[0] == "limit_conn_zone"]
    assert zones == [["limit_conn_zone", "$binary_remote_addr", "zone=uploads_per_client:10m"]]
    regions = [server for server in http.blocks("server") if "ssl" in server.get("listen")]

    assert len(regions) == 2
    for server in regions:
        locations = {tuple(block.words[1:]): block for block in server.blocks("location")}
        upload = locations[("~", "^/v2/.+/blobs/uploads/")]
        assert upload.get("proxy_request_buffering") == ["off"]
        assert upload.get("client_max_body_size") == ["0"]
        assert upload.get("limit_conn") == ["uploads_per_client", "8"]
        assert upload.get("proxy_pass") == locations[("/",)].get("proxy_pass")
    assert http.get("proxy_buffering") == ["off"]


# --- the image does what `make run` does ---------------------------------------------------------


def test_the_image_installs_with_the_same_script_and_flags_as_make_run() -> None:
    runs = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN"]
    installs = [shlex.split(r) for r in runs if "scripts/install-deps.sh" in r]
    makefile = (ROOT / "Makefile").read_text()
    make_run = re.search(r"^install-run:\n\t(.+)$", makefile, flags=re.MULTILINE)

    assert re.search(r"^run: install-run$", makefile, flags=re.MULTILINE)
    assert make_run is not None
    make_flags = {w for w in shlex.split(make_run.group(1)) if w.startswith("--")}
    assert len(installs) == 1
    image_flags = {w for w in installs[0] if w.startswith("--")}
    # The image installs its Debian packages in its own RUN step (below), hence --no-apt.
    assert image_flags - {"--no-apt"} == make_flags == {"--run-only"}
    assert not [r for r in runs if re.search(r"\bpip install\b", r)]


def test_the_image_has_the_debian_packages_of_make_run() -> None:
    text = INSTALL_DEPS.read_text()
    match = re.search(r"^RUN_PACKAGES=\(([^)]*)\)", text, flags=re.MULTILINE)
    runs = " ".join(args for keyword, args in _dockerfile_instructions() if keyword == "RUN")
    installed = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", runs)

    assert match is not None
    assert installed is not None
    # python3-venv is Debian's venv module; the python image's own Python has it built in.
    wanted = set(match.group(1).split()) - {"python3-venv"}
    assert wanted <= set(installed.group(1).split())


def test_the_image_collects_static_files_like_make_run() -> None:
    runs = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN"]

    assert "manage.py collectstatic --noinput" in RUN_SH.read_text()
    assert any("manage.py collectstatic --noinput" in r for r in runs)
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE


def test_the_image_runs_the_same_production_server_as_make_run() -> None:
    gunicorn = _run_sh_gunicorn()
    (cmd,) = [
        yaml.safe_load(args) for keyword, args in _dockerfile_instructions() if keyword == "CMD"
    ]

    assert cmd[0] == "gunicorn"
    assert cmd[1] == gunicorn[1] == "quay_geo.wsgi:application"
    for option in ("--worker-class", "--threads", "--timeout", "--logger-class"):
        assert _option(cmd, option) == _option(gunicorn, option), option
    assert _option(cmd, "--logger-class") == "quay_geo.gunicorn_logging.AccessLogger"


def test_the_image_runs_as_a_non_root_user_with_a_health_check() -> None:
    instructions = _dockerfile_instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    (healthcheck,) = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]

    assert instructions[:2] == [
        ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm"),
        ("FROM", "${BASE_IMAGE}"),
    ]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert "/health/instance" in healthcheck


def test_migrate_runs_the_start_up_steps_of_make_run_in_the_same_order(
    rendered: dict[str, Any],
) -> None:
    def steps(text: str) -> list[str]:
        # collectstatic is a build step of the image; addlocation runs once per region. Only
        # commands the script runs count, not the ones its banner suggests to the user.
        found = re.findall(r"(?:python\"?|exec) manage\.py (\w+)", text.split("cat <<EOF")[0])
        return list(dict.fromkeys(s for s in found if s != "collectstatic"))

    migrate = _command(rendered["services"]["migrate"])

    assert steps(migrate) == steps(RUN_SH.read_text())
    for location in REGIONS.values():
        assert re.search(rf"addlocation {location} --kind s3 --default --if-missing", migrate)


# --- region eu's read replica -------------------------------------------------------------------


def test_region_eu_reads_its_own_streaming_replica_of_the_primary(
    rendered: dict[str, Any],
) -> None:
    services, volumes = rendered["services"], set(rendered["volumes"])
    replica, primary = services["postgres-replica-eu"], services["postgres"]
    start = _command(replica)
    init_script = ROOT / "deploy" / "postgres" / "replication.sh"

    assert replica["image"] == primary["image"]
    assert re.search(r"pg_basebackup -h postgres -U replicator .*-R .*-S replica_eu", start, re.S)
    assert "hot_standby=on" in start
    assert _mounts(replica)["/var/lib/postgresql/data"][0] in volumes
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "wal_level=replica" in _command(primary)
    mounted = _mounts(primary)["/docker-entrypoint-initdb.d/50-replication.sh"]
    assert Path(mounted[0]).name == init_script.name
    script = init_script.read_text()
    assert "WITH REPLICATION LOGIN" in script
    assert "pg_create_physical_replication_slot('replica_eu')" in script
    assert "host replication replicator all scram-sha-256" in script
    for role in ("web", "worker"):
        eu, us = services[f"{role}-eu"], services[f"{role}-us"]
        assert re.fullmatch(
            r"postgres://[^@]+@postgres-replica-eu:5432/quaygeo",
            eu["environment"]["DATABASE_REPLICA_URL"],
        )
        assert eu["environment"]["QUAY_GEO_REGION_CACHE_URL"].startswith("redis://")
        assert "DATABASE_REPLICA_URL" not in us["environment"]  # us is the primary's region
