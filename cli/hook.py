"""``wsbus hook``: git hooks that read the hub's file leases.

``wsbus hook install`` puts a ``pre-commit`` hook in the repository (the one of the
current directory); the hook runs ``wsbus hook pre-commit``, which refuses a commit
whose staged files (both sides of a rename) are covered by another agent's exclusive
lease on any channel the token may use, naming the holder, its reason and until when.
``WSBUS_LEASE_OVERRIDE=1`` (or ``git commit --no-verify``) overrides it; when the hub
cannot be reached the commit goes through with a warning — leases are advisory, a hook
must not lock people out.
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

from wsbus.errors import ClientError
from wsbus.leasepaths import covers
from wsbus.schema import Lease

from .common import Subcommands, add_client_args, settings_from, warn
from .exits import CliError, Exit
from .leases import lease_line, query_leases

__all__ = ["HOOK_MARK", "blocking", "register"]

#: the line that marks a hook file as ours (install replaces only ours)
HOOK_MARK = "# installed by `wsbus hook install`"
#: seconds the hook waits for the hub at most (a commit must not hang)
HOOK_TIMEOUT = 5.0

EXAMPLES = """\
examples:
  wsbus hook install                  # in a repository: add the pre-commit hook
  WSBUS_NAME=claude git commit ...    # your own leases never block you
  WSBUS_LEASE_OVERRIDE=1 git commit   # commit anyway (or: git commit --no-verify)
"""


def register(sub: Subcommands) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "hook",
        help="git hooks that respect file leases (pre-commit)",
        description="Install or run the git pre-commit hook that refuses commits touching "
        "files another agent leases exclusively.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=_no_action)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    check = actions.add_parser(
        "pre-commit",
        help="check the staged files against the leases (what the hook runs)",
        description="Exit 1 naming each staged file another agent leases exclusively; exit "
        "0 otherwise, with a warning when the hub cannot be reached.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="who commits: their own leases never block (env WSBUS_NAME)",
    )
    add_client_args(check)
    check.set_defaults(func=run_check)
    install = actions.add_parser(
        "install",
        help="install the pre-commit hook in this repository",
        description="Write the repository's pre-commit hook to run `wsbus hook pre-commit`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    install.add_argument(
        "--force", action="store_true", help="replace a pre-commit hook that wsbus did not write"
    )
    install.set_defaults(func=run_install)
    return p


def _no_action(args: argparse.Namespace) -> int:
    raise CliError("hook needs an action: install or pre-commit (see --help)", Exit.USAGE)


def _git(*argv: str) -> str:
    try:
        done = subprocess.run(["git", *argv], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise CliError("git is not installed (the hook is a git hook)", Exit.USAGE) from None
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise CliError(f"git {argv[0]}: {why}", Exit.USAGE)
    return done.stdout


def staged() -> list[str]:
    """The staged paths, relative to the repository root (a rename: both sides)."""
    out = _git("diff", "--cached", "--name-only", "--no-renames", "-z")
    return [p for p in out.split("\0") if p]


def blocking(paths: list[str], leases: list[Lease], me: str | None) -> list[tuple[str, Lease]]:
    """Each staged path covered by another holder's exclusive lease, with the lease."""
    found = []
    for path in paths:
        for lease in leases:
            if lease.exclusive and lease.holder != me and any(covers(p, path) for p in lease.paths):
                found.append((path, lease))
                break
    return found


def run_check(args: argparse.Namespace) -> int:
    if os.environ.get("WSBUS_LEASE_OVERRIDE") == "1":
        warn("lease check skipped (WSBUS_LEASE_OVERRIDE=1)")
        return Exit.OK
    settings = settings_from(args)
    if args.timeout is None and "WSBUS_TIMEOUT" not in os.environ:
        settings.timeout = min(settings.timeout, HOOK_TIMEOUT)
    paths = staged()
    if not paths:
        return Exit.OK
    try:  # every channel: the repository's agents may talk on any of them
        leases = query_leases(settings, every_channel=True)
    except (ClientError, TimeoutError, OSError) as err:
        warn(
            f"the hub at {settings.url} cannot be reached ({err}): committing without the "
            "lease check"
        )
        return Exit.OK
    found = blocking(paths, leases, settings.name)
    if not found:
        return Exit.OK
    who = settings.name or "you (unnamed: set WSBUS_NAME so your own leases do not count)"
    warn(f"commit refused for {who}: {len(found)} staged file(s) leased by other agents")
    for path, lease in found:
        print(f"  {path}: {lease_line(lease)}", file=sys.stderr)
    warn(
        "wait for the lease to end, ask its holder to release it, or override: "
        "WSBUS_LEASE_OVERRIDE=1 git commit ... (or git commit --no-verify)"
    )
    return Exit.FAILURE


def run_install(args: argparse.Namespace) -> int:
    hooks = Path(_git("rev-parse", "--git-path", "hooks").strip())
    if not hooks.is_absolute():
        hooks = Path(_git("rev-parse", "--show-toplevel").strip()) / hooks
    hook = hooks / "pre-commit"
    if hook.exists() and HOOK_MARK not in hook.read_text(errors="replace") and not args.force:
        raise CliError(
            f"{hook} exists and is not wsbus's: add the line `wsbus hook pre-commit || exit 1` "
            "to it, or pass --force to replace it",
            Exit.USAGE,
        )
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "wsbus"))
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(
        f"#!/bin/sh\n{HOOK_MARK}: refuse commits touching files another agent leases\n"
        f"exec {command} hook pre-commit\n"
    )
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    print(f"installed {hook}")
    return Exit.OK
