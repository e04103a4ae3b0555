"""The lab's real Prometheus (Debian's package, `georelay-lab prometheus`) scraping the
runbook fleet (the demo's shape: 2 regions x 2 proxies, a one-box, an edge cache and
regional redirects) through each proxy's management listener, with the shipped rules.

What the issue asks to see: every proxy's HAProxy exporter and agent scraped with 0 scrape
errors; the rules loaded and healthy; and the metric names the rules and the dashboard use
all present in that real scrape (the cron check's textfile series excepted: no
node_exporter runs here; tests/agent checks that file with promtool)."""

from __future__ import annotations

import time

from georelay_lab import prometheus as lab_prometheus
from georelay_testing.promql import dashboard_metric_names, rule_metric_names
from georelay_testing.runbook_lab import RunbookFleet

# Not scraped in the lab: node_exporter's textfile collector carries these (tests/agent).
TEXTFILE_PREFIX = "georelay_check_"


def scraped_names(url: str) -> set[str]:
    return set(lab_prometheus.api(url, "/api/v1/label/__name__/values"))


def wait_scraped(url: str, count: int, timeout: float = 30) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        found = lab_prometheus.targets(url)
        if len(found) == count and all(t["health"] == "up" for t in found):
            return found
        time.sleep(0.5)
    return found


def test_every_proxy_is_scraped_with_no_error(fleet: RunbookFleet, prometheus: str) -> None:
    proxies = fleet.proxy_names()
    found = wait_scraped(prometheus, 2 * len(proxies))
    assert sorted((t["job"], t["proxy"]) for t in found) == sorted(
        (job, p) for job in ("georelay_agent", "georelay_haproxy") for p in proxies), found
    assert all(t["health"] == "up" and not t["error"] for t in found), found
    assert {t["instance"] for t in found} == {f"{fleet.management_address(p)}:8404"
                                              for p in proxies}
    # every sample kept: HAProxy's `proxy` label is `pxname`, ours names the proxy host
    result = lab_prometheus.api(prometheus, "/api/v1/query?query="
                                "haproxy_backend_status%7Bpxname%3D%22be_fast_example_com%22"
                                "%2Cstate%3D%22UP%22%7D")["result"]
    assert sorted(r["metric"]["proxy"] for r in result) == sorted(proxies), result


def test_the_rules_load_and_evaluate_without_error(prometheus: str) -> None:
    groups = lab_prometheus.api(prometheus, "/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules, groups
    assert all(r["health"] in ("ok", "unknown") for r in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] not in ("ok", "unknown")]


def test_the_dashboard_and_the_rules_use_only_metrics_the_fleet_exports(
        fleet: RunbookFleet, prometheus: str) -> None:
    wait_scraped(prometheus, 2 * len(fleet.proxy_names()))
    time.sleep(2)  # a scrape of every target after the agents' first full observation
    names = scraped_names(prometheus)
    wanted = {n for n in dashboard_metric_names() | rule_metric_names()
              if not n.startswith(TEXTFILE_PREFIX)}
    missing = sorted(wanted - names)
    assert not missing, f"not in a real scrape of the lab fleet: {missing}"
