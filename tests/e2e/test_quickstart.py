"""The quick start, the way a user runs it: `make run`, push, replicate, pull, sign in, Ctrl-C.

It runs in a throw-away copy of the working tree (tracked and untracked files, as `git ls-files
-co --exclude-standard` lists them: uncommitted work included, ``.venv``, ``var/`` and ``.git``
left out), so nothing it does touches this checkout's ``var/``.

The copy reuses this checkout's virtualenv through a ``.venv`` symlink: creating one costs
minutes. `make run` still runs its install step (`install-deps.sh --run-only`), which must then
be a no-op, and the test checks that it was. The files are copied with their times, so the
copied pyproject.toml is no newer than the virtualenv's install stamp; were it newer, the step
would `pip install -e` the copy into the shared virtualenv, so the test refuses to start.

Everything binds 127.0.0.1 on ports free at the start; every wait is bounded. Ctrl-C is what a
terminal sends: SIGINT to the whole foreground process group.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
USERNAME = "quickstart"
PASSWORD = "quick-start-password-1"
START_TIMEOUT = 240.0
REPLICATION_TIMEOUT = 120.0
STOP_TIMEOUT = 90.0

pytestmark = pytest.mark.timeout(900)


@dataclass
class Quickstart:
    """A `make run` started in a copy of the tree."""

    workdir: Path
    process: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int]
    env: dict[str, str]

    def url(self, region: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[region]}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports of 127.0.0.1 that are free right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _copy_tree(workdir: Path) -> None:
    """Copy what `git ls-files -co --exclude-standard` lists, minus .venv and var/, with times."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if name.split("/", 1)[0] in (".venv", "var", ".git"):
            continue
        source = ROOT / name
        if not source.is_file():  # tracked, but deleted in the working tree
            continue
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    (workdir / ".venv").symlink_to(VENV.resolve(), target_is_directory=True)


def _install_is_a_no_op() -> None:
    """Refuse to start when make run's install step would reinstall the shared virtualenv."""
    pyproject = (ROOT / "pyproject.toml").stat().st_mtime
    stamps = [VENV / ".installed-stamp-run", VENV / ".installed-stamp"]
    current = [s for s in stamps if s.exists() and s.stat().st_mtime >= pyproject]
    assert current, (
        f"{VENV} has no install stamp newer than pyproject.toml: run `make install` first "
        "(otherwise `make run` in the copy would reinstall this virtualenv from the copy)"
    )


def _user_environment(ports: dict[str, int]) -> dict[str, str]:
    """Return a user's environment: none of the test run's Django, database or broker settings."""
    env = {
        name: os.environ[name]
        for name in ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME")
        if name in os.environ
    }
    env.update(
        {
            "DJANGO_SUPERUSER_USERNAME": USERNAME,
            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
            "QUAY_GEO_US_PORT": str(ports["us"]),
            "QUAY_GEO_EU_PORT": str(ports["eu"]),
            "QUAY_GEO_S3_US_PORT": str(ports["s3-us"]),
            "QUAY_GEO_S3_EU_PORT": str(ports["s3-eu"]),
        }
    )
    return env


def _processes_in(workdir: Path) -> dict[int, str]:
    """Return the processes whose command line or working directory is inside ``workdir``."""
    found = {}
    marker = str(workdir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        inside = f"{marker}/" in cmdline or cwd == marker or cwd.startswith(f"{marker}/")
        if state != "Z" and inside:
            found[int(entry.name)] = cmdline.strip()
    return found


def _wait(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return True


def _kill_leftovers(workdir: Path) -> None:
    """Stop, by process id, whatever the test started and is still running."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_in(workdir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while _processes_in(workdir) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quickstart]:
    """Start `make run` in a fresh copy of the tree and wait for both regions."""
    _install_is_a_no_op()
    workdir = tmp_path_factory.mktemp("quickstart")
    _copy_tree(workdir)
    ports = dict(zip(("us", "eu", "s3-us", "s3-eu"), _free_ports(4), strict=True))
    log = workdir.parent / f"{workdir.name}-make-run.log"
    env = _user_environment(ports)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            ["make", "run"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
    started = Quickstart(workdir=workdir, process=process, log=log, ports=ports, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        for region in ("us", "eu"):
            while not _answers(started.url(region, "/v2/")):
                assert process.poll() is None, f"make run exited:\n{started.output()[-4000:]}"
                assert time.monotonic() < deadline, f"no region {region}:\n{started.output()}"
                time.sleep(0.5)
        yield started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT)
        _kill_leftovers(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _run(
    args: list[str], quickstart: Quickstart, timeout: float = 180, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a user's command in the copy, with the user's environment; assert it succeeded."""
    result = subprocess.run(
        args,
        cwd=quickstart.workdir,
        env={**quickstart.env, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def _placements(metrics: str, location: str) -> dict[str, float]:
    pattern = rf'^quay_geo_placements{{location="{location}",state="(\w+)"}} (\S+)$'
    return {state: float(v) for state, v in re.findall(pattern, metrics, flags=re.MULTILINE)}


def _replicated(quickstart: Quickstart, blobs: int) -> bool:
    metrics = requests.get(quickstart.url("eu", "/metrics"), timeout=10).text
    return all(
        _placements(metrics, location).get("present") == blobs
        and not any(_placements(metrics, location).get(s) for s in ("pending", "copying"))
        for location in ("us_s3", "eu_s3")
    )


def _pull_token(quickstart: Quickstart, region: str, repository: str) -> str:
    """Return a pull token of ``region``, fetched the way registry clients do."""
    challenge = requests.get(quickstart.url(region, "/v2/"), timeout=10)
    realm = re.search(r'realm="([^"]+)"', challenge.headers["WWW-Authenticate"])
    service = re.search(r'service="([^"]+)"', challenge.headers["WWW-Authenticate"])
    assert challenge.status_code == 401
    assert realm is not None
    assert service is not None
    answer = requests.get(
        realm.group(1),
        params={"service": service.group(1), "scope": f"repository:{repository}:pull"},
        auth=(USERNAME, PASSWORD),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def test_quick_start_push_replicate_pull_sign_in_and_stop(quickstart: Quickstart) -> None:
    workdir, python = quickstart.workdir, str(quickstart.workdir / ".venv" / "bin" / "python")
    repository, creds = f"{USERNAME}/demo", f"{USERNAME}:{PASSWORD}"

    # `make run`'s install step found everything in place.
    assert re.search(r"virtualenv .* is up to date", quickstart.output())
    assert "pip install" not in quickstart.output()

    # Given a small image, pushed to region us with skopeo
    built = _run([python, "scripts/demo_image.py", "var/demo-image", "--layers", "2"], quickstart)
    digest = built.stdout.split()[-1]
    layout = json.loads((workdir / "var/demo-image/index.json").read_text())
    manifest = json.loads((workdir / "var/demo-image/blobs/sha256" / digest[7:]).read_text())
    blobs = len(manifest["layers"]) + 1
    assert layout["manifests"][0]["digest"] == digest
    _run(
        [
            "skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds,
            "oci:var/demo-image:v1", f"docker://127.0.0.1:{quickstart.ports['us']}/{repository}:v1",
        ],
        quickstart,
    )  # fmt: skip

    # Then every blob is replicated to eu_s3
    _wait(lambda: _replicated(quickstart, blobs), REPLICATION_TIMEOUT, "replication to eu_s3")
    # (a manage.py command beside make run needs the secret key make run generated)
    secret_key = (workdir / "var/run/secret-key").read_text().strip()
    status = _run(
        [python, "manage.py", "replicationstatus", "--json"],
        quickstart,
        DJANGO_SECRET_KEY=secret_key,
    )
    rows = {row["location_id"]: row for row in json.loads(status.stdout)}
    assert rows["eu_s3"]["present"] == blobs
    assert rows["eu_s3"]["coverage"] == 1.0

    # And region eu serves a layer from its own store, and the pulled image is the pushed one
    token = _pull_token(quickstart, "eu", repository)
    layer = requests.get(
        quickstart.url("eu", f"/v2/{repository}/blobs/{manifest['layers'][0]['digest']}"),
        headers={"Authorization": f"Bearer {token}"},
        allow_redirects=False,
        timeout=30,
    )
    assert layer.status_code == 307, layer.text
    assert layer.headers["Location"].startswith(f"http://127.0.0.1:{quickstart.ports['s3-eu']}/")
    _run(
        [
            "skopeo", "copy", "--src-tls-verify=false", "--src-creds", creds,
            f"docker://127.0.0.1:{quickstart.ports['eu']}/{repository}:v1", "oci:var/pulled:v1",
        ],
        quickstart,
    )  # fmt: skip
    pulled = json.loads((workdir / "var/pulled/index.json").read_text())
    assert [m["digest"] for m in pulled["manifests"]] == [digest]

    # And the superuser signs in to the panel
    session = requests.Session()
    login = session.get(quickstart.url("us", "/superuser/login/"), timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
    assert login.status_code == 200
    assert csrf is not None, login.text
    signed_in = session.post(
        quickstart.url("us", "/superuser/login/"),
        data={"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": csrf.group(1)},
        timeout=30,
    )
    panel = session.get(quickstart.url("us", "/superuser/"), allow_redirects=False, timeout=30)
    assert signed_in.status_code == 200, signed_in.text
    assert panel.status_code == 200, panel.headers
    assert "us_s3" in panel.text
    assert "eu_s3" in panel.text

    # When the user presses Ctrl-C
    os.killpg(quickstart.process.pid, signal.SIGINT)
    quickstart.process.wait(timeout=STOP_TIMEOUT)

    # Then every process it started is gone, its ports are free, and the S3 data was saved
    _wait(
        lambda: not _processes_in(workdir),
        30,
        f"processes left: {_processes_in(workdir)}",
    )
    assert not [port for port in quickstart.ports.values() if _port_open(port)]
    output = quickstart.output()
    assert "[run] stopped" in output
    assert "could not save" not in output
    for port in (quickstart.ports["s3-us"], quickstart.ports["s3-eu"]):
        saved = re.search(rf"save: (\d+) objects \(http://127.0.0.1:{port} ", output)
        assert saved is not None, output[-3000:]
        assert int(saved.group(1)) >= blobs


def _pid_of(quickstart: Quickstart, name: str) -> int | None:
    """Return the pid a process's pid file names, None without a pid file."""
    try:
        return int((quickstart.workdir / "var/run/pids" / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _regions_answer(quickstart: Quickstart) -> bool:
    return all(_answers(quickstart.url(region, "/v2/")) for region in ("us", "eu"))


def test_make_run_restarts_a_dead_store_ends_what_a_killed_launcher_left_and_stops(
    quickstart: Quickstart,
) -> None:
    workdir = quickstart.workdir
    names = ("s3-us", "s3-eu", "web-us", "web-eu", "worker", "beat", "launcher")
    pids = {name: _pid_of(quickstart, name) for name in names}
    assert all(pids.values()), pids

    # When region eu's store dies
    store = pids["s3-eu"]
    assert store is not None
    os.kill(store, signal.SIGKILL)

    # Then the launcher says so, both regions keep answering, and the store comes back
    _wait(lambda: "s3-eu exited" in quickstart.output(), 30, "the death of s3-eu reported")
    assert _regions_answer(quickstart)
    _wait(
        lambda: (
            _pid_of(quickstart, "s3-eu") not in (None, store)
            and _port_open(quickstart.ports["s3-eu"])
        ),
        60,
        "s3-eu restarted",
    )
    assert quickstart.process.poll() is None
    assert _regions_answer(quickstart)

    # When the user stops region eu's store as the launcher says, it stays stopped until started
    _run(["scripts/run.sh", "stop", "s3-eu"], quickstart)
    # The port closes as the store dies; its pid file goes a moment later (busy machines).
    _wait(
        lambda: not _port_open(quickstart.ports["s3-eu"]) and _pid_of(quickstart, "s3-eu") is None,
        30,
        "s3-eu stopped and its pid file gone",
    )
    assert _regions_answer(quickstart)
    _run(["scripts/run.sh", "start", "s3-eu"], quickstart)
    _wait(lambda: _port_open(quickstart.ports["s3-eu"]), 60, "s3-eu started again")
    pids["launcher"] = _pid_of(quickstart, "launcher")

    # When the launcher itself is killed (kill -9), its processes stay behind
    launcher = pids["launcher"]
    assert launcher is not None
    os.kill(launcher, signal.SIGKILL)
    os.kill(quickstart.process.pid, signal.SIGKILL)
    quickstart.process.wait(timeout=30)
    assert _port_open(quickstart.ports["us"])

    # Then the next make run ends them and starts
    log = workdir.parent / f"{workdir.name}-make-run-2.log"
    with log.open("wb") as handle:
        again = subprocess.Popen(
            ["make", "run"],
            cwd=workdir,
            env=quickstart.env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    quickstart.process = again  # the fixture stops this one if the test fails
    quickstart.log = log
    _wait(
        lambda: _regions_answer(quickstart) and "is running" in quickstart.output(), 240, "restart"
    )
    output = quickstart.output()
    assert "left by a killed make run" in output
    assert "already in use" not in output

    # When it receives SIGTERM, then within 15 s no process of it is left
    os.killpg(again.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _processes_in(workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_in(workdir) == {}
    assert "[run] stopped" in quickstart.output()
