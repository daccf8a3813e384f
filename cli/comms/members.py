"""Project rosters on the hub: ``register``, ``unregister``, ``roster`` and ``whoami``.

An agent registers itself into a project (a channel's roster on the hub) with
its tmux session, host, model and role; the hub gives it a unique name (``-2``,
``-3``... when another session holds the one asked for) and the members already
there get a ``notice``. The local roster file (``projects/<P>.json``, the
original's) is kept as a copy of the hub's roster, the offline fallback.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from wsbus.errors import ErrorCode, SendRefused
from wsbus.schema import RosterEntry

from ..conventions import KIND_NOTICE
from ..exits import CliError, Exit
from ..local.registry import RegistryError, load_roster, save_roster, unique_member_name
from .context import Context, check_name
from .fallback import deliver, local_target
from .spec import Command, add_from, add_hub, add_quiet

__all__ = ["COMMANDS", "MemberRow", "every_member"]

NO_SESSION = (
    "couldn't detect your tmux session (your CLI may sandbox shell env).\n"
    "Re-run with --session <your tmux session name>, e.g. --session codex.\n"
    "Find it with: tmux list-sessions"
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(name: str, model: str | None, role: str | None) -> str:
    label = f"{name} ({model or 'unknown'}"
    if role:
        label += f", {role}"
    return label + ")"


def _load(ctx: Context, project: str) -> dict[str, Any]:
    try:
        return load_roster(ctx.paths.projects, project)
    except RegistryError as err:
        raise CliError(str(err)) from None


def _cache(ctx: Context, project: str, entries: list[RosterEntry]) -> None:
    """Make the local roster file a copy of the hub's roster (fields it lacks are kept)."""
    try:
        roster = load_roster(ctx.paths.projects, project)
    except RegistryError:
        roster = {"project": project, "members": {}}
    old = roster["members"]
    members: dict[str, Any] = {}
    for e in entries:
        m = dict(old.get(e.name) or {})
        m.update(
            session=e.session or "",
            model=e.model or "unknown",
            role=e.role or "",
            joined=_iso(e.joined),
            last_active=_iso(e.last_active),
        )
        if e.host:
            m["host"] = e.host
        if e.enter_delay is not None:
            m["enter_delay"] = e.enter_delay
        members[e.name] = m
    roster["members"] = members
    try:
        save_roster(ctx.paths.projects, roster)
    except OSError as err:
        ctx.note(f"cannot write the local roster copy: {err}")


# ---------------------------------------------------------------------- register


def _register_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", required=True, help="the project to join")
    p.add_argument("--as", dest="as_name", default=None, help="member name (default: your agent)")
    p.add_argument(
        "--session", default=None, help="tmux session name (if auto-detection fails, e.g. Codex)"
    )
    p.add_argument("--model", default=None, help="your model id, e.g. claude-opus-4-7")
    p.add_argument("--role", default=None, help="one phrase on your strengths")
    p.add_argument(
        "--enter-delay",
        dest="enter_delay",
        type=float,
        default=None,
        help="seconds between paste and Enter for YOUR pane (raise if it doesn't submit)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="register even if the session belongs to another registry agent",
    )
    add_quiet(p)
    add_hub(p)


def _print_registered(
    ctx: Context, name: str, project: str, session: str, existed: bool, teammates: list[str]
) -> None:
    ctx.say(
        f"{'updated' if existed else 'registered'}: {name} in project '{project}' "
        f"(session={session})"
    )
    ctx.say(f"teammates: {', '.join(teammates) or '(none yet)'}")
    ctx.say(f'to message the project:  agent_comms post {project} "<your message>"')


async def _register_offline(ctx: Context, project: str, base: str, session: str) -> int:
    args = ctx.args
    roster = _load(ctx, project)
    members: dict[str, Any] = roster["members"]
    same = [
        n for n, m in members.items() if m.get("session") == session and ctx.is_mine(m.get("host"))
    ]
    # this session keeps its name; a name another session holds gets -2, -3...
    name = same[0] if same else unique_member_name(members, base, "\0")
    prior = members.get(name, {})
    existed = name in members
    now = _iso(time.time())
    entry: dict[str, Any] = {
        **prior,
        "session": session,
        "model": args.model or prior.get("model", "unknown"),
        "role": args.role or prior.get("role", ""),
        "joined": prior.get("joined", now),
        "last_active": now,
        "host": ctx.host,
    }
    if args.enter_delay is not None:
        entry["enter_delay"] = args.enter_delay
    members[name] = entry
    save_roster(ctx.paths.projects, roster)
    if not existed:
        note = (
            f"{ctx.tunables.marker} {_label(name, entry['model'], entry['role'])} joined "
            f"project '{project}' — roster: agent_comms roster {project}"
        )
        for other in members:
            target = local_target(ctx, other) if other != name else None
            if target is not None and ctx.tmux.has_session(target.session):
                await deliver(ctx, target, note)
    _print_registered(ctx, name, project, session, existed, [n for n in members if n != name])
    ctx.note(
        f"hub unreachable ({ctx.unreachable}): saved in the local roster file only; "
        "the hub learns it the next time you run register"
    )
    return Exit.OK


async def run_register(args: argparse.Namespace, ctx: Context) -> int:
    session = args.session or ctx.my_session()
    if not session:
        print(NO_SESSION, file=sys.stderr)
        return Exit.USAGE
    project = check_name(args.project, "project")
    owner = ctx.registry.by_session(session)
    agent = ctx.registry.agent(owner) if owner else None
    if agent is not None and not ctx.is_mine(agent.host):
        owner = None
    base = args.as_name or owner or session
    if owner and base != owner and not args.force:
        raise CliError(
            f"session '{session}' belongs to registry agent '{owner}'; use --as {owner} or --force"
        )
    check_name(base, "member")
    async with ctx.hub() as client:
        if client is None:
            return await _register_offline(ctx, project, base, session)
        reg = await client.register(
            project,
            base,
            session=session,
            host=ctx.host,
            model=args.model,
            role=args.role,
            enter_delay=args.enter_delay,
            timeout=ctx.timeout,
        )
    _cache(ctx, project, reg.members)
    me = next((m for m in reg.members if m.name == reg.name), None)
    if not reg.existed:
        body = (
            f"{_label(reg.name, me.model if me else None, me.role if me else None)} joined "
            f"project '{project}' — roster: agent_comms roster {project}"
        )
        async with ctx.hub(reg.name) as client:
            if client is not None:
                await client.send("*", body, channel=project, kind=KIND_NOTICE, timeout=ctx.timeout)
    teammates = [m.name for m in reg.members if m.name != reg.name]
    _print_registered(ctx, reg.name, project, session, reg.existed, teammates)
    return Exit.OK


# ---------------------------------------------------------------------- unregister


def _unregister_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", required=True, help="the project to leave")
    p.add_argument("--as", dest="as_name", default=None, help="member name (default: yours)")
    add_from(p)
    add_quiet(p)
    add_hub(p)


async def run_unregister(args: argparse.Namespace, ctx: Context) -> int:
    project = check_name(args.project, "project")
    session = ctx.my_session()
    async with ctx.hub() as client:
        if client is not None:
            roster = await client.roster(project, timeout=ctx.timeout)
            mine = [
                m.name
                for m in roster.registered
                if session and m.session == session and m.host == ctx.host
            ]
            name = args.as_name or (mine[0] if mine else await ctx.identity(args.frm))
            try:
                left = await client.register(project, name, leave=True, timeout=ctx.timeout)
            except SendRefused as err:
                if err.code == ErrorCode.UNKNOWN_MEMBER:
                    raise CliError(f"not a member: {name} in project '{project}'") from None
                raise
            _cache(ctx, project, left.members)
            ctx.say(f"unregistered: {name} from project '{project}'")
            return Exit.OK
    local = _load(ctx, project)
    members = local["members"]
    mine = [
        n
        for n, m in members.items()
        if session and m.get("session") == session and ctx.is_mine(m.get("host"))
    ]
    name = args.as_name or (mine[0] if mine else await ctx.identity(args.frm))
    if members.pop(name, None) is None:
        raise CliError(f"not a member: {name} in project '{project}'")
    save_roster(ctx.paths.projects, local)
    ctx.say(f"unregistered: {name} from project '{project}'")
    ctx.note(
        f"hub unreachable ({ctx.unreachable}): removed from the local roster file only; "
        "run unregister again when the hub is back"
    )
    return Exit.OK


# ---------------------------------------------------------------------- roster


def _roster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", help="the project")
    add_hub(p)


def _row(name: str, session: str, host: str, model: str, status: str, role: str) -> str:
    return f"  {name:<14}{session:<14}{host:<14}{model:<30}{status:<7}{role}"


async def run_roster(args: argparse.Namespace, ctx: Context) -> int:
    project = check_name(args.project, "project")
    rows: list[tuple[str, str, str, str, str, str]] = []
    async with ctx.hub() as client:
        if client is not None:
            result = await client.roster(project, timeout=ctx.timeout)
            for m in result.registered:
                rows.append(
                    (
                        m.name,
                        m.session or "",
                        m.host or "",
                        m.model or "unknown",
                        m.state or "?",
                        m.role or "",
                    )
                )
    if client is None:
        ctx.note(f"hub unreachable ({ctx.unreachable}); showing the local roster file")
        for name, m in _load(ctx, project)["members"].items():
            session, host = str(m.get("session", "")), str(m.get("host") or "")
            status = (
                ("up" if ctx.tmux.has_session(session) else "down")
                if (session and ctx.is_mine(host))
                else "?"
            )
            rows.append(
                (name, session, host, str(m.get("model", "?")), status, str(m.get("role", "")))
            )
    if not rows:
        print(f"project '{project}': no members yet")
        return Exit.OK
    print(f"project '{project}' — {len(rows)} member(s):")
    print(_row("MEMBER", "SESSION", "HOST", "MODEL", "STATUS", "ROLE"))
    for row in rows:
        print(_row(*row))
    return Exit.OK


# ---------------------------------------------------------------------- every project

MemberRow = tuple[str, str, str, str, str]
"""``(project, member, session, status, host)``: one line of ``list``'s project section."""


async def every_member(ctx: Context) -> list[MemberRow]:
    """The members of every project: the hub's rosters (status: the bridge's view, ``?``
    when no bridge serves it), or the local roster files when the hub is down."""
    async with ctx.hub() as client:
        if client is not None:
            return [
                (m.channel, m.name, m.session or "", m.state or "?", m.host or "")
                for m in await ctx.members(client)
            ]
    rows: list[MemberRow] = []
    for project, name, m in ctx.local_members():
        session, host = str(m.get("session", "")), str(m.get("host") or "")
        mine = session and ctx.is_mine(host)
        status = ("up" if ctx.tmux.has_session(session) else "down") if mine else "?"
        rows.append((project, name, session, status, host))
    if rows:
        ctx.note(f"hub unreachable ({ctx.unreachable}); project members from the local files")
    return sorted(rows)


# ---------------------------------------------------------------------- whoami


def _whoami_args(p: argparse.ArgumentParser) -> None:
    add_from(p)
    add_hub(p)


async def run_whoami(args: argparse.Namespace, ctx: Context) -> int:
    print(await ctx.identity(args.frm))
    return Exit.OK


COMMANDS = (
    Command(
        "register",
        "self-register into a project (run from the agent's tmux pane)",
        "Join a project's roster on the hub with your tmux session, host, model and role. "
        "A name held by another session gets -2, -3...; members already there get a "
        "notice. Refused when your session belongs to another registry agent (--force).",
        """\
examples:
  agent_comms register --project acme-web --as claude --model claude-opus-4-7 --role "reasoning"
  agent_comms register --project acme-web --as codex --session codex --enter-delay 0.8
""",
        _register_args,
        run_register,
    ),
    Command(
        "unregister",
        "leave a project",
        "Remove yourself (or --as NAME) from a project's roster.",
        """\
examples:
  agent_comms unregister --project acme-web
  agent_comms unregister --project acme-web --as claude-2
""",
        _unregister_args,
        run_unregister,
    ),
    Command(
        "roster",
        "show members of a project",
        "Show a project's members: tmux session, host, model, status (up/down as the bridge "
        "serving it last saw the pane; ? when no bridge serves it) and role.",
        """\
examples:
  agent_comms roster acme-web
""",
        _roster_args,
        run_roster,
    ),
    Command(
        "whoami",
        "print detected sender identity",
        "Print the name messages are sent as: --from, WSBUS_NAME, AGENT_COMMS_SELF, your tmux "
        "session's registry agent or roster member, AGENT_NAME, else the session name.",
        """\
examples:
  agent_comms whoami
  AGENT_COMMS_SELF=claude agent_comms whoami
""",
        _whoami_args,
        run_whoami,
    ),
)
