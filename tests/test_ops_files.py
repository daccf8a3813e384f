"""The operations files (docs/OPERATIONS.md): the Grafana dashboard, the Prometheus
alerting rules and the systemd units parse, name only metrics the hub exports (with
their labels), and use only real flags and settings."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from wsbus.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DASHBOARD = DOCS / "grafana" / "wsbus.json"
ALERTS = DOCS / "prometheus" / "alerts.yml"
ALERTS_TEST = DOCS / "prometheus" / "alerts_test.yml"
HUB_UNIT = DOCS / "systemd" / "wsbus-hub.service"
BRIDGE_UNIT = DOCS / "systemd" / "wsbus-bridge.service"
ENV_FILES = [DOCS / "systemd" / "wsbus-hub.env", DOCS / "systemd" / "wsbus-bridge.env"]
OPERATIONS = DOCS / "OPERATIONS.md"

#: what `/metrics` exports (docs/OPERATIONS.md, "Metrics"): name -> its labels
METRICS: dict[str, set[str]] = {
    "wsbus_info": {"version", "engine", "hub"},
    "wsbus_healthy": set(),
    "wsbus_connections": {"kind"},
    "wsbus_events_in_total": {"channel"},
    "wsbus_events_out_total": {"channel"},
    "wsbus_deliveries_total": set(),
    "wsbus_slow_consumer_disconnects_total": set(),
    "wsbus_auth_failures_total": {"reason"},
    "wsbus_rate_limited_total": {"transport"},
    "wsbus_longpolls_pending": set(),
    "wsbus_receipts_total": {"status"},
    "wsbus_bridge_injections_total": {"outcome"},
    "wsbus_pending_deliveries": set(),
    "wsbus_engine_lag_events": set(),
    "wsbus_store_bytes": set(),
    # prometheus_client's process collector
    "process_start_time_seconds": set(),
    "process_resident_memory_bytes": set(),
    "process_cpu_seconds_total": set(),
    "process_open_fds": set(),
    "process_max_fds": set(),
    # Prometheus's own, per scrape target
    "up": set(),
}
HISTOGRAMS = {"wsbus_delivery_latency_seconds", "wsbus_commit_seconds"}
for _h in HISTOGRAMS:
    METRICS[f"{_h}_bucket"] = {"le"}
    METRICS[f"{_h}_count"] = set()
    METRICS[f"{_h}_sum"] = set()
#: labels Prometheus adds to every series of a target
TARGET_LABELS = {"job", "instance"}

#: the PromQL words the files use that are not metrics
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "by", "without", "and", "or", "unless",
    "rate", "increase", "deriv", "delta", "irate", "histogram_quantile", "time",
    "vector", "min_over_time", "max_over_time", "label_values", "on", "ignoring",
}  # fmt: skip


def _strip(expr: str) -> str:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, $__rate_interval included
    return expr


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression uses."""
    s = _strip(expr)
    labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", "".join(
        re.findall(r"\{[^}]*\}", s)
    )))  # fmt: skip
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", s):
        labels |= {w.strip() for w in group.split(",") if w.strip()}
    bare = re.sub(r"\{[^}]*\}", "", s)
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    words = set(re.findall(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return words - PROMQL_WORDS, labels


def check_expr(expr: str, where: str) -> set[str]:
    metrics, labels = names_and_labels(expr)
    unknown = metrics - METRICS.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not exported by the hub: {expr}"
    allowed = TARGET_LABELS.union(*(METRICS[m] for m in metrics))
    assert labels <= allowed, f"{where}: labels {sorted(labels - allowed)} unknown: {expr}"
    return metrics


def test_the_checker_catches_mistakes() -> None:
    with pytest.raises(AssertionError, match="wsbus_events_total"):
        check_expr("rate(wsbus_events_total[5m])", "x")
    with pytest.raises(AssertionError, match="status"):
        check_expr('sum by (status) (rate(wsbus_bridge_injections_total{job="a"}[5m]))', "x")
    quantile = (
        "histogram_quantile(0.99, sum by (le, instance) "
        '(rate(wsbus_commit_seconds_bucket{job="$job"}[$__rate_interval])))'
    )
    assert check_expr(quantile, "x") == {"wsbus_commit_seconds_bucket"}


# ---------------------------------------------------------------------- Prometheus


def test_alert_rules() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "WsbusHubDown",
        "WsbusDegraded",
        "WsbusEngineLagGrowing",
        "WsbusSlowConsumers",
        "WsbusAuthFailureSpike",
        "WsbusCommitLatencyHigh",
        "WsbusPendingDeliveriesGrowing",
        "WsbusFileDescriptorsNearLimit",
    } <= names
    used: set[str] = set()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
        used |= check_expr(rule["expr"], rule["alert"])
        for text in rule["annotations"].values():  # {{ $labels.x }} must survive the expr
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in names_and_labels(rule["expr"])[1] | TARGET_LABELS, (
                    rule["alert"],
                    label,
                )
    assert {"up", "wsbus_healthy", "process_open_fds", "process_max_fds"} <= used


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    for cmd in (["check", "rules", ALERTS], ["test", "rules", ALERTS_TEST]):
        cp = subprocess.run(
            ["promtool", *map(str, cmd)], capture_output=True, text=True, check=False
        )
        assert cp.returncode == 0, cp.stdout + cp.stderr


# ---------------------------------------------------------------------- Grafana


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def test_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (ds,) = dashboard["__inputs"]
    assert ds["name"] == "DS_PROMETHEUS" and ds["pluginId"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"]
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
            used |= check_expr(t["expr"], p["title"])
    for var in dashboard["templating"]["list"]:
        assert var["datasource"]["uid"] == "${DS_PROMETHEUS}"
        (metric,) = re.findall(r"label_values\((\w+)", var["definition"])
        assert metric in METRICS
    # every metric of the hub has a panel
    exported = {m for m in METRICS if m != "up"} - {
        f"{h}_{s}" for h in HISTOGRAMS for s in ("count", "sum")
    }
    assert exported - used == set(), sorted(exported - used)


# ---------------------------------------------------------------------- systemd


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections: [(key, value)] in order (keys repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    (v,) = values(section, key)
    return v


def _environment(section: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in values(section, "Environment"):
        for word in shlex.split(line):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def _parses(command: str, flags: str) -> None:
    """``wsbus COMMAND FLAGS`` is accepted by wsbus's own parser."""
    try:
        build_parser().parse_args([command, *shlex.split(flags)])
    except SystemExit as err:  # pragma: no cover - the failure's message
        raise AssertionError(f"wsbus {command} {flags}: refused") from err


def test_hub_unit() -> None:
    u = unit(HUB_UNIT)
    s = u["Service"]
    exec_start = shlex.split(one(s, "ExecStart"))
    assert exec_start[0].endswith("/wsbus") and exec_start[1] == "serve"
    assert exec_start[2:] == ["$SERVE_FLAGS"]
    _parses("serve", _environment(s)["SERVE_FLAGS"])
    assert one(s, "Restart") == "on-failure"
    assert one(s, "KillSignal") == "SIGTERM"
    assert int(one(s, "TimeoutStopSec")) >= 15  # busy_timeout (5 s) + closing (3 s)
    assert one(s, "LimitNOFILE") == "65536"
    assert one(s, "StateDirectory") == "wsbus"
    assert "/var/lib/wsbus" in values(s, "ReadWritePaths")
    for key, want in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "User": "wsbus",
    }.items():
        assert one(s, key) == want, key
    assert one(s, "ProtectHome") in ("yes", "read-only")
    env = _environment(s)
    # the data directory is the state directory
    assert env["XDG_DATA_HOME"] + "/wsbus" == "/var/lib/wsbus"
    assert one(s, "EnvironmentFile").lstrip("-") == "/etc/wsbus/hub.env"
    assert one(u["Install"], "WantedBy") == "multi-user.target"


def test_bridge_unit() -> None:
    u = unit(BRIDGE_UNIT)
    s = u["Service"]
    exec_start = shlex.split(one(s, "ExecStart"))
    assert exec_start[0] == "%h/.local/bin/wsbus" and exec_start[1] == "bridge"
    assert exec_start[2:] == ["$BRIDGE_FLAGS"]
    assert one(s, "KillMode") == "process"  # the tmux server a revive_cmd started lives on
    assert one(s, "Restart") == "on-failure"
    # the user's tmux socket is in /tmp; revived agents inherit any sandbox
    assert not values(s, "PrivateTmp") and not values(s, "NoNewPrivileges")
    assert not values(s, "User")  # a user unit runs as its user
    assert one(u["Install"], "WantedBy") == "default.target"


def _source_literals() -> str:
    return "\n".join(
        p.read_text() for d in ("wsbus", "cli", "compat") for p in (ROOT / d).rglob("*.py")
    )


def test_env_files_name_real_settings_and_flags() -> None:
    """Every variable in the example environment files (commented out or not) is one
    wsbus reads, and the flags in SERVE_FLAGS / BRIDGE_FLAGS parse."""
    source = _source_literals()
    for path in ENV_FILES:
        seen = 0
        for raw in path.read_text().splitlines():
            m = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", raw.strip())
            if not m:
                continue
            name, value = m.groups()
            seen += 1
            if name in ("SERVE_FLAGS", "BRIDGE_FLAGS"):
                _parses("serve" if name == "SERVE_FLAGS" else "bridge", value)
                continue
            assert f'"{name}"' in source, f"{path.name}: nothing reads {name}"
        assert seen >= 5, path


def test_operations_guide_links() -> None:
    """The guide links the files it describes, and each link to this repository
    resolves."""
    text = OPERATIONS.read_text()
    for f in (DASHBOARD, ALERTS, HUB_UNIT, BRIDGE_UNIT, *ENV_FILES):
        assert f.relative_to(DOCS).as_posix() in text, f
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (OPERATIONS.parent / target).exists(), target
