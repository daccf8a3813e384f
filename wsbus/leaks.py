"""Credentials in message bodies: what ``wsbus serve --block-secrets`` refuses.

Pure and synchronous, no I/O: :func:`find_secret` names the first kind of
credential a body seems to carry (a private-key block, a cloud or service API
key, a password in a URL, a wsbus token…), or returns None; the hub refuses such
a body with :func:`refusal_message`, which tells the sender to send a reference
instead (``wsbus send --attach FILE``: the file's path, size and sha256).

The patterns are detect-secrets' regex plugins that identify real credentials,
used as they are where that is safe. Left out: its entropy and keyword plugins,
the public-IP one and the keyword-anchored IBM, Cloudant, SoftLayer and
Artifactory ones (too noisy for chat between agents, which is full of digests,
ids and code). Rewritten to the same shapes: JWT, npm and OpenAI (their stock
patterns take seconds on 64 KiB of hostile input), private keys (the stock ones
flag a PEM header without a key, and coding agents talk about PEM headers),
Telegram (not a hex digest after a number) and Mailchimp (speed). Added: what
agents paste and detect-secrets lacks (Anthropic, Google, Hugging Face, GitHub
fine-grained and npm tokens, and wsbus's own). A password in a URL that is a
placeholder (``<password>``, ``{pw}``) does not count.

Every pattern is compiled once, at import. A scan takes time linear in the
body's length, hostile bodies included (tests/test_leaks.py times them): each
pattern has a bounded length, or starts only where a token or URL starts, and
possessive quantifiers leave nothing to backtrack into. About 2 ms for 64 KiB of
prose, 10 µs for a chat line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from detect_secrets.filters.heuristic import is_templated_secret
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

__all__ = ["KINDS", "find_secret", "refusal_message"]


class _Rule(NamedTuple):
    kind: str  # what find_secret reports
    pattern: re.Pattern[str]
    #: lowercase text in every match, looked for in the lowercased body before the
    #: pattern runs (cheaper than a case-insensitive search, which has no literal prefix)
    needle: str | None = None
    #: a second check of each match
    valid: Callable[[re.Match[str]], bool] | None = None


def _each(kind: str, *patterns: str | re.Pattern[str]) -> tuple[_Rule, ...]:
    return tuple(_Rule(kind, re.compile(p)) for p in patterns)


def _jwt_valid(m: re.Match[str]) -> bool:
    """Header and payload decode to JSON."""
    return bool(JwtTokenDetector.is_formally_valid(m.group()))


def _real_password(m: re.Match[str]) -> bool:
    """Not a placeholder such as ``<password>``, ``{pw}`` or ``${PW}``."""
    return not is_templated_secret(m.group(1))


#: the armor line of a PEM, OpenSSH, PGP or SSH2 key (every header detect-secrets knows,
#: and ENCRYPTED PRIVATE KEY), its header lines (Proc-Type, DEK-Info, Version, Comment),
#: then a line of key material; the newlines may be escaped (a key inside JSON)
_PEM_BLOCK = (
    r"BEGIN (?:[A-Z0-9]++ ){0,3}PRIVATE KEY(?: BLOCK)?[ -]{0,6}"
    r"(?:(?:\\[rn]|\s)++[A-Za-z-]{1,30}:[^\n\\]{0,300}+){0,4}"
    r"(?:\\[rn]|\s)++[A-Za-z0-9+/]{40}"
)

# A pattern that begins with its literal is searched for that literal first (fast); so
# "starts a token" is a lookbehind placed after the literal, not before it.
_RULES: tuple[_Rule, ...] = (
    *_each("private key", _PEM_BLOCK, r"PuTTY-User-Key-File-[0-9]{1,2}:"),
    _Rule("AWS access key", AWSKeyDetector.denylist[0]),
    _Rule("AWS secret access key", AWSKeyDetector.denylist[1], needle="aws"),
    *_each("Azure storage account key", *AzureStorageKeyDetector.denylist),
    *_each(
        "GitHub token",
        *GitHubTokenDetector.denylist,
        r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}",  # fine-grained
    ),
    *_each("GitLab token", *GitLabTokenDetector.denylist),
    *_each("Anthropic API key", r"sk-ant-[a-z]{2,10}[0-9]{2}-[A-Za-z0-9_-]{32}"),
    *_each(
        "OpenAI API key",
        r"sk-(?<![A-Za-z0-9_-]sk-)[A-Za-z0-9_-]{0,300}?[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}",
    ),
    *_each("Google API key", r"AIza[0-9A-Za-z_-]{35}"),
    *_each("Hugging Face token", r"hf_(?<![A-Za-z0-9_]hf_)[A-Za-z]{34}(?![A-Za-z0-9_])"),
    _Rule("Slack token", SlackDetector.denylist[0], needle="xox"),
    _Rule("Slack webhook URL", SlackDetector.denylist[1], needle="hooks.slack.com"),
    _Rule("Stripe key", StripeDetector.denylist[0], needle="k_live_"),
    *_each("SendGrid API key", *SendGridDetector.denylist),
    *_each("Twilio API key", *TwilioKeyDetector.denylist),
    *_each("Square OAuth secret", *SquareOAuthDetector.denylist),
    *_each("Mailchimp API key", r"-us(?<=[0-9a-z]{32}-us)[0-9]{1,2}"),
    *_each("Discord bot token", *DiscordBotTokenDetector.denylist),
    *_each("Telegram bot token", r":(?<=[0-9]{8}:)[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    *_each("PyPI token", *PypiTokenDetector.denylist),
    *_each(
        "npm token",
        r"_authToken=[ \t]*+(?:npm_[A-Za-z0-9]{36}|[A-Fa-f0-9-]{36})",  # .npmrc
        r"npm_(?<![A-Za-z0-9_]npm_)[A-Za-z0-9]{36}(?![A-Za-z0-9])",
    ),
    _Rule(
        "JSON web token",
        re.compile(r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]++={0,2}\.[A-Za-z0-9_-]++={0,2}"),
        valid=_jwt_valid,
    ),
    # wsbus.auth: wsbus_<id: 8 hex>_<secret: token_urlsafe(32)>
    *_each("wsbus token", r"wsbus_[0-9a-f]{8}_[A-Za-z0-9_-]{16}"),
    *(_Rule("password in a URL", p, valid=_real_password) for p in BasicAuthDetector.denylist),
)

#: every kind :func:`find_secret` can report, in the order it looks for them
KINDS: tuple[str, ...] = tuple(dict.fromkeys(rule.kind for rule in _RULES))


def _matches(rule: _Rule, text: str) -> bool:
    if rule.valid is None:
        return rule.pattern.search(text) is not None
    return any(rule.valid(m) for m in rule.pattern.finditer(text))


def find_secret(text: str) -> str | None:
    """The kind of the first credential ``text`` seems to carry (in :data:`KINDS`'
    order, e.g. ``"private key"``, ``"AWS access key"``), or None."""
    lowered: str | None = None
    for rule in _RULES:
        if rule.needle is not None:
            lowered = text.lower() if lowered is None else lowered
            if rule.needle not in lowered:
                continue
        if _matches(rule, text):
            return rule.kind
    return None


def refusal_message(kind: str) -> str:
    """Why a body of this kind is refused, and what to send instead, in one sentence."""
    article = "an" if kind.lower().startswith(("a", "e", "i", "o", "u", "npm")) else "a"
    return (
        f"body looks like it carries {article} {kind}; secrets stay off the bus: "
        "send a reference instead (wsbus send --attach FILE sends its path, size and sha256)"
    )
