"""monitoring/: the Prometheus rules pass promtool (and promtool can fail them), their unit
tests pass and cover every alert both firing and silent, every alert carries its severity,
annotations and an existing runbook, the dashboard's queries parse and read known metrics,
and the scrape contract holds against a real HAProxy scraped by a real Prometheus."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from georelay_testing import promql
from georelay_testing.fleet import REPO, require_program

RUNBOOKS = REPO / "docs" / "runbooks"
AGENT_METRICS = REPO / "agent" / "georelay_agent" / "metrics.py"
SCRAPE_EXAMPLE = promql.MONITORING / "prometheus" / "scrape-example.yml"
# Agent series being added beside metrics.py (the edge cache version, the ip-ranges map).
NEW_AGENT_NAMES = {"georelay_agent_edge_version",
                   "georelay_agent_ip_ranges_created_timestamp_seconds"}
FAMILIES = ("haproxy_", "georelay_agent_", "georelay_check_")
SEVERITIES = {"page", "ticket"}
# A runbook's "**Alert:**" paragraph (up to the next blank line) and the alert names in it.
ALERT_PARAGRAPH = re.compile(r"^\*\*Alert:\*\*(.*?)(?:\n[ \t]*\n|\Z)", re.S | re.M)
ALERT_NAME = re.compile(r"\bGeorelay[A-Z]\w*")


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_program("promtool")


def unit_tests() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, yaml.safe_load(p.read_text())) for p in promql.unit_test_files()]


def alert_names() -> set[str]:
    return {r["alert"] for r in promql.alerting_rules()}


# --- promtool --------------------------------------------------------------------------------

def test_both_rule_files_pass_promtool_check(promtool: str) -> None:
    proc = promql.check_rules(promql.RULE_FILES, promtool)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 2, proc.stdout


def test_promtool_check_fails_on_a_broken_copy(promtool: str, tmp_path: Path) -> None:
    text = promql.ALERTS.read_text()
    broken = text.replace("expr: georelay_agent_snapshot_age_seconds > 60",
                          "expr: georelay_agent_snapshot_age_seconds >", 1)
    assert broken != text
    copy = tmp_path / promql.ALERTS.name
    copy.write_text(broken)
    proc = promql.check_rules([copy], promtool)
    assert proc.returncode != 0
    assert "parse error" in proc.stdout + proc.stderr
    assert promql.check_exprs(["sum(rate(up[5m])"], promtool).returncode != 0


def test_the_unit_tests_pass(promtool: str) -> None:
    files = promql.unit_test_files()
    assert len(files) >= 5
    proc = subprocess.run([promtool, "test", "rules", *map(str, files)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.stdout.count("SUCCESS") == len(files), proc.stdout


def test_a_wrong_expectation_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    shutil.copytree(promql.MONITORING / "rules", tmp_path / "rules")
    (tmp_path / "tests").mkdir()
    text = (promql.UNIT_TESTS / "haproxy.yml").read_text()
    wrong = text.replace("proxy: e2,", "proxy: e3,", 1)
    assert wrong != text
    (tmp_path / "tests" / "haproxy.yml").write_text(wrong)
    proc = subprocess.run([promtool, "test", "rules", str(tmp_path / "tests" / "haproxy.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr


def test_every_unit_test_file_loads_both_rule_files_and_orders_every_group() -> None:
    """promtool 2.42 evaluates the groups a test's group_eval_order leaves out in random
    order, even before those it names: each file names them all, recording rules first."""
    groups = [g["name"] for f in promql.RULE_FILES
              for g in yaml.safe_load(f.read_text())["groups"]]
    assert len(groups) == len(set(groups)), "two rule groups share a name"
    for path, doc in unit_tests():
        loaded = [(path.parent / f).resolve() for f in doc["rule_files"]]
        assert loaded == [p.resolve() for p in promql.RULE_FILES], path.name
        assert doc.get("group_eval_order") == groups, path.name


# --- alerts ----------------------------------------------------------------------------------

def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    rules = promql.alerting_rules()
    assert len(alert_names()) >= 17
    for rule in rules:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{name}: no {key}"
        assert "{{ $labels." in annotations["summary"], f"{name}: summary names nothing"
        assert re.fullmatch(r"Georelay[A-Z][A-Za-z]+", name), name


def test_every_runbook_url_names_an_existing_runbook_under_one_base() -> None:
    bases = set()
    for rule in promql.alerting_rules():
        url = rule["annotations"]["runbook_url"]
        base, _, page = url.rpartition("/")
        bases.add(base)
        assert page.endswith(".md") and page != "README.md", url
        assert (RUNBOOKS / page).is_file(), f"{rule['alert']}: {page} is not in docs/runbooks/"
    assert len(bases) == 1, f"runbook_url bases differ: {sorted(bases)}"


def test_each_runbooks_alert_paragraph_names_exactly_the_alerts_that_link_to_it() -> None:
    """An alert's runbook says, where it says what brings you there, that this alert does;
    a name there is a real alert whose runbook_url is that page (none left behind when an
    alert's runbook changes)."""
    linking: dict[str, set[str]] = {}
    for rule in promql.alerting_rules():
        page = rule["annotations"]["runbook_url"].rpartition("/")[2]
        linking.setdefault(page, set()).add(rule["alert"])
    problems = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        if path.name == "README.md":
            continue
        m = ALERT_PARAGRAPH.search(path.read_text())
        named = set(ALERT_NAME.findall(m.group(1))) if m else set()
        wanted = linking.get(path.name, set())
        problems += [f"{path.name}: its **Alert:** paragraph does not name {name}, whose "
                     "runbook_url is this page" for name in sorted(wanted - named)]
        problems += [f"{path.name}: its **Alert:** paragraph names {name}, which is no alert "
                     "of monitoring/rules" for name in sorted(named - alert_names())]
        problems += [f"{path.name}: its **Alert:** paragraph names {name}, whose runbook_url "
                     "is another page" for name in sorted(named & alert_names() - wanted)]
    assert set(linking) <= {p.name for p in RUNBOOKS.glob("*.md")}, sorted(linking)
    assert not problems, "\n".join(problems)


def test_every_alert_fires_in_a_unit_test_and_stays_silent_in_another() -> None:
    fired: dict[str, set[str]] = {}
    silent: dict[str, set[str]] = {}
    for path, doc in unit_tests():
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                assert name in alert_names(), f"{path.name}: {name} is no alert"
                bucket = fired if check.get("exp_alerts") else silent
                bucket.setdefault(name, set()).add(path.name)
                for alert in check.get("exp_alerts") or []:
                    assert alert.get("exp_annotations"), f"{path.name}: {name} annotations"
                    assert alert.get("exp_labels", {}).get("severity") in SEVERITIES
    assert alert_names() - set(fired) == set(), "never fired in a unit test"
    assert alert_names() - set(silent) == set(), "never expected silent in a unit test"


def test_the_readme_explains_every_alert() -> None:
    readme = (promql.MONITORING / "README.md").read_text()
    for name in alert_names():
        assert f"`{name}`" in readme, name


# --- recording rules -------------------------------------------------------------------------

def test_every_recording_rule_is_unit_tested_or_used_by_an_alert() -> None:
    tested = {n for _, doc in unit_tests() for case in doc["tests"]
              for t in case.get("promql_expr_test", []) for n in promql.metric_names(t["expr"])}
    used = {n for r in promql.alerting_rules() for n in promql.metric_names(str(r["expr"]))}
    assert promql.recording_names() - tested - used == set()


def test_recording_rule_names_follow_the_convention_and_rules_use_only_defined_ones() -> None:
    names = promql.recording_names()
    for name in names:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name), name
    assert len(names) == len(promql.recording_rules()), "a recording rule is defined twice"
    used = {n for e in promql.rule_exprs() for n in promql.metric_names(e) if ":" in n}
    assert used - names == set()


# --- dashboard -------------------------------------------------------------------------------

def test_the_dashboard_is_grafana_json_with_region_and_proxy_variables() -> None:
    doc = promql.load_dashboard()
    assert 36 <= doc["schemaVersion"] <= 39 and doc["uid"] and doc["title"]
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert {"region", "proxy"} <= set(variables)
    assert "$region" in json.dumps(variables["proxy"]["query"])
    panels = list(promql.panels(doc["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + \
            p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
    for title, expr in promql.dashboard_targets():
        assert "$region" in expr, f"{title}: not filtered by $region: {expr}"


def test_every_dashboard_query_parses(promtool: str) -> None:
    exprs = promql.dashboard_exprs()
    assert len(exprs) >= 30
    proc = promql.check_exprs(exprs, promtool)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dashboard_uses_only_defined_recording_rules() -> None:
    used = {n for e in promql.dashboard_exprs() for n in promql.metric_names(e) if ":" in n}
    assert used, "the dashboard reads no recording rule"
    assert used - promql.recording_names() == set()


# --- metric names ----------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (service, region) (rate(georelay_agent_backend_requests_total{job="x"}[5m]))',
     {"georelay_agent_backend_requests_total"}),
    ('a:b:c / on () group_left () d:e:f offset 5m > bool 14.4', {"a:b:c", "d:e:f"}),
    ('label_replace(max by (p) (up{job=~"a|b"} == 0), "cause", "x y", "", "") or on (p) z',
     {"up", "z"}),
    ('time() - foo_seconds{region=~"$region"} > 1e3 unless ignoring(a) bar[1h:5m] # baz',
     {"foo_seconds", "bar"}),
    ('histogram_quantile(0.9, sum without (le) (rate(h_bucket[$__rate_interval])))',
     {"h_bucket"}),
])
def test_metric_names_are_what_remains_of_an_expression(expr: str, names: set[str]) -> None:
    assert promql.metric_names(promql.grafana_to_promql(expr)) == names


def test_rules_and_dashboard_read_only_known_metric_families() -> None:
    rule_names, dash_names = promql.rule_metric_names(), promql.dashboard_metric_names()
    assert {"up", "georelay_agent_backend_requests_total",
            "haproxy_backend_http_responses_total"} <= rule_names
    assert "georelay_agent_onebox_percent" in dash_names
    for name in rule_names | dash_names:
        assert name == "up" or name.startswith(FAMILIES), name


def test_every_agent_metric_read_is_one_the_agent_exports() -> None:
    source = AGENT_METRICS.read_text()
    names = promql.rule_metric_names() | promql.dashboard_metric_names()
    agent = {n for n in names if n.startswith("georelay_agent_")}
    assert agent >= NEW_AGENT_NAMES
    for name in agent - NEW_AGENT_NAMES:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f'"{base}"' in source, f"{name}: not exported by agent/georelay_agent/metrics.py"


# --- the scrape contract, against a real HAProxy and Prometheus ------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


HAPROXY_CFG = """\
global
    log stderr local0 emerg
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend georelay_metrics
    bind 127.0.0.1:{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend https
    bind 127.0.0.1:{public}
    default_backend be_fast_example_com
backend be_fast_example_com
    server fast.us-east-1.apigw.example.net 127.0.0.1:{closed} check inter 200ms
    server fast.us-west-2.apigw.example.net 127.0.0.1:{closed} check backup inter 200ms
"""


def started(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def get_status(url: str) -> int:
    """The status of a GET, error statuses included (HAProxy's 503 without a server)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            status: int = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """HAProxy 2.6 with its exporter, named as a georelay proxy names things, and a
    Prometheus scraping it with the example's georelay_haproxy job and both rule files:
    (HAProxy's /metrics text, Prometheus's base URL, the public frontend's URL)."""
    tmp = tmp_path_factory.mktemp("scrape")
    metrics, public, closed, web = free_port(), free_port(), free_port(), free_port()
    (tmp / "haproxy.cfg").write_text(HAPROXY_CFG.format(metrics=metrics, public=public,
                                                        closed=closed))
    example = yaml.safe_load(SCRAPE_EXAMPLE.read_text())
    job = next(j for j in example["scrape_configs"] if j["job_name"] == "georelay_haproxy")
    job = {k: v for k, v in job.items() if k != "file_sd_configs"}
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics}"],
                              "labels": {"proxy": "lab-e1", "region": "us-east-1"}}]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(p) for p in promql.RULE_FILES], "scrape_configs": [job]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    haproxy = started([require_program("haproxy"), "-db", "-f", str(tmp / "haproxy.cfg")],
                      tmp / "haproxy.log")
    prometheus = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                text = get(f"http://127.0.0.1:{metrics}/metrics").decode()
                break
            except OSError:
                if time.monotonic() > deadline or haproxy.poll() is not None:
                    raise AssertionError((tmp / "haproxy.log").read_text()) from None
                time.sleep(0.05)
        prometheus = started([require_program("prometheus"),
                              f"--config.file={tmp / 'prometheus.yml'}",
                              f"--storage.tsdb.path={tmp / 'data'}",
                              f"--web.listen-address=127.0.0.1:{web}"], tmp / "prometheus.log")
        yield text, f"http://127.0.0.1:{web}", f"http://127.0.0.1:{public}/"
    finally:
        if prometheus is not None:
            stop(prometheus)
        stop(haproxy)


def query(base: str, expr: str, timeout: float = 15,
          poke: str | None = None) -> list[dict[str, Any]]:
    """The instant vector of expr, once Prometheus has one (scrapes and rules need a few
    seconds after start); a request to `poke` before each try keeps counters moving."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if poke:
                get_status(poke)
            url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            result: list[dict[str, Any]] = json.loads(get(url))["data"]["result"]
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no result for {expr}")
        time.sleep(0.2)


def test_every_haproxy_metric_read_is_in_a_real_haproxy_scrape(
        scraped: tuple[str, str, str]) -> None:
    text, _, _ = scraped
    exported = set(re.findall(r"^(haproxy_\w+)[{ ]", text, re.M))
    used = {n for n in promql.rule_metric_names() | promql.dashboard_metric_names()
            if n.startswith("haproxy_")}
    assert used, "nothing reads HAProxy's exporter"
    assert used - exported == set(), "not exported by HAProxy 2.6's prometheus-exporter"
    assert 'haproxy_backend_http_responses_total{proxy="be_fast_example_com",code="5xx"}' \
        in text


def test_the_example_scrape_config_renames_haproxys_proxy_label_to_pxname(
        scraped: tuple[str, str, str]) -> None:
    _, base, public = scraped
    [series] = query(base, 'haproxy_backend_http_requests_total{pxname="be_fast_example_com"}')
    assert series["metric"] | {"__name__": ""} == {
        "__name__": "", "job": "georelay_haproxy", "instance": series["metric"]["instance"],
        "proxy": "lab-e1", "region": "us-east-1", "pxname": "be_fast_example_com"}
    assert query(base, 'up{job="georelay_haproxy",proxy="lab-e1",region="us-east-1"} == 1')
    # the recording rules work on the real labels
    [total] = query(base, "pxname_proxy:haproxy_backend_total_time_average_seconds:max"
                          '{pxname="be_fast_example_com"}')
    assert total["metric"] == {"__name__": "pxname_proxy:haproxy_backend_total_time_average_"
                               "seconds:max", "proxy": "lab-e1", "region": "us-east-1",
                               "pxname": "be_fast_example_com"}
    assert get_status(public) == 503  # no usable server: HAProxy answers itself
    [ratio] = query(base, 'pxname_proxy:haproxy_backend_http_responses_5xx:ratio_rate5m'
                          '{pxname="be_fast_example_com"} >= 0', timeout=20, poke=public)
    assert float(ratio["value"][1]) == 1.0  # every request got that 503


def test_the_example_prometheus_config_is_valid(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "config", str(SCRAPE_EXAMPLE)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 rule files found" in proc.stdout
    jobs = {j["job_name"]: j for j in yaml.safe_load(SCRAPE_EXAMPLE.read_text())[
        "scrape_configs"]}
    assert jobs["georelay_agent"]["honor_labels"] is True
    assert jobs["georelay_agent"]["metrics_path"] == "/agent/metrics"
    assert jobs["georelay_haproxy"]["metrics_path"] == "/metrics"
