"""Shared fixtures: real hub processes on loopback ports, isolated home directories."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import HubProcess
from .tmuxkit import Machine


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with its own HOME/XDG dirs and no inherited wsbus settings."""
    home = tmp_path / "home"
    home.mkdir()
    e = {k: v for k, v in os.environ.items() if not k.startswith(("WSBUS_", "AGENT_", "XDG_"))}
    e.update(HOME=str(home), WSBUS_CONFIG=str(home / "no-config.toml"), PYTHONUNBUFFERED="1")
    return e


@pytest.fixture
def hub_factory(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., HubProcess]]:
    hubs: list[HubProcess] = []

    def make(*args: str, start: bool = True) -> HubProcess:
        h = HubProcess(tmp_path, env, list(args))
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
