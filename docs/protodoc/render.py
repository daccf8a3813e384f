"""Rendering ``docs/PROTOCOL.md``: the frame sections (op tag, docstring, field table,
example), the error, close code, status and limit tables, and the whole document in
order. What it renders comes from :mod:`wsbus.schema`, :mod:`wsbus.errors` and the
defaults; the prose is in :mod:`.prose`, the examples in :mod:`.examples`.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from typing import Any

import msgspec
import msgspec.inspect as mi

from wsbus.config import Settings
from wsbus.errors import CLOSE_MEANINGS, ERROR_MEANINGS, FATAL_CLOSE_CODES, CloseCode, ErrorCode
from wsbus.hubconfig import HubConfig
from wsbus.schema import (
    ACK_STATUSES,
    FINAL_STATUSES,
    ClientFrame,
    HubFrame,
    Limits,
    Member,
    PresenceChange,
    RosterEntry,
    ThreadInfo,
)

from .examples import EXAMPLES
from .prose import (
    CLOSE_INTRO,
    CONNECTING,
    CURSORS,
    DEFAULTS,
    DIAGRAM,
    ERRORS_INTRO,
    FRAMES_INTRO,
    LEASES,
    LIFECYCLE,
    LIMIT_NOTES,
    LIMITS_INTRO,
    PRESENCE,
    QUERIES,
    RECEIPTS,
    SENDING,
    SERVER_NOTES,
    SETTINGS,
    SLOW,
    STATUS_NOTES,
    TITLE,
)

__all__ = ["client_frames", "field_table", "hub_frames", "main", "render"]


def client_frames() -> tuple[type[msgspec.Struct], ...]:
    """The client -> hub frame classes, in union order."""
    return typing.get_args(ClientFrame)


def hub_frames() -> tuple[type[msgspec.Struct], ...]:
    """The hub -> client frame classes, in union order."""
    return typing.get_args(HubFrame)


def _doc(obj: type) -> str:
    text = inspect.cleandoc(obj.__doc__ or "")
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`"


def _length(lo: int | None, hi: int | None, unit: str) -> str | None:
    if lo is not None and hi is not None:
        return f"{lo}-{hi} {unit}"
    if hi is not None:
        return f"at most {hi} {unit}"
    if lo is not None:
        return f"at least {lo} {unit}"
    return None


def _describe(t: mi.Type) -> tuple[str, list[str]]:
    """A readable type name and the rules that apply to it."""
    if isinstance(t, mi.Metadata):
        name, notes = _describe(t.type)
        description = (t.extra_json_schema or {}).get("description")
        if isinstance(description, str):
            notes = [n for n in notes if not n.startswith("pattern")]
            notes.insert(0, description)
        return name, notes
    if isinstance(t, mi.StrType):
        notes = []
        if t.pattern is not None:
            notes.append(f"pattern {_code(t.pattern)}")
        size = _length(t.min_length, t.max_length, "characters")
        if size:
            notes.append(size)
        return "string", notes
    if isinstance(t, mi.IntType):
        bounds = []
        if t.ge is not None:
            bounds.append(f">= {t.ge}")
        if t.gt is not None:
            bounds.append(f"> {t.gt}")
        if t.le is not None:
            bounds.append("<= 2^63-1" if t.le == 2**63 - 1 else f"<= {t.le}")
        if t.lt is not None:
            bounds.append(f"< {t.lt}")
        return "integer", [", ".join(bounds)] if bounds else []
    if isinstance(t, mi.FloatType):
        return "number", []
    if isinstance(t, mi.BoolType):
        return "boolean", []
    if isinstance(t, mi.NoneType):
        return "null", []
    if isinstance(t, mi.AnyType):
        return "any", []
    if isinstance(t, mi.LiteralType):
        return " | ".join(_code(msgspec.json.encode(v).decode()) for v in t.values), []
    if isinstance(t, mi.ListType):
        name, notes = _describe(t.item_type)
        size = _length(t.min_length, t.max_length, "items")
        return f"array of {name}", [f"each: {n}" for n in notes] + ([size] if size else [])
    if isinstance(t, mi.DictType):
        return "object", []
    if isinstance(t, mi.StructType):
        title = t.cls.__name__
        return f"[{title}](#{title.lower()})", []
    if isinstance(t, mi.UnionType):
        names: list[str] = []
        notes = []
        for member in t.types:
            name, sub = _describe(member)
            names.append(name)
            notes.extend(n for n in sub if n not in notes)
        return " | ".join(names), notes
    raise TypeError(f"protodoc cannot describe {t!r}")


def _default(field: mi.Field) -> str:
    if field.required:
        return "required"
    if field.default_factory is not msgspec.NODEFAULT:
        value: Any = field.default_factory()
    else:
        value = field.default
    return _code(msgspec.json.encode(value).decode())


def field_table(cls: type[msgspec.Struct]) -> str:
    """The markdown table of a struct's wire fields."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    rows = ["| field | type | default | rule |", "|---|---|---|---|"]
    if info.tag_field is not None:
        tag = msgspec.json.encode(info.tag).decode()
        rows.append(f"| `{info.tag_field}` | {_code(tag)} | required | the frame's tag |")
    for field in info.fields:
        type_name, notes = _describe(field.type)
        cells = [_code(field.encode_name), type_name, _default(field), "; ".join(notes)]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _example(cls: type[msgspec.Struct], union: Any) -> str:
    frame = EXAMPLES[cls]
    data = msgspec.json.encode(frame)
    # the example must pass the same validation as a real frame
    decoded = msgspec.json.decode(data, type=union)
    if decoded != frame:
        raise ValueError(f"example of {cls.__name__} does not round-trip")
    text = data.decode()
    if len(text) > 88:
        text = msgspec.json.format(data, indent=2).decode()
    return f"```json\n{text}\n```"


def frame_section(cls: type[msgspec.Struct], union: Any, direction: str) -> str:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return "\n\n".join(
        [
            f"### `{info.tag}`",
            f"{direction}; struct `wsbus.schema.{cls.__name__}`.",
            _doc(cls),
            field_table(cls),
            _example(cls, union),
        ]
    )


def struct_section(cls: type[msgspec.Struct]) -> str:
    return "\n\n".join([f"### {cls.__name__}", _doc(cls), field_table(cls)])


def _contents(frames: list[tuple[str, list[type[msgspec.Struct]]]]) -> str:
    lines = ["## Contents", ""]
    for title in (
        "Connecting",
        "Connection lifecycle",
        "Cursors and resume",
        "Sending: durability and idempotency",
        "Receipts",
        "Presence and roster",
        "History queries",
        "Slow consumers and bad input",
    ):
        lines.append(f"- [{title}](#{_anchor(title)})")
    for title, classes in frames:
        tags = ", ".join(f"[`{_tag(c)}`](#{_tag(c)})" for c in classes)
        lines.append(f"- [{title}](#{_anchor(title)}): {tags}")
    for title in ("Nested structures", "Error codes", "Close codes", "Hub limits"):
        lines.append(f"- [{title}](#{_anchor(title)})")
    return "\n".join(lines)


def _anchor(title: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
    return slug


def _tag(cls: type[msgspec.Struct]) -> str:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return str(info.tag)


def error_table() -> str:
    rows = ["| code | meaning |", "|---|---|"]
    for code in ErrorCode:
        rows.append(f"| `{code.value}` | {_cell(ERROR_MEANINGS[code])} |")
    return "\n".join(rows)


def close_table() -> str:
    rows = ["| code | name | meaning | client reconnects |", "|---|---|---|---|"]
    for code in CloseCode:
        again = "no" if code in FATAL_CLOSE_CODES else "yes"
        rows.append(f"| {int(code)} | `{code.name}` | {_cell(CLOSE_MEANINGS[code])} | {again} |")
    return "\n".join(rows)


def _setting_rows(cls: type[msgspec.Struct], obj: Any, notes: dict[str, str]) -> list[str]:
    rows = []
    for f in msgspec.structs.fields(cls):
        if f.name not in notes:
            continue
        value = getattr(obj, f.name)
        rows.append(f"| `{f.name}` | `{value!r}` | {_cell(notes[f.name])} |")
    return rows


def status_table() -> str:
    rows = ["| status | final | meaning |", "|---|---|---|"]
    for status in ACK_STATUSES:
        final = "yes" if status in FINAL_STATUSES else "no (progress)"
        rows.append(f"| `{status}` | {final} | {_cell(STATUS_NOTES[status])} |")
    return "\n".join(rows)


def limits_section() -> str:
    announced = {f.name for f in msgspec.structs.fields(Limits)}
    missing = [f.name for f in msgspec.structs.fields(HubConfig) if f.name not in LIMIT_NOTES]
    if missing:
        raise KeyError(f"describe HubConfig fields in LIMIT_NOTES: {missing}")
    head = ["| limit | default | meaning |", "|---|---|---|"]
    announced_notes = {k: v for k, v in LIMIT_NOTES.items() if k in announced}
    other_notes = {k: v for k, v in LIMIT_NOTES.items() if k not in announced}
    return "\n\n".join(
        [
            "## Hub limits",
            LIMITS_INTRO.rstrip(),
            "\n".join(head + _setting_rows(Limits, DEFAULTS, announced_notes)),
            "Not announced, but enforced by the hub (`wsbus.hubconfig.HubConfig`):",
            "\n".join(head + _setting_rows(HubConfig, DEFAULTS, other_notes)),
            "Per connection, set by the websocket server (`wsbus.config.Settings`):",
            "\n".join(head + _setting_rows(Settings, SETTINGS, SERVER_NOTES)),
        ]
    )


def render() -> str:
    """The whole of ``docs/PROTOCOL.md``."""
    client = list(client_frames())
    hub = list(hub_frames())
    frames = [("Client → hub frames", client), ("Hub → client frames", hub)]
    parts = [
        TITLE,
        _contents(frames),
        CONNECTING,
        DIAGRAM,
        LIFECYCLE,
        CURSORS,
        SENDING,
        RECEIPTS.replace("{statuses}", status_table()),
        PRESENCE,
        QUERIES,
        LEASES,
        SLOW,
        "## Client → hub frames",
        FRAMES_INTRO,
    ]
    parts += [frame_section(c, ClientFrame, "Client → hub") for c in client]
    parts += ["## Hub → client frames", FRAMES_INTRO]
    parts += [frame_section(c, HubFrame, "Hub → client") for c in hub]
    parts += ["## Nested structures"]
    parts += [struct_section(c) for c in (Limits, Member, PresenceChange, RosterEntry, ThreadInfo)]
    parts += ["## Error codes", ERRORS_INTRO, error_table()]
    parts += ["## Close codes", CLOSE_INTRO, close_table()]
    parts += [limits_section()]
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def main() -> None:
    sys.stdout.write(render())
