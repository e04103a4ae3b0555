"""The PromQL of monitoring/: its rules, its dashboard's queries, and the metric names they use.

``rule_metric_names()`` and ``dashboard_metric_names()`` are the raw metric names (what a
scrape must offer: no recording rule's ``level:metric:operations`` name) that the rules and
the dashboard read, for comparison against a real scrape. ``metric_names(expr)`` is the
tokenizer behind them; ``check_exprs`` parses expressions with promtool (as recording rules
of a temporary rules file), since PromQL has no parser in Python.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
ALERTS = MONITORING / "rules" / "georelay-alerts.yml"
RECORDING = MONITORING / "rules" / "georelay-recording.yml"
RULE_FILES = (RECORDING, ALERTS)
DASHBOARD = MONITORING / "dashboards" / "georelay-fleet.json"
UNIT_TESTS = MONITORING / "tests"

# Grafana's interval variables, replaced by a duration before an expression is parsed.
GRAFANA_DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                      "ignoring", "group_left", "group_right", "inf", "nan", "atan2"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_TOKEN = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*"
                    r"|[A-Za-z_:][A-Za-z0-9_:]*")


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would get it: $__rate_interval and friends become
    durations; other variables live in label values (strings), which stay as they are."""
    for name, duration in GRAFANA_DURATIONS.items():
        expr = expr.replace(f"${{{name}}}", duration).replace(f"${name}", duration)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (recording rule names included).

    What is left once strings, comments, label matchers, ranges and offsets' durations,
    grouping lists, Grafana variables, function and aggregation names (an identifier followed
    by ``(``), keywords and numbers are taken away."""
    text = _STRING.sub('""', expr)
    text = _COMMENT.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _GRAFANA_VAR.sub(" ", text)
    names = set()
    for m in _TOKEN.finditer(text):
        word = m.group()
        if not (word[0].isalpha() or word[0] in "_:"):
            continue  # a number or a duration
        if word.lower() in KEYWORDS or text[m.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def raw(names: Iterable[str]) -> set[str]:
    """The names a scrape provides: not those of recording rules (level:metric:operations)."""
    return {n for n in names if ":" not in n}


def load_rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a rules file, in order, each with its group's name under ``group``."""
    doc = yaml.safe_load(path.read_text())
    return [{**rule, "group": group["name"]} for group in doc["groups"]
            for rule in group["rules"]]


def alerting_rules() -> list[dict[str, Any]]:
    return [r for path in RULE_FILES for r in load_rules(path) if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for path in RULE_FILES for r in load_rules(path) if "record" in r]


def recording_names() -> set[str]:
    return {r["record"] for r in recording_rules()}


def rule_exprs() -> list[str]:
    return [str(r["expr"]) for path in RULE_FILES for r in load_rules(path)]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard's panel list, rows' panels included (collapsed or not)."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def dashboard_targets(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, query) of every panel target of the dashboard, as Grafana wrote it."""
    doc = load_dashboard(path)
    return [(p.get("title", ""), t["expr"]) for p in panels(doc.get("panels", []))
            for t in p.get("targets", []) if t.get("expr")]


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    """Every query of the dashboard (targets and templating), as Prometheus gets it."""
    doc = load_dashboard(path)
    exprs = [grafana_to_promql(e) for _, e in dashboard_targets(path)]
    for var in doc.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        m = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", text)
        if m:
            exprs.append(grafana_to_promql(m.group(1)))
    return exprs


def rule_metric_names() -> set[str]:
    """The raw metric names every rule of monitoring/rules reads."""
    return raw(n for e in rule_exprs() for n in metric_names(e))


def dashboard_metric_names() -> set[str]:
    """The raw metric names the dashboard's queries read (through recording rules not
    included: rule_metric_names() has those)."""
    return raw(n for e in dashboard_exprs() for n in metric_names(e))


def check_exprs(exprs: Iterable[str], promtool: str) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on a temporary file that records each expression: it parses
    every one (and fails, naming it, when one does not)."""
    rules = [{"record": f"georelay_check:expr_{i}:parsed", "expr": e}
             for i, e in enumerate(exprs)]
    with tempfile.TemporaryDirectory(prefix="georelay-promql-") as tmp:
        path = Path(tmp) / "exprs.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]},
                                       sort_keys=False))
        return check_rules([path], promtool)


def check_rules(paths: Iterable[Path], promtool: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, "check", "rules", *map(str, paths)], capture_output=True,
                          text=True, timeout=60, check=False)


def unit_test_files() -> list[Path]:
    return sorted(UNIT_TESTS.glob("*.yml"))
