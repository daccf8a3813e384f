"""The local registry and files: list, add, remove, enable, disable, discover, log, init,
invite and init-join — as the original tool, on the same files.

The registry (``registry.json``) is shared by ``agent_comms``, ``wsbus`` and the
bridge; every change holds its lock and is written atomically (0600). Nothing
here talks to the hub, except ``list``: it also shows who registered into projects.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ..exits import CliError, Exit
from ..local.audit import tail
from ..local.paths import write_atomic
from ..local.registry import STARTER_REGISTRY, Registry, RegistryError, editing
from ..render import on_screen
from .context import Context, check_name
from .joindoc import join_doc
from .members import every_member
from .spec import Command, add_hub, add_quiet

__all__ = ["COMMANDS", "invocation"]


@contextmanager
def _editing(ctx: Context) -> Iterator[Registry]:
    try:
        with editing(ctx.paths.registry, ctx.tunables.lock_timeout) as reg:
            yield reg
    except RegistryError as err:
        raise CliError(str(err), Exit.USAGE) from None


def _name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="agent name")
    add_quiet(p)


# ---------------------------------------------------------------------- list / add / remove


async def run_list(args: argparse.Namespace, ctx: Context) -> int:
    """The registry's agents (the original's table), then every project's members."""
    name, session = ctx.local_identity(None)
    me = name or ctx.last_resort(session)
    print(f"{'AGENT':<16}{'SESSION':<16}{'STATUS':<8}{'EN':<4}DESC")
    agents = ctx.registry.agents()
    for agent, m in agents.items():
        sess = str(m.get("session", ""))
        up = "up" if sess and ctx.tmux.has_session(sess) else "down"
        en = "y" if m.get("enabled", True) else "n"
        mark = " *self" if agent == me else ""
        print(f"{agent:<16}{sess:<16}{up:<8}{en:<4}{m.get('desc', '')}{mark}")
    members = await every_member(ctx)
    if not agents and not members:
        print(
            f"(none yet: the registry {ctx.paths.registry} lists no agent and nobody "
            "registered into a project — `agent_comms add NAME SESSION`, or "
            "`agent_comms register --project P` from an agent's pane)"
        )
    if members:
        print()
        print("project members (details: agent_comms roster PROJECT):")
        print(f"{'PROJECT':<16}{'MEMBER':<16}{'SESSION':<16}{'STATUS':<8}HOST")
        for project, member, sess, status, host in members:
            mark = " *self" if member == me else ""
            print(f"{project:<16}{member:<16}{sess:<16}{status:<8}{host}{mark}")
    return Exit.OK


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="agent name")
    p.add_argument("session", help="its tmux session")
    p.add_argument("--color", default="white")
    p.add_argument("--desc", default="")
    p.add_argument("--revive", default=None, help="shell cmd to launch the session if down")
    add_quiet(p)


def run_add(args: argparse.Namespace, ctx: Context) -> int:
    check_name(args.name, "agent")
    with _editing(ctx) as reg:
        try:
            reg.add(args.name, args.session, args.color, args.desc, args.revive)
        except RegistryError as err:
            raise CliError(str(err), Exit.USAGE) from None
    ctx.say(f"added: {args.name} -> session '{args.session}'")
    return Exit.OK


def run_remove(args: argparse.Namespace, ctx: Context) -> int:
    with _editing(ctx) as reg:
        if not reg.remove(args.name):
            raise CliError(f"not found: {args.name}")
    ctx.say(f"removed: {args.name}")
    return Exit.OK


def _toggle(args: argparse.Namespace, ctx: Context, enabled: bool) -> int:
    with _editing(ctx) as reg:
        if not reg.set_enabled(args.name, enabled):
            raise CliError(f"not found: {args.name}")
    ctx.say(f"{'enabled' if enabled else 'disabled'}: {args.name}")
    return Exit.OK


def run_enable(args: argparse.Namespace, ctx: Context) -> int:
    return _toggle(args, ctx, True)


def run_disable(args: argparse.Namespace, ctx: Context) -> int:
    return _toggle(args, ctx, False)


# ---------------------------------------------------------------------- discover


def _discover_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--add", action="store_true", help="add the discovered sessions")
    add_quiet(p)


def run_discover(args: argparse.Namespace, ctx: Context) -> int:
    sessions = ctx.tmux.list_sessions()
    if not sessions:
        ctx.say("no live tmux sessions found (is tmux running?)")
        return Exit.OK
    known = {m.get("session") for m in ctx.registry.agents().values()}
    new = [s for s in sessions if s not in known]
    ctx.say(f"live tmux sessions: {', '.join(sessions)}")
    if not new:
        ctx.say("all already in your registry.")
        return Exit.OK
    if not args.add:
        ctx.say(f"not in registry: {', '.join(new)}")
        ctx.say("re-run with --add to register them: agent_comms discover --add")
        return Exit.OK
    with _editing(ctx) as reg:
        for s in new:
            reg.agents()[s] = {
                "session": s,
                "color": "white",
                "enabled": True,
                "desc": "",
                "revive_cmd": None,
            }
    ctx.say(f"added {len(new)} agent(s) to registry: {', '.join(new)}")
    return Exit.OK


# ---------------------------------------------------------------------- log / init


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", type=int, default=20, help="how many lines (default 20; 0 = all)")


def run_log(args: argparse.Namespace, ctx: Context) -> int:
    if not ctx.paths.log.exists():
        print("(no comms log yet)")
        return Exit.OK
    for line in tail(ctx.paths.log, args.n):
        print(on_screen(line))
    return Exit.OK


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="overwrite an existing registry")
    add_quiet(p)


def run_init(args: argparse.Namespace, ctx: Context) -> int:
    path = ctx.paths.registry
    if path.exists() and not args.force:
        raise CliError(f"registry already exists at {path} (use --force)")
    Registry(path, copy.deepcopy(STARTER_REGISTRY)).save()
    ctx.say(f"wrote starter registry -> {path}\nedit it to match your tmux sessions.")
    return Exit.OK


# ---------------------------------------------------------------------- invite / init-join


def invocation() -> str:
    """How agents should run this tool: ``agent_comms`` on PATH, else this program's path."""
    return shutil.which("agent_comms") or os.path.abspath(sys.argv[0])


def _invite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", default=None, help="the project to mention")


def run_invite(args: argparse.Namespace, ctx: Context) -> int:
    doc = ctx.paths.join_doc
    proj = f" --project {args.project}" if args.project else ""
    print("Paste this line into each AI CLI's tmux pane you want in the comms:\n")
    print(f"    read {doc}")
    print(f"\n(The agent will ask for the project name, then self-register{proj}.)")
    if not doc.exists():
        print(f"\nNOTE: {doc} not found — run 'agent_comms init-join' to write it.")
    return Exit.OK


def run_init_join(args: argparse.Namespace, ctx: Context) -> int:
    cmd = invocation()
    write_atomic(ctx.paths.join_doc, join_doc(cmd).encode("utf-8"))
    ctx.say(f"wrote join instructions -> {ctx.paths.join_doc}")
    ctx.say(f"agents will be told to invoke: {cmd}")
    return Exit.OK


def _nothing(p: argparse.ArgumentParser) -> None:
    pass


def _list_args(p: argparse.ArgumentParser) -> None:
    add_hub(p)


COMMANDS = (
    Command(
        "invite",
        "print the paste-line to add an agent to comms",
        "Print the line to paste into an agent's pane: it reads the join instructions and "
        "registers itself.",
        """\
examples:
  agent_comms invite
  agent_comms invite --project acme-web
""",
        _invite_args,
        run_invite,
    ),
    Command(
        "init-join",
        "write the coms_join.md instruction file",
        "Write the join instructions agents follow to register themselves (etiquette and "
        "trust rules included).",
        """\
examples:
  agent_comms init-join
  AGENT_COMMS_JOIN_DOC=/shared/join.md agent_comms init-join
""",
        add_quiet,
        run_init_join,
    ),
    Command(
        "discover",
        "propose registry entries from live tmux sessions",
        "List the live tmux sessions that are not in the registry; --add adds them.",
        """\
examples:
  agent_comms discover
  agent_comms discover --add
""",
        _discover_args,
        run_discover,
    ),
    Command(
        "list",
        "list agents + live session status",
        "List the registry's agents with their tmux session, whether it is up on this "
        "machine, and whether they are enabled; then the members of every project "
        "(from the hub's rosters: who registered, on which host, up or down).",
        """\
examples:
  agent_comms list
  agent_comms ls
""",
        _list_args,
        run_list,
        ("ls",),
    ),
    Command(
        "add",
        "register a new CLI",
        "Add (or redefine) an agent in the registry: a name and its tmux session.",
        """\
examples:
  agent_comms add aider aider --desc "Aider pair-programmer" --color green
  agent_comms add grok grok --revive "tmux new-session -d -s grok grok"
""",
        _add_args,
        run_add,
    ),
    Command(
        "remove",
        "unregister a CLI",
        "Remove an agent from the registry.",
        "examples:\n  agent_comms remove aider\n",
        _name_arg,
        run_remove,
    ),
    Command(
        "enable",
        "let an agent take part again",
        "Enable an agent: it receives sends and broadcasts again.",
        "examples:\n  agent_comms enable grok\n",
        _name_arg,
        run_enable,
    ),
    Command(
        "disable",
        "stop sending to an agent",
        "Disable an agent: send refuses it and broadcasts skip it.",
        "examples:\n  agent_comms disable grok\n",
        _name_arg,
        run_disable,
    ),
    Command(
        "log",
        "tail the comms audit log",
        "Print the last lines of the private audit log (one line per delivery).",
        "examples:\n  agent_comms log\n  agent_comms log -n 100\n",
        _log_args,
        run_log,
    ),
    Command(
        "init",
        "write a starter registry",
        "Write a starter registry (claude, codex, grok) to edit to your tmux sessions.",
        "examples:\n  agent_comms init\n  agent_comms init --force\n",
        _init_args,
        run_init,
    ),
)
