"""Credentials in message bodies (wsbus.leaks), without sockets.

Every sample is assembled at run time from harmless pieces, so that this file does
not itself look like it leaks anything.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from hypothesis import given, settings
from hypothesis import strategies as st

from wsbus.auth import TokenStore
from wsbus.leaks import KINDS, find_secret, refusal_message

# ------------------------------------------------------------------ fake credentials


def b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def key_material(n: int = 64) -> str:
    """A line shaped like base64 key material (not a key)."""
    return ("MII" + "Ab0+/" * n)[:n]


def pem(header: str, *extra_lines: str) -> str:
    lines = [f"-----{header}-----", *extra_lines, key_material(), key_material(30)]
    end = header.replace("BEGIN", "END")
    return "\n".join([*lines, f"-----{end}-----"])


JWT = ".".join(
    [b64url({"alg": "HS256", "typ": "JWT"}), b64url({"sub": "agent", "iat": 1}), "s" * 43]
)

#: kind -> bodies that carry one (in a sentence, as an agent would paste it)
SAMPLES: dict[str, list[str]] = {
    "private key": [
        pem("BEGIN RSA " + "PRIVATE KEY"),
        pem("BEGIN " + "PRIVATE KEY"),
        pem("BEGIN ENCRYPTED " + "PRIVATE KEY"),
        pem("BEGIN OPENSSH " + "PRIVATE KEY"),
        pem("BEGIN EC " + "PRIVATE KEY"),
        pem("BEGIN RSA " + "PRIVATE KEY", "Proc-Type: 4,ENCRYPTED", "DEK-Info: AES-128-CBC,0F", ""),
        pem("BEGIN PGP " + "PRIVATE KEY BLOCK", "Version: GnuPG v2", ""),
        "here it is:\r\n" + pem("BEGIN DSA " + "PRIVATE KEY").replace("\n", "\r\n"),
        # inside JSON (a service-account file): the newlines are escaped
        json.dumps({"private_key": pem("BEGIN " + "PRIVATE KEY") + "\n"}),
        "pasted on one line: " + pem("BEGIN RSA " + "PRIVATE KEY").replace("\n", " "),
        "---- BEGIN SSH2 ENCRYPTED " + "PRIVATE KEY ----\nComment: k\n" + key_material(),
        "PuTTY-User-Key-File-" + "3: ssh-ed25519\nEncryption: none\n",
    ],
    "AWS access key": ["aws_access_key_id = " + "AKIA" + "X" * 16, "key ASIA" + "Q7" * 8 + " ok"],
    "AWS secret access key": ['AWS_SECRET_ACCESS_KEY="' + "wJalr" * 8 + '"'],
    "Azure storage account key": ["AccountName=x;" + "AccountKey=" + "Ab9+" * 22 + ";"],
    "GitHub token": [
        "token: " + "gh" + "p_" + "a1B2" * 9,
        "GH_TOKEN=" + "gh" + "s_" + "Z" * 36,
        "github" + "_pat_" + "A" * 22 + "_" + "b" * 59,
    ],
    "GitLab token": ["glpat" + "-" + "x1Y2z" * 4],
    "Anthropic API key": [
        "ANTHROPIC_API_KEY=" + "sk-" + "ant-api03-" + "aB3_-" * 18 + "xyzAA",
        "oauth " + "sk-" + "ant-oat01-" + "q" * 40,
    ],
    "OpenAI API key": [
        "OPENAI_API_KEY=" + "sk-" + "a1" * 10 + "T3Blbk" + "FJ" + "b2" * 10,
        "sk-" + "proj-" + "Ab_-" * 12 + "c" * 20 + "T3Blbk" + "FJ" + "d" * 20 + "e" * 30,
    ],
    "Google API key": ['"key": "' + "AI" + "za" + "Sy" + "b" * 33 + '"'],
    "Hugging Face token": ["HF_TOKEN=" + "hf" + "_" + "aBcD" * 8 + "xy"],
    "Slack token": ["SLACK_BOT_TOKEN=" + "xo" + "xb-" + "1234567890-1234567890-" + "abc1" * 6],
    "Slack webhook URL": ["post to https://hooks.slack.com/services/" + "T0A0A/B1C1C/" + "x" * 24],
    "Stripe key": ["STRIPE=" + "s" + "k_live_" + "4eC3" * 6, "r" + "k_live_" + "Z" * 24],
    "SendGrid API key": ["SG" + "." + "a" * 22 + "." + "b" * 43],
    "Twilio API key": ["sid " + "A" + "C" + "a1" * 16, "S" + "K" + "0f" * 16],
    "Square OAuth secret": ["sq0" + "csp-" + "a" * 43],
    "Mailchimp API key": ["MAILCHIMP=" + "0a1b" * 8 + "-us" + "12"],
    "Discord bot token": ["M" + "a" * 23 + "." + "b" * 6 + "." + "c" * 27],
    "Telegram bot token": ["bot " + "123456789" + ":" + "AAH" + "x" * 32],
    "PyPI token": ["password = " + "pypi-" + "AgEIcHlwaS5vcmc" + "x" * 70],
    "npm token": [
        "//registry.npmjs.org/:" + "_authToken=" + "npm_" + "k" * 36,
        "//registry.npmjs.org/:" + "_authToken=" + "0123abcd-" * 4,
        "NPM_TOKEN=" + "npm" + "_" + "a1B2" * 9,
    ],
    "JSON web token": ["Authorization: Bearer " + JWT, "cookie=" + JWT + ";"],
    "wsbus token": ["WSBUS_TOKEN=" + "wsbus_" + "3f9a1c2e" + "_" + "Ab_-" * 10 + "xyz"],
    "password in a URL": [
        "clone https://" + "bob" + ":" + "hunter2hunter2" + "@git.example.com/repo.git",
        "DATABASE_URL=postgres://" + "app" + ":" + "s3cr3t" + "@db:5432/app",
    ],
}

#: detect-secrets' plugin for each kind it also knows: our samples are its shapes too
PLUGINS: dict[str, type[RegexBasedDetector]] = {
    "private key": PrivateKeyDetector,
    "AWS access key": AWSKeyDetector,
    "AWS secret access key": AWSKeyDetector,
    "GitHub token": GitHubTokenDetector,
    "Azure storage account key": AzureStorageKeyDetector,
    "GitLab token": GitLabTokenDetector,
    "OpenAI API key": OpenAIDetector,
    "Slack token": SlackDetector,
    "Slack webhook URL": SlackDetector,
    "Stripe key": StripeDetector,
    "SendGrid API key": SendGridDetector,
    "Twilio API key": TwilioKeyDetector,
    "Square OAuth secret": SquareOAuthDetector,
    "Mailchimp API key": MailchimpDetector,
    "Discord bot token": DiscordBotTokenDetector,
    "Telegram bot token": TelegramBotTokenDetector,
    "PyPI token": PypiTokenDetector,
    "npm token": NpmDetector,
    "JSON web token": JwtTokenDetector,
    "password in a URL": BasicAuthDetector,
}

#: samples of shapes detect-secrets does not know (ours are a superset of its shapes)
BEYOND_DETECT_SECRETS = (
    "BEGIN ENCRYPTED " + "PRIVATE KEY",
    "PuTTY-User-Key-File-" + "3",
    "github" + "_pat_",
    "NPM_TOKEN=",
)

# ------------------------------------------------------------------ ordinary chatter

SHA256 = "3f9c0e1a2b4d" * 5 + "9a8b7c6d"
GIT_SHA = "ee2fe7f" + "0a1b2c3d4e" * 3 + "012"

CHATTER = [
    "the build is green",
    "codex: is anyone else touching lexer.py? I'm on parser.py, 14 tests, 3 failing",
    f"attach: /home/me/out/hits.csv size=1234 sha256={SHA256} host=build1",
    f"wsbus send --as alice bob --attach ./hits.csv 'results'  # sha256={SHA256}",
    f"verified: OK /tmp/hits.csv sha256={SHA256} size=1234",
    f"merged as {GIT_SHA} (short {GIT_SHA[:7]}); see https://github.com/org/repo/pull/12",
    "ref 0b4c1f2e-8d7a-4e3b-9c1d-2f3a4b5c6d7e resent, duplicate=true",
    "UUIDs: 123e4567-e89b-12d3-a456-426614174000, 550e8400-e29b-41d4-a716-446655440000",
    "hub at ws://127.0.0.1:8765, shim at http://127.0.0.1:8080/messages?after=12",
    "git remote: git@github.com:org/repo.git or ssh://git@github.com:22/org/repo.git",
    "postgres://db.example.com:5432/app?sslmode=require and https://user@example.com/x",
    "connect with postgres://<user>:<password>@localhost/app (fill in your own)",
    "https://{user}:{password}@host/path is the template; the real one comes from vault",
    "export GITHUB_TOKEN=${GITHUB_TOKEN:?unset}; the key is in $AWS_SECRET_ACCESS_KEY",
    "seq 12345678: stored at 2026-11-21T14:02:11.532Z",
    f"12345678:{SHA256}",
    "the loader checks for '-----BEGIN RSA " + "PRIVATE KEY-----' and then base64",
    pem("BEGIN RSA " + "PRIVATE KEY").split("\n")[0] + "\nMIIE...(elided)\n-----END RSA",
    "def scan(text: str) -> str | None:\n    for rule in RULES:\n        if rule.search(text):\n"
    "            return rule.kind\n    return None\n",
    "diff --git a/cli/send.py b/cli/send.py\n@@ -1,3 +1,4 @@\n+import hashlib\n",
    "base64 of a PNG: iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
    "WjR9awAAAABJRU5ErkJggg==",
    "sk-learn is scikit-learn; task ids like TASK-1234 and AC-42 are fine",
    "AWS region us-east-1, bucket s3://my-bucket/key/path, aws s3 cp key.txt .",
    "eyJ is how base64 of a JSON object starts; eyJhbGciOiJIUzI1NiJ9 alone is only a header",
    "python -m pytest tests/test_leaks.py -q  # 42 passed in 0.51s",
    "日本語のメッセージ ✓ 🚀 — ümlauts too",
]


# ------------------------------------------------------------------ detection


def test_every_kind_has_samples() -> None:
    assert set(SAMPLES) == set(KINDS)


@pytest.mark.parametrize(
    ("kind", "body"), [(k, b) for k, bodies in SAMPLES.items() for b in bodies]
)
def test_each_kind_is_found(kind: str, body: str) -> None:
    assert find_secret(body) == kind
    assert find_secret(f"hi bob,\nhere you go:\n{body}\nthanks") == kind


@pytest.mark.parametrize("kind", sorted(PLUGINS))
def test_samples_have_detect_secrets_shapes(kind: str) -> None:
    plugin = PLUGINS[kind]()
    for body in SAMPLES[kind]:
        if any(shape in body for shape in BEYOND_DETECT_SECRETS):
            continue
        assert list(plugin.analyze_string(body)), (kind, body)


def test_every_private_key_header_detect_secrets_knows() -> None:
    for pattern in PrivateKeyDetector.denylist:
        header = pattern.pattern
        if header.startswith("BEGIN"):
            assert find_secret(pem(header)) == "private key", header
            assert find_secret(f"-----{header}-----") is None, header  # no key: no leak


def test_a_real_wsbus_token(tmp_path: Path) -> None:
    token = TokenStore(tmp_path / "tokens.json").load().create("alice")
    assert find_secret(f"use {token} to connect") == "wsbus token"


@pytest.mark.parametrize("body", CHATTER)
def test_ordinary_chatter_is_not_flagged(body: str) -> None:
    assert find_secret(body) is None


def test_tokens_glued_inside_longer_words_are_not_flagged() -> None:
    hf = "hf" + "_" + "a" * 34
    assert find_secret(hf) == "Hugging Face token"
    assert find_secret("x" + hf) is None
    assert find_secret(hf + "b") is None
    npm = "npm" + "_" + "a" * 36
    assert find_secret("my_" + npm) is None


def test_first_kind_in_order() -> None:
    both = SAMPLES["password in a URL"][0] + "\n" + SAMPLES["private key"][0]
    assert find_secret(both) == "private key"
    assert KINDS[0] == "private key"


# ------------------------------------------------------------------ the refusal


@pytest.mark.parametrize("kind", KINDS)
def test_refusal_is_one_line_naming_the_kind_and_the_way_out(kind: str) -> None:
    msg = refusal_message(kind)
    assert "\n" not in msg
    assert kind in msg and "wsbus send --attach FILE" in msg and "sha256" in msg


def test_refusal_wording() -> None:
    assert refusal_message("private key") == (
        "body looks like it carries a private key; secrets stay off the bus: send a "
        "reference instead (wsbus send --attach FILE sends its path, size and sha256)"
    )
    assert "carries an AWS access key;" in refusal_message("AWS access key")
    assert "carries an npm token;" in refusal_message("npm token")


# ------------------------------------------------------------------ speed and hostile input

BIG = 64 * 1024


def fill(piece: str, size: int = BIG) -> str:
    return (piece * (size // len(piece) + 1))[:size]


def hostile_bodies() -> list[str]:
    pieces = [
        "-----BEGIN ",
        "BEGIN ",
        "BEGIN A ",
        "-----BEGIN RSA " + "PRIVATE KEY-----\n",
        "-----BEGIN RSA " + "PRIVATE KEY-----\\n",
        "a:",
        "a: ",
        "a: a\n",
        "eyJ",
        "eyJa.",
        "eyJ=",
        "eyJa==.",
        b64url({"a": 1}) + ".",
        "/",
        "//x/:_authToken=",
        "sk-",
        "sk- ",
        "sk-" + "a" * 300 + " ",
        "://",
        "://a",
        "https://a:b",
        "https://a:b@",
        "https://a:<b>@",
        "1",
        "12345678:",
        "xoxb-1-",
        "aws key ",
        "awspass'",
        "AKIA",
        "a",
        "M",
        "-us1",
        "wsbus_",
        "npm_",
        "hf_",
        "é",
    ]
    bodies = [fill(p) for p in pieces]
    bodies.append("BEGIN RSA " + "PRIVATE KEY-----\n" + fill("a: a: a: \n", BIG - 40))
    # every sample minus its last character, over and over: long almost-matches
    for samples in SAMPLES.values():
        for s in samples:
            bodies.append(fill(s[:-1] + " "))
            bodies.append(fill(s[: len(s) // 2]))
    return bodies


def test_hostile_bodies_scan_in_linear_time() -> None:
    # generous bound for a noisy machine: a quadratic blow-up takes seconds to minutes
    for body in hostile_bodies():
        start = time.perf_counter()
        find_secret(body)
        took = time.perf_counter() - start
        assert took < 1.0, (took, body[:40])


def test_ordinary_bodies_scan_fast() -> None:
    prose = fill(" ".join(CHATTER) + " ")
    line = CHATTER[1][:200]
    for body, bound in ((prose, 0.25), (line, 0.01)):
        took = min(_timed(body) for _ in range(5))
        assert took < bound, (took, len(body))


def _timed(body: str) -> float:
    start = time.perf_counter()
    assert find_secret(body) is None
    return time.perf_counter() - start


# ------------------------------------------------------------------ any text

ODD = "-BEGIN PRIVATEKY:/@\\n\n\r\t eyJ.=sk-ant_AKIAxob0123456789abcdefT3BlbkFJ\x00é\ud800🚀"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=ODD, max_size=2000)))
def test_never_raises(text: str) -> None:
    kind = find_secret(text)
    assert kind is None or kind in KINDS


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b for bodies in SAMPLES.values() for b in bodies]),
    st.text(alphabet=ODD, max_size=200),
    st.text(alphabet=ODD, max_size=200),
)
def test_found_wherever_it_sits(sample: str, before: str, after: str) -> None:
    assert find_secret(f"{before}\n{sample}\n{after}") is not None
