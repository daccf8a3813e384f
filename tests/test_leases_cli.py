"""``wsbus reserve / release / reservations`` and the git pre-commit hook, run as a
user runs them: processes against a live hub, a real git repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from wsbus.cli.leases import parse_duration

from .helpers import HubProcess
from .natskit import free_port
from .test_cli import wsbus


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("45", 45), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30x", "-5m", "0s", "25h"])
def test_bad_durations_say_the_rule(text: str) -> None:
    with pytest.raises(ValueError, match="90s, 30m, 2h"):
        parse_duration(text)


def test_reserve_conflict_release_and_list(hub: HubProcess, env: dict[str, str]) -> None:
    env = {**env, "WSBUS_URL": hub.url}
    r = wsbus(env, "reserve", "src/parser/**", "--ttl", "2h", "--reason", "lexer", "--as", "claude")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("reserved src/parser/** until ") and "exclusive" in r.stdout
    r = wsbus(env, "reserve", "src/parser/lexer.py", "--as", "codex")
    assert r.returncode == 4
    assert r.stderr.startswith("wsbus: the hub refused: src/parser/lexer.py overlaps ")
    assert "by claude; lexer) until " in r.stderr and r.stderr.count("\n") == 1
    r = wsbus(env, "reserve", "docs/**", "--shared", "--as", "codex", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["exclusive"] is False
    r = wsbus(env, "reservations")
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and "  claude  exclusive  src/parser/**  until " in lines[0]
    assert lines[0].endswith("  lexer  #default") and "  codex  shared  docs/**  " in lines[1]
    r = wsbus(env, "reservations", "docs", "--json")
    assert [json.loads(x)["holder"] for x in r.stdout.splitlines()] == ["codex"]
    r = wsbus(env, "release", "--as", "claude")
    assert r.returncode == 0 and r.stdout.startswith("released src/parser/** (lease ")
    r = wsbus(env, "release", "--as", "claude")
    assert r.returncode == 0 and r.stderr == "no lease of yours matched\n"
    r = wsbus(env, "reserve", "src/parser/lexer.py", "--as", "codex", "-q")
    assert (r.returncode, r.stdout) == (0, "")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["reserve", "a", "--ttl", "2 days"], "invalid duration '2 days'"),
        (["reserve", "/etc/passwd"], "is absolute: paths are relative to the repository root"),
        (["reserve", "../x"], "climbs out with '..'"),
    ],
)
def test_bad_reservations_are_one_line(
    hub: HubProcess, env: dict[str, str], args: list[str], says: str
) -> None:
    r = wsbus({**env, "WSBUS_URL": hub.url}, *args, "--as", "claude")
    assert r.returncode in (2, 4) and says in r.stderr and r.stderr.count("\n") == 1, r.stderr


# ---------------------------------------------------------------------------- the hook


def git(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def repo(tmp_path: Path, env: dict[str, str]) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "t@example.com"],
        ["config", "user.name", "t"],
    ):
        assert git(repo, *args, env=env).returncode == 0
    (repo / "src" / "parser").mkdir(parents=True)
    (repo / "src" / "parser" / "lexer.py").write_text("x = 1\n")
    (repo / "README.md").write_text("hi\n")
    assert git(repo, "add", ".", env=env).returncode == 0
    assert git(repo, "commit", "-qm", "init", env=env).returncode == 0
    r = subprocess.run(
        [*wsbus_argv(), "hook", "install"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.startswith("installed "), r.stderr
    return repo


def wsbus_argv() -> list[str]:
    return [sys.executable, "-m", "wsbus"]


def test_the_hook_refuses_then_allows_a_commit(
    hub: HubProcess, env: dict[str, str], repo: Path
) -> None:
    env = {**env, "WSBUS_URL": hub.url}
    r = wsbus(env, "reserve", "src/parser/**", "--reason", "refactoring", "--as", "claude")
    assert r.returncode == 0, r.stderr
    (repo / "src" / "parser" / "lexer.py").write_text("x = 2\n")
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", ".", env=env)

    as_codex = {**env, "WSBUS_NAME": "codex"}
    r = git(repo, "commit", "-qm", "touches the parser", env=as_codex)
    assert r.returncode != 0
    assert "wsbus: commit refused for codex: 1 staged file(s) leased by other agents" in r.stderr
    assert "  src/parser/lexer.py: #1  claude  exclusive  src/parser/**  until " in r.stderr
    assert "refactoring" in r.stderr and "WSBUS_LEASE_OVERRIDE=1" in r.stderr

    # the holder itself commits
    r = git(repo, "commit", "-qm", "mine", env={**env, "WSBUS_NAME": "claude"})
    assert r.returncode == 0, r.stderr

    (repo / "src" / "parser" / "lexer.py").write_text("x = 3\n")
    git(repo, "add", ".", env=env)
    r = git(repo, "commit", "-qm", "override", env={**as_codex, "WSBUS_LEASE_OVERRIDE": "1"})
    assert r.returncode == 0 and "lease check skipped" in r.stderr

    (repo / "src" / "parser" / "lexer.py").write_text("x = 4\n")
    git(repo, "add", ".", env=env)
    assert git(repo, "commit", "-qm", "no-verify", "--no-verify", env=as_codex).returncode == 0

    # a rename away from the leased directory touches it too
    git(repo, "mv", "src/parser/lexer.py", "lexer.py", env=env)
    assert git(repo, "commit", "-qm", "move", env=as_codex).returncode != 0

    assert wsbus(env, "release", "--as", "claude").returncode == 0
    r = git(repo, "commit", "-qm", "move", env=as_codex)
    assert r.returncode == 0, r.stderr


def test_the_hook_lets_a_commit_through_when_the_hub_is_down(
    env: dict[str, str], repo: Path
) -> None:
    env = {**env, "WSBUS_URL": f"ws://127.0.0.1:{free_port()}", "WSBUS_NAME": "codex"}
    (repo / "README.md").write_text("offline\n")
    git(repo, "add", ".", env=env)
    r = git(repo, "commit", "-qm", "offline", env=env)
    assert r.returncode == 0, r.stderr
    assert "cannot be reached" in r.stderr and "committing without the lease check" in r.stderr


def test_install_keeps_a_foreign_hook(env: dict[str, str], repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nmake lint\n")
    r = subprocess.run(
        [*wsbus_argv(), "hook", "install"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and "is not wsbus's" in r.stderr and "--force" in r.stderr
    assert hook.read_text() == "#!/bin/sh\nmake lint\n"
