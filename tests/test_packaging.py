"""The built wheel, as a user gets it: `pipx install` puts `wsbus` and `agent_comms` on
PATH, and the installed hub serves `/ui/` and `/healthz` (docs/OPERATIONS.md).

The wheel is built from this checkout (its tracked and untracked-but-not-ignored files,
copied to a temporary directory, so a stale `build/` never leaks into it). pipx installs
it into a temporary PIPX_HOME/PIPX_BIN_DIR, never the user's. Its dependencies come from
a local wheelhouse, offline: each distribution the wheel needs is repacked as a wheel
from the copy installed in the test's own environment (the same versions the suite
runs), and pip installs from there with `--no-index --find-links`. So the install takes
seconds and needs no network; only the build fetches setuptools (PEP 517 build
isolation, from the pip cache or PyPI).
"""

from __future__ import annotations

import base64
import csv
import email.parser
import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .helpers import HTTP_RE, LISTEN_RE

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(240)


def _run(
    cmd: list[str | Path], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, the assertion shows its output."""
    cp = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
        cwd=cwd,
    )
    assert cp.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    )
    return cp


def _source_tree(dest: Path) -> Path:
    """A copy of the checkout as `pip wheel .` would see it, minus what git ignores
    (`.venv/`, `build/`, `*.egg-info/`): a clean build that still sees files not yet
    committed."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(
            ROOT,
            dest,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
            ),
        )
        return dest
    for raw in listed:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():  # deleted in the work tree, not yet in the index
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


# ---------------------------------------------------------------------- wheelhouse


def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def _repack(dist: importlib.metadata.Distribution, out: Path) -> Path:
    """A wheel of an installed distribution: the files its RECORD lists inside
    site-packages (no bytecode, no scripts: pip makes those from entry_points.txt),
    with a fresh RECORD. Its tag is the one it was installed from."""
    site = Path(str(dist.locate_file(""))).resolve()
    info = next(
        (Path(str(f)).parts[0] for f in dist.files or [] if str(f).endswith(".dist-info/METADATA")),
        None,
    )
    assert info is not None, f"{dist.metadata['Name']}: no .dist-info in its RECORD"
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = re.findall(r"^Tag: (\S+)$", wheel_meta, re.MULTILINE)
    assert tags, f"{dist.metadata['Name']}: no Tag in its WHEEL file"
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    path = out / f"{name}-{dist.version}-{tags[0]}.whl"
    skip = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    record: list[list[str]] = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for f in dist.files or []:
            rel = Path(str(f))
            full = Path(str(dist.locate_file(f))).resolve()
            if (
                rel.as_posix() in skip
                or "__pycache__" in rel.parts
                or rel.suffix == ".pyc"
                or not full.is_relative_to(site)
                or not full.is_file()
            ):
                continue
            arcname = full.relative_to(site).as_posix()
            data = full.read_bytes()
            zf.writestr(arcname, data)
            record.append(_record_line(arcname, data))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([*record, [f"{info}/RECORD", "", ""]])
        zf.writestr(f"{info}/RECORD", buf.getvalue())
    return path


def _requirements(metadata: str, extras: set[str]) -> list[Requirement]:
    """The requirements in a METADATA text that apply here with these extras."""
    msg = email.parser.Parser().parsestr(metadata)
    wanted = []
    for line in msg.get_all("Requires-Dist") or []:
        req = Requirement(line)
        envs = [{"extra": e} for e in extras or {""}]
        if req.marker is None or any(req.marker.evaluate(env) for env in envs):
            wanted.append(req)
    return wanted


def _wheelhouse(wheel: Path, out: Path) -> list[str]:
    """Repack every distribution the wheel needs (its dependencies' closure, as this
    environment has them installed) into ``out``; returns their names."""
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        todo = _requirements(zf.read(meta).decode(), set())
    done: dict[str, set[str]] = {}
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        extras = set(req.extras)
        if key in done and extras <= done[key]:
            continue
        dist = importlib.metadata.distribution(req.name)
        assert req.specifier.contains(dist.version, prereleases=True), (
            f"{req} is needed, {dist.version} is installed: reinstall the test environment"
        )
        if key not in done:
            _repack(dist, out)
        done[key] = done.get(key, set()) | extras
        todo += _requirements(dist.read_text("METADATA") or "", done[key])
    return sorted(done)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("build")
    src = _source_tree(tmp / "src")
    out = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src], cwd=tmp)
    (built,) = out.glob("wsbus-*.whl")
    return built


def _clean_env(home: Path) -> dict[str, str]:
    """The environment of a user with an empty home: no wsbus, agent, XDG, pip or
    pipx settings of the test runner's, no virtual environment."""
    drop = ("WSBUS_", "AGENT_", "XDG_", "PIP_", "PIPX_", "PYTHON", "VIRTUAL_ENV", "UV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(HOME=str(home), WSBUS_CONFIG=str(home / "no-config.toml"), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def pipx_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`pipx install` of the wheel into a temporary PIPX_HOME; its PIPX_BIN_DIR."""
    tmp = tmp_path_factory.mktemp("pipx")
    house = tmp / "wheelhouse"
    names = _wheelhouse(wheel, house)
    assert "websockets" in names and "aiohttp" in names, names
    home = tmp / "home"
    home.mkdir()
    pipx_home, bin_dir = tmp / "pipx-home", tmp / "bin"
    env = _clean_env(home)
    env.update(
        PIPX_HOME=str(pipx_home),
        PIPX_BIN_DIR=str(bin_dir),
        PIPX_MAN_DIR=str(tmp / "man"),
        # the shared pip comes from the interpreter's ensurepip, not from PyPI
        PIPX_DISABLE_SHARED_LIBS_AUTO_UPGRADE="1",
        PIPX_DEFAULT_BACKEND="pip",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        USE_EMOJI="0",
    )
    started = time.monotonic()
    _run(
        [
            sys.executable, "-m", "pipx", "install",
            "--pip-args", f"--no-index --find-links {house}",
            wheel,
        ],
        env=env,
        cwd=tmp,
    )  # fmt: skip
    print(f"pipx install: {time.monotonic() - started:.1f}s, {len(names)} dependencies")
    yield bin_dir
    shutil.rmtree(pipx_home, ignore_errors=True)


# ---------------------------------------------------------------------- tests


def test_wheel_contents(wheel: Path) -> None:
    """The wheel holds the package, its typing marker and the dashboard's files; no
    tests, benchmarks or docs."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "wsbus/py.typed" in names
    assert "wsbus/ui/index.html" in names
    assert "wsbus/cli/main.py" in names and "wsbus/compat/http.py" in names
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    stray = [n for n in names if n.split("/")[0] not in ("wsbus", info)]
    assert not stray, f"the wheel carries files outside the package: {stray}"
    assert not [n for n in names if "/tests/" in n or n.startswith("tests/")]
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "wsbus = wsbus.cli.main:main" in entry_points
    assert "agent_comms = wsbus.cli.comms.main:main" in entry_points


def test_pipx_puts_commands_on_path(pipx_bin: Path, tmp_path: Path) -> None:
    """`wsbus` and `agent_comms` run from PIPX_BIN_DIR, off the installed wheel (not
    this checkout)."""
    from wsbus.version import __version__

    env = _clean_env(tmp_path)
    env["PATH"] = f"{pipx_bin}{os.pathsep}{env.get('PATH', os.defpath)}"
    found = {c: shutil.which(c, path=str(pipx_bin)) for c in ("wsbus", "agent_comms")}
    assert all(found.values()), f"{found}: {os.listdir(pipx_bin)}"
    version = _run(["wsbus", "--version"], env=env, cwd=tmp_path).stdout
    assert version.strip() == f"wsbus {__version__}"
    assert "serve" in _run(["wsbus", "--help"], env=env, cwd=tmp_path).stdout
    assert "send" in _run(["agent_comms", "--help"], env=env, cwd=tmp_path).stdout
    comms = _run(["agent_comms", "--version"], env=env, cwd=tmp_path).stdout
    assert comms.strip() == f"agent_comms (wsbus {__version__})"
    # the script is pipx's venv's, and that venv imports wsbus from itself
    script = Path(str(found["wsbus"])).resolve()
    assert script.is_relative_to(pipx_bin.parent / "pipx-home"), script
    shebang = script.read_text().splitlines()[0]
    python = shebang.removeprefix("#!").split()[0]  # `#!/…/bin/python -E`
    imported = _run(
        [python, "-c", "import wsbus, wsbus.cli.main; print(wsbus.__file__)"],
        env=env,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(imported).is_relative_to(pipx_bin.parent / "pipx-home"), imported


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def test_installed_hub_serves_ui(pipx_bin: Path, tmp_path: Path) -> None:
    """The installed `wsbus serve` (free loopback ports, data in a temporary home)
    answers `/healthz`, serves the dashboard at `/ui/` and `/metrics`; SIGTERM stops it
    cleanly."""
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home)
    proc = subprocess.Popen(
        [
            str(pipx_bin / "wsbus"), "serve",
            "--port", "0", "--http-port", "0", "--db", str(tmp_path / "hub.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    output: list[str] = []
    try:
        assert proc.stdout is not None
        http_url = ws_url = ""
        deadline = time.monotonic() + 30
        while not ws_url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if m := HTTP_RE.search(line):
                http_url = m.group(1)
            if m := LISTEN_RE.search(line):
                ws_url = m.group(1)
        assert ws_url and http_url, f"the installed hub did not start:\n{''.join(output)}"
        assert (tmp_path / "hub.db").exists()

        status, _, body = _get(f"{http_url}/healthz")
        assert status == 200 and '"ok":true' in body.replace(" ", ""), body

        status, kind, page = _get(f"{http_url}/ui/")
        assert status == 200
        assert kind.startswith("text/html"), kind
        assert "<html" in page.lower()
        assert page == (ROOT / "wsbus" / "ui" / "index.html").read_text(encoding="utf-8")

        # prometheus_client came with the wheel's dependencies
        status, kind, text = _get(f"{http_url}/metrics")
        assert status == 200 and kind.startswith("text/plain"), kind
        assert "wsbus_info{" in text and "process_open_fds" in text
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        output.append(rest or "")
    assert proc.returncode == 0, "".join(output)
    assert "wsbus hub stopped" in "".join(output)
