"""The client settings ``wsbus join`` and ``wsbus serve --share`` write into the user's
config file (``wsbus.config.config_path()``), keeping whatever else it holds."""

from __future__ import annotations

import tomllib
from pathlib import Path

from wsbus.files import write_atomic

from .exits import CliError

__all__ = ["configured", "save_config"]


def configured(path: Path, key: str) -> str | None:
    """The string ``key`` of the config file at ``path`` (None: absent, or no file)."""
    try:
        with path.open("rb") as fh:
            value = tomllib.load(fh).get(key)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise CliError(f"cannot read the config file {path}: {err}") from None
    return value if isinstance(value, str) else None


def save_config(path: Path, values: dict[str, str]) -> None:
    """Set ``values`` in the TOML config at ``path``, keeping everything else in it
    (comments included); the file ends up 0600: it holds a token."""
    import tomlkit  # only join writes the config

    try:
        doc = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as err:
        raise CliError(f"cannot update the config file {path}: {err}") from None
    for key, value in values.items():
        doc[key] = value
    try:
        write_atomic(path, tomlkit.dumps(doc).encode())
    except OSError as err:
        raise CliError(f"cannot write the config file {path}: {err.strerror or err}") from None
