"""`georelay-agent check`: a one-shot Nagios plugin for cron and monitoring.

It observes on its own (Runtime API, probes, drains; no hysteresis) and also asks the
running agent what it tells Route53, so a dead agent is seen too. Exit codes follow the
Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (only for the check's own
errors, such as another check holding the lock). One line, perfdata after '|'.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from georelay_agent.config import Config
from georelay_agent.gather import Gatherer
from georelay_agent.haproxy_api import pending_reload_failure, reload_failure_warning
from georelay_agent.health import HealthMachine
from georelay_agent.observation import Observation
from georelay_agent.snapshot import status_document

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
WORDS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
PLUGIN = "GEORELAY-AGENT"


@dataclass
class Result:
    code: int
    summary: str
    perfdata: str
    document: dict[str, Any] | None

    @property
    def line(self) -> str:
        text = f"{PLUGIN} {WORDS[self.code]} - {self.summary}".replace("|", "/")
        return f"{text} | {self.perfdata}" if self.perfdata else text


def unknown(summary: str) -> Result:
    return Result(UNKNOWN, summary, "", None)


def ask_agent(config: Config) -> tuple[int | None, str]:
    """What the running agent answers on its health path (status, first line)."""
    host = config.listen_address
    conn = http.client.HTTPConnection(f"[{host}]" if ":" in host else host, config.listen_port,
                                      timeout=config.check.agent_timeout)
    try:
        conn.request("GET", config.healthz_path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read(4096).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        return None, getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    finally:
        conn.close()


def _label(text: str) -> str:
    return "'" + text.replace("'", "_").replace("=", "_") + "'"


def _history(config: Config, obs: Observation, now: float) -> tuple[dict[str, float], list[str]]:
    """5xx ratios since the previous run and failed-reload warnings, from the state file."""
    path = Path(config.check.state_dir) / "check-state.json"
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        prev = {}
    warnings: list[str] = []
    ratios: dict[str, float] = {}
    pid = (obs.info or {}).get("Pid")
    counters = {n: [b.requests_total, b.http_5xx_total] for n, b in (obs.backends or {}).items()}
    if prev.get("pid") == pid and now - float(prev.get("at", 0)) < 1800:
        for name, (req, err) in counters.items():
            req0, err0 = prev.get("backends", {}).get(name, [req, err])
            if req - req0 >= max(1, config.check.http_5xx_min_requests) and err >= err0:
                ratios[name] = (err - err0) / (req - req0)
    pending = prev.get("reload_failure_pending")
    if obs.proc is not None:
        pending = pending_reload_failure(obs.proc, int(prev.get("failed_reloads") or 0),
                                         pending)
        if pending is not None:
            warnings.append(reload_failure_warning(obs.proc))
    state = {"at": now, "pid": pid if obs.backends is not None else prev.get("pid"),
             "backends": counters or prev.get("backends", {}),
             "failed_reloads": obs.proc.failed_reloads if obs.proc else
             prev.get("failed_reloads"), "reload_failure_pending": pending}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
    return ratios, warnings


def _onebox_perf(host: str, ob: dict[str, Any] | None) -> list[str]:
    """Perfdata of a service's one-box: percent, usable servers, fallback requests (a
    counter), falling back (1: its users are on regular)."""
    if ob is None:
        return []
    out: list[str] = []
    if ob["percent"] is not None:
        out.append(f"{_label(host + '_onebox_percent')}={ob['percent']};;;0;100")
    if ob["usable_servers"] is not None:
        out.append(f"{_label(host + '_onebox_usable_servers')}={ob['usable_servers']};;;0")
    if ob["fallback_requests"] is not None:
        out.append(f"{_label(host + '_onebox_fallback')}={ob['fallback_requests']}c;;;0")
    out.append(f"{_label(host + '_onebox_falling_back')}={int(ob['falling_back'])};0;;0;1")
    return out


def evaluate(config: Config) -> Result:
    now = time.time()
    gatherer = Gatherer(config)
    try:
        obs = gatherer.observe(wait_for_probes=True)
    finally:
        gatherer.close()
    snap = HealthMachine(config, rise=1, fall=1).apply(obs)
    doc = status_document(snap)
    ratios, warnings = _history(config, obs, now)
    warnings = list(snap.warnings) + warnings
    perf: list[str] = []
    up = sum(1 for s in doc["services"] if s["up"])
    perf.append(f"services_up={up};;{len(doc['services'])}:;0;{len(doc['services'])}")
    for s in doc["services"]:
        host = s["hostname"]
        perf.append(f"{_label(host + '_usable_servers')}={s['usable_servers']};;1:;0")
        ratio = ratios.get(s["backend"])
        s["http_5xx_ratio"] = ratio
        if ratio is not None:
            perf.append(f"{_label(host + '_5xx_ratio')}={ratio:.4f};"
                        f"{config.check.http_5xx_warn_ratio:g};;0;1")
            if ratio > config.check.http_5xx_warn_ratio:
                warnings.append(f"{host}: {ratio:.1%} of requests answered 5xx since the "
                                "previous check")
        if s.get("home") is not None and any(sv.get("backup") for sv in s["servers"]):
            perf.append(f"{_label(host + '_bridging')}="
                        f"{0 if s.get('bridging') is None else 1};0;;0;1")
        perf += _onebox_perf(host, s.get("onebox"))
        p = s["probe"]
        if p is not None:
            perf.append(f"{_label(host + '_probe')}={p['duration_s']:.4f}s;;;0")
            if p["cert_not_after"] is not None:
                days = (p["cert_not_after"] - now) / 86400
                perf.append(f"{_label(host + '_cert_days')}={days:.1f};"
                            f"{config.check.cert_warn_days}:;;0")
    active = [d for d in doc["drains"] if d["active"]]
    perf.append(f"drains={len(active)};0;;0")
    perf.append(f"collection={obs.duration_s:.4f}s;;;0")

    agent_code, agent_text = ask_agent(config)
    doc["warnings"] = warnings
    where = f"{config.proxy} ({config.region})"
    if snap.state == "unhealthy":
        code, summary = CRITICAL, f"{where}: {snap.reason}"
    elif agent_code is None:
        code, summary = CRITICAL, (f"{where}: the agent does not answer on "
                                   f"{config.listen_address}:{config.listen_port} "
                                   f"({agent_text}); Route53 sees this proxy as down")
    elif agent_code != 200 and snap.healthy:
        code, summary = CRITICAL, f"{where}: the agent answers {agent_code}: {agent_text}"
    elif snap.state == "draining":
        code, summary = WARNING, f"{where}: {snap.reason}"
    elif snap.state == "bridging":
        # Requests succeed through another region's gateway: degraded, not down.
        dns = "kept in DNS (bridging_keeps_in_dns)" if config.bridging_keeps_in_dns else \
            "/healthz answers 503, Route53 sends users to proxies next to a healthy gateway"
        code, summary = WARNING, f"{where}: {snap.reason}; {dns}"
    elif warnings:
        code, summary = WARNING, f"{where}: {'; '.join(warnings)}"
    else:
        code, summary = OK, f"{where}: {up}/{len(doc['services'])} services up, " \
            "agent answers 200"
    if code != OK and warnings and not summary.endswith("; ".join(warnings)):
        summary += f" (warnings: {'; '.join(warnings)})"
    result = Result(code, " ".join(summary.split()), " ".join(perf), doc)
    doc["check"] = {"status": WORDS[code], "exit_code": code, "summary": result.summary,
                    "perfdata": result.perfdata, "agent_http_status": agent_code,
                    "agent_answer": agent_text}
    return result


def run(config: Config) -> Result:
    """evaluate() under an exclusive lock: overlapping runs (slow cron) end UNKNOWN."""
    state_dir = Path(config.check.state_dir)
    try:
        state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        lock = os.open(state_dir / "check.lock", os.O_RDWR | os.O_CREAT, 0o640)
    except OSError as exc:
        return unknown(f"cannot use state dir {state_dir}: {exc.strerror or exc}")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return unknown(f"another check is running (lock {state_dir / 'check.lock'})")
        try:
            return evaluate(config)
        except OSError as exc:
            return unknown(f"check failed: {exc}")
    finally:
        os.close(lock)
