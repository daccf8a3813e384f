"""The tools ``wsbus mcp`` gives an agent: their arguments, schemas and what they do.

Each tool is a function of an :class:`~.agent.Agent` and its arguments, declared with
:func:`tool` beside a msgspec struct of those arguments: the struct is both the JSON
schema the MCP client is shown (:func:`input_schema`) and the check of what it sends
(:func:`call`), so a rule is written once. Results are plain JSON-able dicts; every
failure is a :class:`ToolFailure` with a code and one sentence (the hub's own code and
sentence when the hub refused), which the adapter (:mod:`.server`) returns as an MCP
tool error. No MCP import here.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from wsbus.errors import ClientError, ConnectionLost, SendRefused
from wsbus.schema import BROADCAST, Event, Lease
from wsbus.schema_fields import Channel, Name, Ref, Target, Thread

from ..render import stamp
from .agent import MAX_WAIT, Agent, NotReady, message

__all__ = ["TOOLS", "Tool", "ToolFailure", "call", "input_schema"]

MAX_LIMIT = 200
"""The most messages one tool call returns."""


class ToolFailure(Exception):
    """A tool call that could not be done: a code and one sentence for the agent."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of the tools' arguments: unknown arguments are refused."""


Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT, description="at most this many messages")]
Body = Annotated[str, msgspec.Meta(min_length=1, description="the message text")]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[Args]
    run: Callable[[Agent, Any], Awaitable[dict[str, Any]]]


TOOLS: dict[str, Tool] = {}


def tool(name: str, description: str, args: type[Args]) -> Callable[[Any], Any]:
    def add(run: Callable[[Agent, Any], Awaitable[dict[str, Any]]]) -> Any:
        TOOLS[name] = Tool(name, description, args, run)
        return run

    return add


def input_schema(args: type[Args]) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, as MCP clients validate it: one object,
    optional fields simply absent, patterns in the ECMAScript dialect."""
    whole = msgspec.json.schema(args)
    schema: dict[str, Any] = whole["$defs"][args.__name__]
    schema.pop("title", None)
    schema.setdefault("properties", {})
    for name, prop in list(schema["properties"].items()):
        options = prop.get("anyOf")
        if options and {"type": "null"} in options:
            (kept,) = [o for o in options if o != {"type": "null"}]
            schema["properties"][name] = kept
        _ecma(schema["properties"][name])
    return schema


def _ecma(prop: dict[str, Any]) -> None:
    if "pattern" in prop:  # Python's end-of-string \Z is $ for JavaScript validators
        prop["pattern"] = re.sub(r"\\Z$", "$", prop["pattern"])


async def call(agent: Agent, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    """Run tool ``name``; raises :class:`ToolFailure` for anything it cannot do."""
    spec = TOOLS.get(name)
    if spec is None:
        raise ToolFailure(
            "unknown_tool", f"no tool named {name!r}: the tools are {', '.join(TOOLS)}"
        )
    try:
        args = msgspec.convert(arguments or {}, spec.args)
    except msgspec.ValidationError as err:
        raise ToolFailure("bad_argument", f"{err} (see the tool's input schema)") from None
    try:
        return await spec.run(agent, args)
    except NotReady as err:
        raise ToolFailure("not_connected", str(err)) from None
    except SendRefused as err:
        raise ToolFailure(err.code, err.message) from None
    except ConnectionLost as err:
        raise ToolFailure("connection_lost", f"{err.reason} ({err.code}); try again") from None
    except TimeoutError:
        raise ToolFailure(
            "timeout", "the hub did not answer in time (it may be restarting); try again"
        ) from None
    except ClientError as err:
        raise ToolFailure("client_error", str(err)) from None


def _messages(events: list[Event]) -> dict[str, Any]:
    return {"messages": [message(ev) for ev in events], "count": len(events)}


# ---------------------------------------------------------------------------- messaging


class SendArgs(Args):
    to: Annotated[Target, msgspec.Meta(description="a name on the channel, or '*' for everyone")]
    body: Body
    thread: Annotated[Thread, msgspec.Meta(description="a thread to file it under")] | None = None
    ref: (
        Annotated[
            Ref, msgspec.Meta(description="idempotency key: resending it stores nothing twice")
        ]
        | None
    ) = None


@tool(
    "send",
    "Send a message to another agent (or '*' for the whole channel); returns its seq once stored.",
    SendArgs,
)
async def _send(agent: Agent, a: SendArgs) -> dict[str, Any]:
    client = agent.connected()
    ok = await client.send(a.to, a.body, channel=agent.channel, thread=a.thread, ref=a.ref)
    out: dict[str, Any] = {"seq": ok.seq, "to": a.to, "channel": agent.channel}
    if ok.duplicate:
        out["duplicate"] = True
    if ok.online is not None:
        out["online"] = ok.online
    return out


class PostArgs(Args):
    thread: Annotated[Thread, msgspec.Meta(description="the thread, e.g. 'release/1.2'")]
    body: Body
    to: Annotated[Target, msgspec.Meta(description="one agent, or '*' (default) for everyone")] = (
        BROADCAST
    )


@tool(
    "post",
    "Post a message in a thread (to everyone on the channel unless 'to' names one agent).",
    PostArgs,
)
async def _post(agent: Agent, a: PostArgs) -> dict[str, Any]:
    client = agent.connected()
    ok = await client.send(a.to, a.body, channel=agent.channel, thread=a.thread)
    return {"seq": ok.seq, "thread": a.thread, "to": a.to, "channel": agent.channel}


class InboxArgs(Args):
    unread_only: Annotated[
        bool, msgspec.Meta(description="only messages not yet read (default)")
    ] = True
    limit: Limit = 20


@tool(
    "inbox",
    "Your direct messages, oldest first; unread ones are marked read (the sender is told).",
    InboxArgs,
)
async def _inbox(agent: Agent, a: InboxArgs) -> dict[str, Any]:
    if a.unread_only:
        return _messages(await agent.take_mail(a.limit))
    return _messages(await agent.recent_mail(a.limit))


class WaitArgs(Args):
    timeout_s: Annotated[
        float, msgspec.Meta(ge=0, le=MAX_WAIT, description="seconds to wait at most (≤ 600)")
    ] = 60.0
    limit: Limit = 20


@tool(
    "wait",
    "Block until a message for you arrives (returns at once if one is unread), or return an "
    "empty list after timeout_s; what it returns is marked read. Call it in a loop to listen.",
    WaitArgs,
)
async def _wait(agent: Agent, a: WaitArgs) -> dict[str, Any]:
    return _messages(await agent.wait_mail(a.timeout_s, a.limit))


class ReadThreadArgs(Args):
    thread: Annotated[Thread, msgspec.Meta(description="the thread to read")]
    last: Limit = 20


@tool("read_thread", "The last messages of a thread, oldest first.", ReadThreadArgs)
async def _read_thread(agent: Agent, a: ReadThreadArgs) -> dict[str, Any]:
    client = agent.connected()
    page = await client.history(channel=agent.channel, thread=a.thread, limit=a.last)
    return {**_messages(page.events), "thread": a.thread, "more": page.more}


class NoArgs(Args):
    pass


@tool("threads", "The threads of your channel, most recently active first.", NoArgs)
async def _threads(agent: Agent, a: NoArgs) -> dict[str, Any]:
    client = agent.connected()
    result = await client.threads(agent.channel)
    return {"threads": [msgspec.to_builtins(t) for t in result.threads]}


class RosterArgs(Args):
    channel: Annotated[Channel, msgspec.Meta(description="another channel than yours")] | None = (
        None
    )


@tool(
    "roster",
    "Who is on the channel: connected agents and registered members (model, role, host, up/down).",
    RosterArgs,
)
async def _roster(agent: Agent, a: RosterArgs) -> dict[str, Any]:
    client = agent.connected()
    result = await client.roster(a.channel or agent.channel)
    return {
        "channel": result.channel,
        "online": [msgspec.to_builtins(m) for m in result.members],
        "registered": [msgspec.to_builtins(m) for m in result.registered],
    }


class HistoryArgs(Args):
    from_: Annotated[Name, msgspec.Meta(description="only from this sender")] | None = (
        msgspec.field(default=None, name="from")
    )
    to: Annotated[Target, msgspec.Meta(description="only to this name (or '*')")] | None = None
    thread: Annotated[Thread, msgspec.Meta(description="only in this thread")] | None = None
    after: (
        Annotated[int, msgspec.Meta(ge=0, description="only after this seq (oldest first)")] | None
    ) = None
    before: Annotated[int, msgspec.Meta(ge=0, description="only before this seq")] | None = None
    limit: Limit = 20
    channel: Annotated[Channel, msgspec.Meta(description="another channel than yours")] | None = (
        None
    )


@tool(
    "history",
    "Stored messages of the channel, filtered; the latest 'limit' unless 'after' is given.",
    HistoryArgs,
)
async def _history(agent: Agent, a: HistoryArgs) -> dict[str, Any]:
    client = agent.connected()
    page = await client.history(
        channel=a.channel or agent.channel,
        to=a.to,
        from_=a.from_,
        thread=a.thread,
        after=a.after,
        before=a.before,
        limit=a.limit,
    )
    return {**_messages(page.events), "more": page.more}


class ReceiptsArgs(Args):
    seq: (
        Annotated[int, msgspec.Meta(ge=1, description="one message of yours, by its seq")] | None
    ) = None


@tool(
    "receipts",
    "What recipients did with your recent messages: read, submitted into their session, "
    "failed... (since this server started), newest first.",
    ReceiptsArgs,
)
async def _receipts(agent: Agent, a: ReceiptsArgs) -> dict[str, Any]:
    agent.connected()
    seqs = [a.seq] if a.seq is not None else list(reversed(agent.receipts))
    return {"receipts": [{"seq": s, "by": agent.receipts.get(s, {})} for s in seqs]}


# ---------------------------------------------------------------------------- file leases


def _lease(lease: Lease) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(lease)
    out["since"], out["until"] = stamp(lease.since), stamp(lease.until)
    return out


LeasePaths = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=512)]],
    msgspec.Meta(
        min_length=1,
        max_length=32,
        description="paths or globs relative to the repository root, e.g. 'src/parser/**'",
    ),
]


class ReserveArgs(Args):
    paths: LeasePaths
    ttl_s: Annotated[float, msgspec.Meta(ge=1, le=86_400, description="seconds (≤ 86400)")] = 1800.0
    exclusive: Annotated[bool, msgspec.Meta(description="false: a shared lease (readers)")] = True
    reason: (
        Annotated[str, msgspec.Meta(max_length=128, description="why, shown to whoever is refused")]
        | None
    ) = None


@tool(
    "reserve",
    "Lease files before editing them so other agents know (refused, naming the holder, "
    "if another agent holds an overlapping exclusive lease). Renew by reserving again.",
    ReserveArgs,
)
async def _reserve(agent: Agent, a: ReserveArgs) -> dict[str, Any]:
    client = agent.connected()
    got = await client.reserve(
        a.paths, a.ttl_s, exclusive=a.exclusive, reason=a.reason, channel=agent.channel
    )
    return {"lease": _lease(got.lease), "renewed": got.renewed}


class ReleaseArgs(Args):
    paths: Annotated[
        list[str], msgspec.Meta(max_length=100, description="the paths a lease was taken on")
    ] = []
    id: Annotated[int, msgspec.Meta(ge=1, description="one lease by its id")] | None = None


@tool(
    "release",
    "End your file leases: one by id, those on exactly these paths, or (neither) all.",
    ReleaseArgs,
)
async def _release(agent: Agent, a: ReleaseArgs) -> dict[str, Any]:
    client = agent.connected()
    got = await client.release(ids=[a.id] if a.id else [], paths=a.paths, channel=agent.channel)
    return {"released": [_lease(x) for x in got.leases]}


class ReservationsArgs(Args):
    path_prefix: (
        Annotated[str, msgspec.Meta(max_length=512, description="only paths starting with it")]
        | None
    ) = None


@tool(
    "reservations",
    "The file leases in force on your channel: who holds which paths, why, until when.",
    ReservationsArgs,
)
async def _reservations(agent: Agent, a: ReservationsArgs) -> dict[str, Any]:
    client = agent.connected()
    got = await client.leases(agent.channel, prefix=a.path_prefix)
    return {"leases": [_lease(x) for x in got.leases]}


@tool("whoami", "Your name, channel and hub, and whether the hub is reachable now.", NoArgs)
async def _whoami(agent: Agent, a: NoArgs) -> dict[str, Any]:
    return agent.whoami()
