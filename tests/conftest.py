"""Shared fixtures: real hub processes on loopback ports, isolated home directories."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import ENGINE, HubProcess
from .natskit import NatsServer
from .tmuxkit import Machine

_buses = itertools.count(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENGINE != "nats":
        return
    again = pytest.mark.skip(reason="runs its own servers whatever the engine: ran in `make test`")
    budget = pytest.mark.skip(
        reason="a loop-stall budget set on the SQLite engine; on NATS old-cursor polls stall "
        "the loop up to ~100 ms (open: docs/DEPLOY.md, known gaps)"
    )
    for item in items:
        if "own_nats" in item.keywords:
            item.add_marker(again)
        elif "sqlite_budget" in item.keywords:
            item.add_marker(budget)


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream of the test's own, on a loopback port."""
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server with JetStream for the session's hubs (WSBUS_TEST_ENGINE=nats)."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with its own HOME/XDG dirs and no inherited wsbus settings."""
    home = tmp_path / "home"
    home.mkdir()
    e = {k: v for k, v in os.environ.items() if not k.startswith(("WSBUS_", "AGENT_", "XDG_"))}
    e.update(HOME=str(home), WSBUS_CONFIG=str(home / "no-config.toml"), PYTHONUNBUFFERED="1")
    return e


@pytest.fixture
def hub_factory(
    tmp_path: Path, env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[Callable[..., HubProcess]]:
    hubs: list[HubProcess] = []

    def make(*args: str, start: bool = True) -> HubProcess:
        extra: list[str] = []
        if ENGINE == "nats" and "--memory" not in args and "--engine" not in args:
            server: NatsServer = request.getfixturevalue("nats_engine")
            extra = ["--engine", server.url, "--bus", f"t{os.getpid()}-{next(_buses)}"]
        h = HubProcess(tmp_path, env, [*args, *extra])
        hubs.append(h)
        return h.start() if start else h

    yield make
    for h in hubs:
        h.kill()


@pytest.fixture
def hub(hub_factory: Callable[..., HubProcess]) -> HubProcess:
    """A hub process on SQLite in a temporary directory."""
    return hub_factory()


@pytest.fixture
def machines(
    tmp_path: Path, env: dict[str, str], hub: HubProcess
) -> Iterator[Callable[[str], Machine]]:
    """Simulated machines (own tmux server, files, host name; maybe a bridge) on ``hub``."""
    made: list[Machine] = []

    def make(host: str) -> Machine:
        m = Machine(tmp_path, host, env, hub.url)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()
