"""``wsbus verify REF [FILE]``: check a file against the reference ``send --attach`` sent.

Sensitive data stays off the bus: the producer keeps it in a 0600 file and sends
only a reference, one line such as::

    attach: /home/me/out/hits.csv size=1234 sha256=<64 hex> host=build1

with the same fields in ``meta.attach``. The consumer fetches the file out of band
(scp, a shared disk) and checks it here. This module owns that reference: the
sender builds it with :func:`attachment` and :func:`attach_line`; the checker
reads it back with :func:`from_meta` and :func:`parse_reference`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import stat
import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec

from .common import Subcommands, add_client_args, settings_from
from .conventions import hostname
from .exits import CliError, Exit

__all__ = [
    "Reference",
    "attach_line",
    "attachment",
    "digest",
    "from_meta",
    "parse_reference",
    "register",
    "run",
]

META_ATTACH = "attach"
CHUNK = 1 << 20  # files are hashed 1 MiB at a time, never read whole

EXAMPLES = """\
examples:
  wsbus verify 1043                      # the file event #1043 attached, at its path
  wsbus verify 1043 ~/in/hits.csv        # the copy fetched here
  wsbus verify "sha256=9f86d08…" hits.csv  # a digest from anywhere (and size=, if given)
  wsbus show 1043 --body | wsbus verify - ~/in/hits.csv
  wsbus verify -q 1043 && process ~/in/hits.csv

exit status: 0 the file matches, 1 it does not (MISMATCH), 2 it cannot be checked
(no sha256 in REF, no such event, unreadable file), 3 the hub is unreachable.
"""

Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-fA-F]{64}$")]
Size = Annotated[int, msgspec.Meta(ge=0)]


class Reference(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What an attach line says about a file: only ``sha256`` is required to check one."""

    sha256: Sha256
    size: Size | None = None
    path: str | None = None
    host: str | None = None


# ------------------------------------------------------------------ making a reference


def digest(path: Path) -> tuple[int, str]:
    """The size and sha256 of a regular file, read 1 MiB at a time. Raises OSError."""
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(21, "it is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise OSError(22, "not a regular file")
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return size, h.hexdigest()


def attachment(file: str) -> Reference:
    """The reference to send for ``file``; a file that cannot be read is a CliError."""
    path = os.path.abspath(file)
    if not _plain(path):
        raise CliError(f"cannot attach {_shown(path)}: rename it (control characters)", Exit.USAGE)
    try:
        size, sha256 = digest(Path(path))
    except OSError as err:
        raise CliError(f"cannot attach {_shown(path)}: {_reason(err)}", Exit.USAGE) from None
    return Reference(sha256=sha256, size=size, path=path, host=hostname())


def exposed(file: str) -> int | None:
    """The file's permission bits if group or others may read it (the convention: 0600)."""
    try:
        mode = stat.S_IMODE(os.stat(file).st_mode)
    except OSError:
        return None
    return mode if mode & 0o044 else None


def attach_line(ref: Reference) -> str:
    """``attach: PATH size=N sha256=HEX host=HOST``: one line, PATH quoted as a shell
    word when it needs it."""
    parts = [f"attach: {_shown(ref.path or '-')}"]
    if ref.size is not None:
        parts.append(f"size={ref.size}")
    parts.append(f"sha256={ref.sha256}")
    if ref.host:
        parts.append(f"host={ref.host}")
    return " ".join(parts)


# ------------------------------------------------------------------ reading one back

_ATTACH_RE = re.compile(
    r"^attach: (?P<path>.+?) size=(?P<size>[0-9]{1,20}) sha256=(?P<sha256>[0-9a-fA-F]{64})"
    r"(?: host=(?P<host>\S+))?[ \t]*\r?$",
    re.MULTILINE,
)
_SHA256_RE = re.compile(r"(?<![0-9A-Za-z])sha256[=:]([0-9a-fA-F]{64})(?![0-9A-Za-z])")
_SIZE_RE = re.compile(r"(?<![0-9A-Za-z_])size=([0-9]{1,20})(?![0-9])")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_SEQ_RE = re.compile(r"#?([0-9]{1,18})")


def from_meta(meta: dict[str, Any] | None) -> Reference | None:
    """``meta.attach`` of an event, if it is a valid reference."""
    if not meta or META_ATTACH not in meta:
        return None
    try:
        return msgspec.convert(meta[META_ATTACH], Reference)
    except msgspec.ValidationError:
        return None


def parse_reference(text: str) -> Reference | None:
    """The reference in ``text``: its (last) attach line, else its one ``sha256=HEX``
    (with ``size=N`` if there is exactly one), else a bare 64-hex digest. A CliError
    when it names several different digests."""
    lines = list(_ATTACH_RE.finditer(text))
    if lines:
        m = lines[-1]
        words = _split(m["path"])
        path = words[0] if len(words) == 1 else m["path"]
        return Reference(sha256=m["sha256"], size=int(m["size"]), path=path, host=m["host"])
    digests = {d.lower() for d in _SHA256_RE.findall(text)}
    if not digests and _HEX64_RE.fullmatch(text.strip()):
        digests = {text.strip().lower()}
    if len(digests) > 1:
        raise CliError("REF names several sha256 values: give just one", Exit.USAGE)
    if not digests:
        return None
    sizes = set(_SIZE_RE.findall(text))
    size = int(sizes.pop()) if len(sizes) == 1 else None
    return Reference(sha256=digests.pop(), size=size)


def _split(words: str) -> list[str]:
    try:
        return shlex.split(words)
    except ValueError:
        return []


# ------------------------------------------------------------------ the command


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "verify",
        help="check a file against an attachment reference (sha256, size)",
        description=(
            "Check that FILE is the one a `wsbus send --attach` reference describes: same "
            "sha256 and size. REF is the event's seq, or text holding the reference (its "
            "attach line, or just sha256=HEX), or - to read that text from stdin. FILE "
            "defaults to the path in the reference."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ref", metavar="REF", help="seq of the event, or text with sha256=HEX, or -")
    p.add_argument("file", metavar="FILE", nargs="?", help="the file to check (default: REF's)")
    add_client_args(p, channel=False)
    p.set_defaults(func=run)
    return p


async def run(args: argparse.Namespace) -> int:
    ref, seq = await _reference(args.ref, args)
    file = args.file or ref.path
    if not file:
        raise CliError("the reference names no file: give the FILE to check", Exit.USAGE)
    try:
        size, sha256 = digest(Path(file))
    except OSError as err:
        raise CliError(_unreadable(file, err, ref), Exit.USAGE) from None
    ok = sha256 == ref.sha256.lower() and ref.size in (None, size)
    if args.json:
        out = {
            "ok": ok,
            "path": file,
            "size": size,
            "sha256": sha256,
            "expected": {"size": ref.size, "sha256": ref.sha256.lower()},
            "host": ref.host,
            "seq": seq,
        }
        sys.stdout.write(msgspec.json.encode(out).decode() + "\n")
    elif not args.quiet:
        print(_verdict(file, size, sha256, ref))
    return Exit.OK if ok else Exit.FAILURE


async def _reference(word: str, args: argparse.Namespace) -> tuple[Reference, int | None]:
    """The reference REF names, and the seq of its event (None for text)."""
    m = _SEQ_RE.fullmatch(word)
    if m:
        seq = int(m.group(1))
        return await _from_event(seq, args), seq
    text = _stdin_text() if word == "-" else word
    ref = parse_reference(text)
    if ref is None:
        raise CliError("no sha256=HEX in REF: give a seq, an attach line or a digest", Exit.USAGE)
    return ref, None


async def _from_event(seq: int, args: argparse.Namespace) -> Reference:
    if seq < 1:
        raise CliError(f"invalid seq {seq}: seqs start at 1", Exit.USAGE)
    from wsbus.client import Client

    settings = settings_from(args)
    client = Client(
        settings.url,
        channels=[],
        presence=False,
        open_timeout=settings.timeout,
        **settings.access(),
    )
    await client.connect()
    try:
        page = await client.history(after=seq - 1, limit=1, timeout=settings.timeout)
    finally:
        await client.close()
    ev = page.events[0] if page.events and page.events[0].seq == seq else None
    if ev is None:
        raise CliError(f"no event #{seq} (never stored, or removed by retention)", Exit.USAGE)
    ref = from_meta(ev.meta) or parse_reference(ev.body)
    if ref is None:
        raise CliError(f"event #{seq} carries no attachment (no sha256=)", Exit.USAGE)
    return ref


def _stdin_text() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise CliError("REF is -: pipe the reference text to stdin", Exit.USAGE)
    return sys.stdin.buffer.read().decode("utf-8", "replace")


def _verdict(file: str, size: int, sha256: str, ref: Reference) -> str:
    if ref.size is not None and size != ref.size:
        return f"MISMATCH {_shown(file)}: expected size={ref.size} got {size}"
    if sha256 != ref.sha256.lower():
        return f"MISMATCH {_shown(file)}: expected sha256={ref.sha256.lower()} got {sha256}"
    return f"OK {_shown(file)} sha256={sha256} size={size}"


def _unreadable(file: str, err: OSError, ref: Reference) -> str:
    where = ""
    if isinstance(err, FileNotFoundError) and ref.host and ref.host != hostname():
        where = f" (it is on {ref.host}: fetch it, then `wsbus verify REF FILE`)"
    return f"cannot read {_shown(file)}: {_reason(err)}{where}"


def _reason(err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, PermissionError):
        return "permission denied"
    return (err.strerror or str(err)).lower()


def _plain(path: str) -> bool:
    """No control characters, and valid UTF-8 (it travels in a JSON line)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return path.isprintable()


def _shown(path: str) -> str:
    """A path as printed: a shell word, or Python's escapes when it has control
    characters (they come from other agents' messages)."""
    return shlex.quote(path) if _plain(path) else ascii(path)
