"""The lab's Prometheus: Debian's `prometheus` on loopback, scraping every proxy of the fleet
through its management listener, with the shipped rules (monitoring/rules/) loaded.

The targets come from the fleet model (the inventory), never from a list of their own: per
proxy, job georelay_haproxy (HAProxy's exporter, /metrics) and job georelay_agent (the
agent, /agent/metrics), labelled proxy and region. The jobs themselves are the shipped
example's (monitoring/prometheus/scrape-example.yml: HAProxy's own `proxy` label becomes
`pxname`), so the lab runs what users copy.

Lab time: every second a scrape and an evaluation, and every rule's `for` divided by
FOR_SCALE, so the drill sees alerts fire and resolve in seconds. The expressions are the
shipped ones. Its state lives below <lab dir>/prometheus/ and goes with `georelay-lab down`.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from georelay_lab import pid_files, processes, programs
from georelay_lab.checkout import in_checkout
from georelay_model import Fleet

DEFAULT_LISTEN = "127.0.9.9:9090"
RULES = "monitoring/rules"  # in the checkout
SCRAPE_EXAMPLE = "monitoring/prometheus/scrape-example.yml"
JOBS = ("georelay_haproxy", "georelay_agent")  # the example's jobs the lab runs
INTERVAL = "1s"  # scrape and evaluation
FOR_SCALE = 20  # the lab's `for` = the shipped one / FOR_SCALE (1m -> 3s, 5m -> 15s)
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
DURATION_RE = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def seconds(duration: str) -> float:
    """A Prometheus duration ("1h30m", "5m", "30s") in seconds."""
    parts = DURATION_RE.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"{duration!r} is not a Prometheus duration")
    return sum(int(n) * UNITS[u] for n, u in parts)


def scrape_configs(fleet: Fleet) -> list[dict[str, Any]]:
    """The jobs georelay_haproxy and georelay_agent of the shipped example
    (monitoring/prometheus/scrape-example.yml: its relabelling as users get it), each with
    one static target per proxy of the fleet instead of the example's targets file."""
    example = yaml.safe_load(in_checkout(SCRAPE_EXAMPLE).read_text())
    targets = [{"targets": [p.management.listen.haproxy],
                "labels": {"proxy": p.name, "region": p.region}}
               for r in fleet.regions for p in r.proxies]
    jobs = []
    for job in example["scrape_configs"]:
        if job["job_name"] in JOBS:
            job = {k: v for k, v in job.items() if not k.endswith("_sd_configs")}
            jobs.append({**job, "static_configs": copy.deepcopy(targets)})
    if [j["job_name"] for j in jobs] != list(JOBS):
        raise SystemExit(f"georelay-lab: {SCRAPE_EXAMPLE} lacks the jobs {', '.join(JOBS)}")
    return jobs


def lab_rules(source: Path, target: Path) -> list[Path]:
    """The shipped rule files, each `for` divided by FOR_SCALE (at least the interval)."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "for" in rule:
                    rule["for"] = f"{max(1, round(seconds(rule['for']) / FOR_SCALE))}s"
        out = target / path.name
        out.write_text(f"# {path} for the lab: each `for` / {FOR_SCALE}\n"
                       + yaml.safe_dump(doc, sort_keys=False))
        written.append(out)
    return written


def config(fleet: Fleet, rule_files: list[Path]) -> dict[str, Any]:
    return {"global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL,
                       "scrape_timeout": INTERVAL},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": scrape_configs(fleet)}


def start(lab_dir: Path, listen: str, fleet: Fleet) -> list[str]:
    """Start Prometheus at listen (ip:port) unless it runs, on a config made now."""
    base = lab_dir / "prometheus"
    pid_file, log_file = base / "prometheus.pid", base / "prometheus.log"
    rules = lab_rules(in_checkout(RULES), base / "rules")
    cfg = base / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config(fleet, rules), sort_keys=False))
    url = f"http://{listen}"
    (base / "url").write_text(url + "\n")  # for the drill (georelay-tools drill)
    if processes.running(pid_file):
        post(url, "/-/reload")
        return [f"prometheus already running at {url}/ (config reloaded)"]
    host, _, port = listen.rpartition(":")
    pid = processes.start([programs.path("prometheus"), f"--config.file={cfg}",
                           f"--storage.tsdb.path={base / 'data'}",
                           "--storage.tsdb.retention.time=1d",
                           f"--web.listen-address={listen}", "--web.enable-lifecycle"],
                          pid_file, log_file)
    if not processes.wait_port(host, int(port), timeout=20) or not ready(url, timeout=20):
        processes.stop(pid_file)
        raise SystemExit(f"georelay-lab: prometheus did not start; see {log_file}")
    return [f"prometheus (pid {pid}) at {url}/ scraping {len(scrape_targets(fleet))} "
            f"targets, rules from {RULES}/ (each `for` / {FOR_SCALE}): {url}/alerts"]


def scraped(url: str, count: int, timeout: float = 15.0) -> list[str]:
    """Once each of count targets has been scraped (or timeout): their health, the
    failing ones with their error, and the alerts pending or firing."""
    def done() -> list[dict[str, Any]] | None:
        found = targets(url)
        return found if len(found) >= count and all(t["health"] != "unknown"
                                                    for t in found) else None
    found = pid_files.wait_for(done, timeout, interval=0.5) or targets(url)
    up = [t for t in found if t["health"] == "up"]
    jobs = ", ".join(sorted({str(t["job"]) for t in found}))
    lines = [f"{len(up)}/{len(found)} targets up ({jobs}), scrape errors: "
             f"{len(found) - len(up)}"]
    lines += [f"  DOWN {t['job']} {t['proxy']} {t['instance']}: {t['error']}"
              for t in found if t["health"] != "up"]
    firing = alerts(url)
    lines.append(f"alerts: {len(firing)}" + "".join(
        f"\n  {a['state']:8} {a['name']}: {a['summary']}" for a in firing))
    return lines


def scrape_targets(fleet: Fleet) -> list[str]:
    return [f"{job['job_name']}:{t}" for job in scrape_configs(fleet)
            for group in job["static_configs"] for t in group["targets"]]


def ready(url: str, timeout: float) -> bool:
    return pid_files.wait_for(lambda: _status(url + "/-/ready") == 200, timeout)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except (urllib.error.URLError, OSError):
        return 0


def post(url: str, path: str) -> None:
    req = urllib.request.Request(url + path, method="POST")
    with urllib.request.urlopen(req, timeout=5):
        pass


def api(url: str, path: str) -> Any:
    """GET the HTTP API's `data` (ValueError on an error status of the API)."""
    with urllib.request.urlopen(url + path, timeout=5) as resp:
        doc = json.loads(resp.read())
    if doc.get("status") != "success":
        raise ValueError(f"{path}: {doc.get('error')}")
    return doc["data"]


def alerts(url: str) -> list[dict[str, Any]]:
    """Pending and firing alerts: [{name, state, labels, summary}], sorted."""
    out = [{"name": a["labels"].get("alertname", ""), "state": a["state"],
            "labels": a["labels"], "summary": a.get("annotations", {}).get("summary", "")}
           for a in api(url, "/api/v1/alerts")["alerts"]]
    return sorted(out, key=lambda a: (a["name"], sorted(a["labels"].items())))


def targets(url: str) -> list[dict[str, Any]]:
    """Active targets: [{job, instance, proxy, health, error}]."""
    return [{"job": t["labels"].get("job"), "instance": t["labels"].get("instance"),
             "proxy": t["labels"].get("proxy"), "health": t["health"],
             "error": t.get("lastError", "")}
            for t in api(url, "/api/v1/targets?state=active")["activeTargets"]]
