"""``wsbus.config.load_settings``: flags > environment > config file > defaults, and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wsbus.config import ENVIRONMENT, ConfigError, Settings, load_settings

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_env_or_flags(tmp_path: Path) -> None:
    s = load_settings({}, NO_ENV, tmp_path / "missing.toml")
    assert s == Settings()
    assert (s.url, s.name, s.channel, s.timeout, s.port) == (
        "ws://127.0.0.1:8765",
        None,
        "default",
        10.0,
        8765,
    )


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'url = "ws://127.0.0.1:9000"\nname = "alice"\nretention_days = 7\n'
        "fsync = true\nport = 9001\ntimeout = 2.5\n",
    )
    s = load_settings(None, NO_ENV, path)
    assert (s.url, s.name, s.retention_days, s.fsync, s.port, s.timeout) == (
        "ws://127.0.0.1:9000",
        "alice",
        7.0,
        True,
        9001,
        2.5,
    )
    assert s.channel == "default"  # untouched keys keep their default


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'url = "ws://127.0.0.1:1001"\nchannel = "file-ch"\nname = "file-name"\nport = 1001\n'
        "timeout = 1.0\n",
    )
    env = {
        "WSBUS_URL": "ws://127.0.0.1:2002",
        "WSBUS_CHANNEL": "env-ch",
        "WSBUS_PORT": "2002",
    }
    flags: dict[str, Any] = {"url": "ws://127.0.0.1:3003", "port": None, "timeout": None}
    s = load_settings(flags, env, path)
    assert s.url == "ws://127.0.0.1:3003"  # flag beats env and file
    assert s.port == 2002  # flag is None: env wins over file
    assert s.channel == "env-ch"  # env beats file
    assert s.name == "file-name"  # only the file sets it
    assert s.timeout == 1.0  # None flag, no env: file
    assert s.max_body == Settings().max_body  # nobody sets it: default


def test_flags_over_defaults_without_file(tmp_path: Path) -> None:
    s = load_settings({"name": "zed", "channel": None, "memory": True}, NO_ENV, tmp_path / "x")
    assert (s.name, s.channel, s.memory) == ("zed", "default", True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AGENT_NAME": "c"}, "c"),
        ({"AGENT_COMMS_SELF": "b", "AGENT_NAME": "c"}, "b"),
        ({"WSBUS_NAME": "a", "AGENT_COMMS_SELF": "b", "AGENT_NAME": "c"}, "a"),
        ({"WSBUS_NAME": "a", "AGENT_NAME": "c"}, "a"),
        ({"WSBUS_NAME": "a", "AGENT_COMMS_SELF": "b"}, "a"),
    ],
)
def test_name_variables_in_order(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    path = write(tmp_path, 'name = "from-file"\n')
    assert load_settings({}, env, path).name == expected
    # and the flag beats all of them
    assert load_settings({"name": "flag"}, env, path).name == "flag"


def test_channel_falls_back_to_agent_bus_channel(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert load_settings({}, {"AGENT_BUS_CHANNEL": "legacy"}, missing).channel == "legacy"
    both = {"AGENT_BUS_CHANNEL": "legacy", "WSBUS_CHANNEL": "new"}
    assert load_settings({}, both, missing).channel == "new"
    path = write(tmp_path, 'channel = "file"\n')
    assert load_settings({}, {"AGENT_BUS_CHANNEL": "legacy"}, path).channel == "legacy"


@pytest.mark.parametrize(
    ("var", "value", "field", "expected"),
    [
        ("WSBUS_TIMEOUT", "2.5", "timeout", 2.5),
        ("WSBUS_PORT", "9100", "port", 9100),
        ("WSBUS_RETENTION_DAYS", "3", "retention_days", 3.0),
        ("WSBUS_RETENTION_COUNT", "500", "retention_count", 500),
        ("WSBUS_FSYNC", "yes", "fsync", True),
        ("WSBUS_FSYNC", "0", "fsync", False),
        ("WSBUS_DB", "/tmp/x.db", "db", "/tmp/x.db"),
        ("WSBUS_HOST", "::1", "host", "::1"),
    ],
)
def test_env_values_are_converted(
    tmp_path: Path, var: str, value: str, field: str, expected: object
) -> None:
    s = load_settings({}, {var: value}, tmp_path / "missing.toml")
    got = getattr(s, field)
    assert got == expected and type(got) is type(expected)


def test_every_environment_variable_maps_to_a_setting() -> None:
    fields = set(Settings.__struct_fields__)
    assert set(ENVIRONMENT) <= fields


def test_file_named_by_wsbus_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'name = "from-config-env"\n')
    monkeypatch.setenv("WSBUS_CONFIG", str(path))
    assert load_settings({}).name == "from-config-env"  # the process environment


def test_wsbus_config_is_read_from_the_env_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'name = "from-env-arg"\n')
    monkeypatch.setenv("WSBUS_CONFIG", str(tmp_path / "process-env-missing.toml"))
    assert load_settings({}, {"WSBUS_CONFIG": str(path)}).name == "from-env-arg"


# ------------------------------------------------------------------ errors


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'url = "ws://unterminated\nname = \n')
    with pytest.raises(ConfigError) as info:
        load_settings({}, NO_ENV, path)
    assert str(path) in str(info.value)


def test_non_utf8_config_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "jos\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_settings({}, NO_ENV, path)
    assert str(path) in str(info.value)


def test_unreadable_config_path_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a-directory.toml"
    path.mkdir()
    with pytest.raises(ConfigError) as info:
        load_settings({}, NO_ENV, path)
    assert str(path) in str(info.value)


def test_unknown_key_names_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'url = "ws://127.0.0.1:1"\nretention_dayz = 3\n')
    with pytest.raises(ConfigError) as info:
        load_settings({}, NO_ENV, path)
    assert str(path) in str(info.value)
    assert "retention_dayz" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('port = "8765"\n', "port"),
        ("url = 5\n", "url"),
        ('fsync = "yes"\n', "fsync"),
        ('timeout = "soon"\n', "timeout"),
        ("name = [1, 2]\n", "name"),
        ("retention_count = 1.5\n", "retention_count"),
    ],
)
def test_wrong_type_in_file_names_the_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings({}, NO_ENV, path)
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_file_error_is_reported_even_when_env_sets_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = "nope"\n')
    with pytest.raises(ConfigError) as info:
        load_settings({"port": 1}, {"WSBUS_PORT": "2"}, path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("WSBUS_PORT", "eighty"),
        ("WSBUS_PORT", "80.5"),
        ("WSBUS_TIMEOUT", "soon"),
        ("WSBUS_FSYNC", "maybe"),
        ("WSBUS_RETENTION_COUNT", "1e3"),
        ("WSBUS_MAX_BODY", "64k"),
        ("WSBUS_HELLO_TIMEOUT", "ten"),
    ],
)
def test_bad_env_value_names_the_variable(tmp_path: Path, var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, {var: value}, tmp_path / "missing.toml")
    assert var in str(info.value)
    assert value in str(info.value)


def test_config_error_is_a_wsbus_error() -> None:
    from wsbus.errors import WsbusError

    assert issubclass(ConfigError, WsbusError)


@pytest.mark.parametrize(
    ("xdg", "home"),
    [
        (None, "/home/alice"),
        ("/xdg/config", "/home/alice"),
        ("relative/config", "/home/alice"),
        ("", "/home/alice/"),
        (None, "/"),
        (None, "relative-home"),
        (None, None),
    ],
)
def test_the_config_directory_is_platformdirs_own(
    monkeypatch: pytest.MonkeyPatch, xdg: str | None, home: str | None
) -> None:
    """config.py finds the config file without importing platformdirs (start-up
    cost); wherever it does so, it must agree with platformdirs."""
    import platformdirs

    from wsbus import config

    for var, value in (("XDG_CONFIG_HOME", xdg), ("HOME", home)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert config._user_config_dir() == platformdirs.user_config_dir("wsbus")
