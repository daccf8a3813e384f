"""docs/PROTOCOL.md is generated from the schema and must match it."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import msgspec
import msgspec.inspect as mi

from docs import protodoc
from wsbus.config import ENVIRONMENT, Settings
from wsbus.errors import CLOSE_MEANINGS, ERROR_MEANINGS, CloseCode, ErrorCode
from wsbus.hub import HubConfig
from wsbus.schema import ACK_STATUSES, ClientFrame, HubFrame

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
FRAMES = typing.get_args(ClientFrame) + typing.get_args(HubFrame)


def _tag(cls: type) -> str:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return str(info.tag)


def test_protocol_md_is_up_to_date() -> None:
    assert PROTOCOL.read_text(encoding="utf-8") == protodoc.render(), (
        "docs/PROTOCOL.md is out of date: run `make docs`"
    )


def test_module_entry_point_prints_the_document() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "docs.protodoc"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        encoding="utf-8",
    ).stdout
    assert out == protodoc.render()


def test_every_frame_has_a_section_and_an_example() -> None:
    text = protodoc.render()
    for cls in FRAMES:
        assert f"### `{_tag(cls)}`" in text, cls.__name__
        assert f"struct `wsbus.schema.{cls.__name__}`" in text, cls.__name__
        assert cls in protodoc.EXAMPLES, f"add an example of {cls.__name__} to protodoc.EXAMPLES"
    assert set(protodoc.client_frames()) == set(typing.get_args(ClientFrame))
    assert set(protodoc.hub_frames()) == set(typing.get_args(HubFrame))


def test_every_wire_field_is_documented() -> None:
    text = protodoc.render()
    for cls in FRAMES:
        table = protodoc.field_table(cls)
        assert table in text
        for field in msgspec.structs.fields(cls):
            assert f"| `{field.encode_name}` |" in table, (cls.__name__, field.name)
    assert "| `from` |" in protodoc.field_table(typing.get_args(ClientFrame)[1])
    assert "`from_`" not in text


def test_examples_are_valid_frames() -> None:
    client = msgspec.json.Decoder(ClientFrame)
    hub = msgspec.json.Decoder(HubFrame)
    for cls, frame in protodoc.EXAMPLES.items():
        decoder = client if cls in typing.get_args(ClientFrame) else hub
        assert decoder.decode(msgspec.json.encode(frame)) == frame


def test_every_error_and_close_code_is_documented_with_a_meaning() -> None:
    text = protodoc.render()
    for code in ErrorCode:
        assert ERROR_MEANINGS.get(code), f"ErrorCode.{code.name} has no meaning"
        assert f"| `{code.value}` |" in text
    for close in CloseCode:
        assert CLOSE_MEANINGS.get(close), f"CloseCode.{close.name} has no meaning"
        assert f"| {int(close)} | `{close.name}` |" in text


def test_limits_and_statuses_are_documented() -> None:
    text = protodoc.render()
    for field in msgspec.structs.fields(HubConfig):
        assert f"| `{field.name}` |" in text, field.name
    for status in ACK_STATUSES:
        assert f"| `{status}` |" in text, status


def test_settings_carry_the_hub_defaults_and_hand_them_over() -> None:
    """One default per limit: Settings takes the hub's, and hub_config() gives back
    what a user set, the rest as HubConfig has it."""
    shared = {f.name for f in msgspec.structs.fields(HubConfig)} & {
        f.name for f in msgspec.structs.fields(Settings)
    }
    assert shared, "HubConfig and Settings share no fields"
    assert Settings().hub_config() == HubConfig()
    changed = Settings(max_body=10, retention_days=2.5).hub_config()
    assert (changed.max_body, changed.retention_days) == (10, 2.5)
    assert changed.ref_window == HubConfig().ref_window


def test_config_md_lists_every_setting() -> None:
    text = (ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    for field in msgspec.structs.fields(Settings):
        assert f"`{field.name}`" in text, f"docs/CONFIG.md does not mention {field.name}"
    for names in ENVIRONMENT.values():
        for var in names:
            assert f"`{var}`" in text, f"docs/CONFIG.md does not mention {var}"
