"""The lab's Prometheus configuration (lab/georelay_lab/prometheus.py), made from the demo
inventory and the shipped rules: what it scrapes and the lab time of its rules. (The running
Prometheus is tested in tests/runbooks/test_monitoring_lab.py and by the drill.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from georelay_lab import prometheus as lab_prometheus
from georelay_model import fleet_from_hostvars, load_inventory
from georelay_testing.fleet import REPO


def test_durations() -> None:
    assert lab_prometheus.seconds("1m") == 60
    assert lab_prometheus.seconds("1h30m") == 5400
    assert lab_prometheus.seconds("500ms") == 0.5
    for bad in ("", "1", "m", "1x", "1m "):
        with pytest.raises(ValueError):
            lab_prometheus.seconds(bad)


def test_every_demo_proxy_is_a_target_of_both_jobs_of_the_example() -> None:
    fleet = fleet_from_hostvars(load_inventory(str(REPO / "inventories/demo")))
    jobs = lab_prometheus.scrape_configs(fleet)
    assert [j["job_name"] for j in jobs] == ["georelay_haproxy", "georelay_agent"]
    for job in jobs:
        got = {(g["targets"][0], g["labels"]["proxy"], g["labels"]["region"])
               for g in job["static_configs"]}
        assert got == {("127.0.1.101:8404", "use1-a", "us-east-1"),
                       ("127.0.1.102:8404", "use1-b", "us-east-1"),
                       ("127.0.2.101:8404", "usw2-a", "us-west-2"),
                       ("127.0.2.102:8404", "usw2-b", "us-west-2")}
        assert not any(k.endswith("_sd_configs") for k in job)
    haproxy, agent = jobs
    assert {"action": "labelmap", "regex": "exported_proxy",
            "replacement": "pxname"} in haproxy["metric_relabel_configs"]
    assert agent["honor_labels"] is True and agent["metrics_path"] == "/agent/metrics"


def test_the_lab_divides_each_for_and_keeps_the_expressions(tmp_path: Path) -> None:
    source = REPO / lab_prometheus.RULES
    written = lab_prometheus.lab_rules(source, tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in source.glob("*.yml"))
    pairs = 0
    for path in written:
        shipped = yaml.safe_load((source / path.name).read_text())
        lab = yaml.safe_load(path.read_text())
        for g1, g2 in zip(shipped["groups"], lab["groups"], strict=True):
            for r1, r2 in zip(g1["rules"], g2["rules"], strict=True):
                assert r1["expr"] == r2["expr"]
                if "for" in r1:
                    want = max(1, round(lab_prometheus.seconds(r1["for"])
                                        / lab_prometheus.FOR_SCALE))
                    assert r2["for"] == f"{want}s"
                    pairs += 1
    assert pairs >= 10
