"""``wsbus status``: how the hub is doing, for a person or a monitoring script.

One ``hub_status`` round trip. The exit status is the verdict: 0 healthy, 1
degraded (the hub cannot store sends: its store fails, or NATS is unreachable),
3 the hub cannot be reached, 4 the hub refused (token).
"""

from __future__ import annotations

import argparse
import time

from wsbus.codec import encode_json
from wsbus.errors import ConnectionLost, ErrorCode, SendRefused
from wsbus.oneshot import OneShot
from wsbus.refs import new_ref
from wsbus.schema import HubStatus, HubStatusResult, Waiting

from .common import Subcommands, add_client_args, settings_from
from .exits import CliError, Exit

__all__ = ["register", "render"]

EXAMPLES = """\
examples:
  wsbus status                       # the local hub: health, who is on, mail waiting
  wsbus status --json | jq .pending  # the same as one JSON object
  wsbus status -q && echo healthy    # only the exit status (cron, health checks)
  WSBUS_TOKEN=… wsbus status --url wss://hub.lan:8765   # an admin token sees it all

exit status: 0 healthy, 1 degraded (store failing or engine unreachable),
3 the hub cannot be reached, 4 refused (token)
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "status",
        help="the hub's health, connections and mail waiting for a receipt",
        description="Ask the hub how it is doing: version, uptime, engine, store, "
        "who is connected on each channel, direct messages still waiting for a final "
        "receipt. Without --auth, or with an admin token, the whole hub; another token "
        "sees its own channels and names.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_client_args(p, channel=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .bridge.inject import sanitize

    settings = settings_from(args)
    try:
        with OneShot(settings.url, None, timeout=settings.timeout, **settings.access()) as bus:
            bus.connect()
            answer = bus.request(HubStatus(ref=new_ref()), settings.timeout)
    except TimeoutError:
        raise CliError(
            f"the hub at {settings.url} did not answer within {settings.timeout:g} s",
            Exit.UNREACHABLE,
        ) from None
    except SendRefused as err:
        raise _refused(err) from None
    except ConnectionLost as err:
        status = Exit.REFUSED if err.code in (4001, 4002) else Exit.UNREACHABLE
        why = sanitize(err.reason) or "no reason given"
        raise CliError(f"the hub closed the connection ({err.code}): {why}", status) from None
    if not isinstance(answer, HubStatusResult):
        raise CliError(f"unexpected answer from the hub: {type(answer).__name__}")
    if args.json:
        print(encode_json(answer).decode())
    elif not args.quiet:
        print(render(answer, time.time()))
    return Exit.OK if answer.healthy else Exit.FAILURE


def _refused(err: SendRefused) -> CliError:
    """The hub answered ``hub_status`` with an error: a refused token (4), or a hub
    that cannot answer it (1)."""
    from .bridge.inject import sanitize

    message = sanitize(err.message)
    if err.code in (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN):
        return CliError(f"the hub refused: {message} ({err.code})", Exit.REFUSED)
    if err.code in (ErrorCode.UNKNOWN_OP, ErrorCode.INVALID_FRAME):
        return CliError(
            "this hub does not answer hub_status (an older wsbus): upgrade it, or use "
            f"GET /healthz on its HTTP port ({err.code})",
            Exit.FAILURE,
        )
    return CliError(f"the hub could not answer: {message} ({err.code})", Exit.FAILURE)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _waiting(w: Waiting, now: float) -> str:
    from .bridge.inject import sanitize

    plural = "" if w.count == 1 else "s"
    return (
        f"  #{sanitize(w.channel)}  {sanitize(w.name)}  {w.count} message{plural}, "
        f"oldest #{w.oldest_seq} ({_ago(now - w.oldest_ts)} ago)"
    )


def render(s: HubStatusResult, now: float) -> str:
    """The answer as a person reads it (control characters in peers' labels removed)."""
    from .bridge.inject import sanitize

    clean = sanitize  # every string comes from the hub: no escape sequence reaches the terminal
    verdict = "healthy" if s.healthy else f"DEGRADED: {clean(s.problem or '')}"
    lines = [
        f"wsbus {clean(s.version)} · hub {clean(s.hub)} · {clean(s.engine)} · "
        f"up {_ago(s.uptime)} · {verdict}"
    ]
    if s.full:
        size = f" ({_size(s.store_bytes)})" if s.store_bytes else ""
        lines.append(f"store: {clean(s.store or '')}{size}")
        lag = f" · engine lag {s.lag} events" if s.lag is not None else ""
        keep = f"{s.retention_days:g} days" + (
            f" or {s.retention_count:,} events" if s.retention_count else ""
        )
        lines.append(f"seq {s.seq:,} (pruned to {s.pruned_seq:,}) · retention {keep}{lag}")
    lines.append(f"connections: {s.connections} · sends queued: {s.queued}")
    if not s.channels:
        lines.append("nobody connected" + ("" if s.full else " on your channels"))
    for channel, rows in s.channels.items():
        lines.append(f"#{clean(channel)}")
        for c in rows:
            labels = [c.kind, c.model, c.role, c.host]
            extra = "  ".join(sanitize(x) for x in labels if x)
            conns = f"{c.connections} conn" + ("s" if c.connections != 1 else "")
            lines.append(f"  {sanitize(c.name)}  {extra}  {conns}".replace("    ", "  "))
    window = f"newest {s.pending_window:,} events"
    if s.pending:
        total = sum(w.count for w in s.pending)
        lines.append(f"waiting for a final receipt: {total} ({window})")
        lines.extend(_waiting(w, now) for w in s.pending)
        if s.oldest_pending is not None:
            o = s.oldest_pending
            lines.append(
                f"oldest unacknowledged: #{o.oldest_seq} to {clean(o.name)} on "
                f"#{clean(o.channel)}, "
                f"{_ago(now - o.oldest_ts)} ago"
            )
    else:
        lines.append(f"no direct message waiting for a receipt ({window})")
    return "\n".join(lines)
