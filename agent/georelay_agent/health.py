"""The health state machine: from observations to the one snapshot everybody reads
(/healthz, /status.json, /metrics, `check`).

States (docs/AGENT.md says what to do about each):
  healthy    HAProxy answers, every service's home gateway is usable, probes pass.
  bridging   requests succeed, but a service's home gateway is down and HAProxy relays it to
             a backup region's gateway. /healthz answers 503 (users are better served by
             proxies next to a healthy gateway), or 200 with bridging_keeps_in_dns.
  unhealthy  a service has no usable server at all, a probe fails, HAProxy does not answer
             (after `fall` observations in a row).
  draining   an operator drained the proxy (georelay-agent drain); health is otherwise fine.
  starting   nothing observed yet.
"""

from __future__ import annotations

import collections
import os
import time
from typing import Any

from georelay_agent import STATUS_SCHEMA_VERSION, __version__, onebox
from georelay_agent.config import Config, Service
from georelay_agent.drains import active
from georelay_agent.haproxy_api import (
    BackendStat,
    pending_reload_failure,
    reload_failure_warning,
)
from georelay_agent.hysteresis import Hysteresis
from georelay_agent.observation import Observation
from georelay_agent.probe import ProbeResult
from georelay_agent.snapshot import Snapshot

RATE_WINDOW_S = 60.0


BRIDGING = "home gateway down, bridging via backup"


def bridging_reason(bridges: list[tuple[str, str]], several_services: bool) -> str:
    """The one-line reason for services (hostname, backup region) relayed to a backup:
    'home gateway down, bridging via backup us-west-2', naming the services when the proxy
    serves several: '... via backup us-west-2 (fast.example.com, api.example.com)'."""
    if not several_services:
        return f"{BRIDGING} {bridges[0][1]}"
    by_region: dict[str, list[str]] = {}
    for hostname, region in bridges:
        by_region.setdefault(region, []).append(hostname)
    return f"{BRIDGING} " + ", ".join(f"{region} ({', '.join(hosts)})"
                                      for region, hosts in by_region.items())


def _server_label(s: Service, name: str, backup: bool) -> str:
    if not backup:
        return name
    return f"{name} (backup {s.backup_region(name) or '?'})"


def _agreement(s: Service, b: BackendStat) -> list[str]:
    """Warnings where the agent's config and haproxy.cfg name different servers."""
    out: list[str] = []
    fix = "agent config and haproxy.cfg disagree; re-run playbooks/proxies.yml"
    if b.active_servers and s.home not in {sv.name for sv in b.active_servers}:
        out.append(f"{s.hostname}: home server {s.home} is not in {s.backend}: {fix}")
    backups = {sv.name for sv in b.backup_servers}
    for k in s.backups:
        if k.server not in backups:
            out.append(f"{s.hostname}: backup server {k.server} ({k.region}) is not a backup "
                       f"in {s.backend}: {fix}")
    return out


def _ip_ranges(c: Config, obs: Observation) -> dict[str, Any] | None:
    """The ip-ranges map of regional redirects this proxy holds (None without redirects):
    its header's syncToken and createDate, as read from the file."""
    if c.ip_ranges_map is None:
        return None
    header = obs.edge.ip_ranges
    if header is None:
        return {"map_file": c.ip_ranges_map, "sync_token": None, "create_date": None,
                "created": None, "mtime": None}
    return header.to_json()


class HealthMachine:
    """Judges each observation (hysteresis, rate window, reloads, bridging) into a Snapshot.

    One per agent (the collector's), or a fresh one with rise = fall = 1 for a one-shot
    `check`."""

    def __init__(self, config: Config, rise: int | None = None, fall: int | None = None) -> None:
        self.config = config
        self.hysteresis = Hysteresis(rise or config.rise, fall or config.fall)
        self.started = time.time()
        self.probes: dict[str, ProbeResult] = {}
        self.window: collections.deque[tuple[float, dict[str, tuple[int, int]]]] = \
            collections.deque()
        self.worker_pid: int | None = None
        self.reloads_seen = 0
        self.last_failed = 0  # the master's failed-reload count at the previous look
        self.failure_pending: int | None = None  # see haproxy_api.pending_reload_failure
        self.state = "starting"
        self.since = self.started
        self.bridged: dict[str, tuple[str, str]] = {}  # service -> (region, server) serving

    def _agent(self) -> dict[str, Any]:
        c = self.config
        return {"version": __version__, "proxy": c.proxy, "region": c.region,
                "pid": os.getpid(), "started": self.started, "interval_s": c.interval,
                "rise": self.hysteresis.rise, "fall": self.hysteresis.fall,
                "bridging_keeps_in_dns": c.bridging_keeps_in_dns}

    def starting(self) -> Snapshot:
        doc = {"schema_version": STATUS_SCHEMA_VERSION, "generated": self.started,
               "agent": self._agent(), "state": "starting", "healthy": False,
               "reason": "starting: nothing observed yet", "since": self.started,
               "haproxy": {"up": False, "error": None, "pid": None, "version": None,
                           "uptime_s": None, "reloads_seen": 0, "reloads": None,
                           "failed_reloads": None, "config_pending": False},
               "services": [], "drains": [], "warnings": [],
               "collection": {"at": None, "duration_s": None, "problems": []}}
        return Snapshot("starting", doc["reason"], self.started, time.monotonic(), doc)

    def _rates(self, obs: Observation) -> dict[str, float | None]:
        """5xx share of each backend's requests over the last RATE_WINDOW_S seconds."""
        if obs.backends is None:
            return {}
        now = time.monotonic()
        counters = {name: (b.requests_total, b.http_5xx_total) for name, b in obs.backends.items()}
        if self.window and any(counters.get(n, (0, 0))[0] < v[0]
                               for n, v in self.window[-1][1].items()):
            self.window.clear()  # counters went back: a reload started a fresh worker
        self.window.append((now, counters))
        while len(self.window) > 2 and now - self.window[1][0] >= RATE_WINDOW_S:
            self.window.popleft()
        oldest = self.window[0][1]
        rates: dict[str, float | None] = {}
        for name, (req, err) in counters.items():
            req0, err0 = oldest.get(name, (req, err))
            dreq, derr = req - req0, err - err0
            min_req = max(1, self.config.check.http_5xx_min_requests)
            rates[name] = derr / dreq if dreq >= min_req else None
        return rates

    def _reloads(self, obs: Observation) -> bool:
        """Count reloads (worker pid changes); True if the running config lags the file."""
        if obs.info is None:
            return False
        pid = int(obs.info.get("Pid", "0") or 0)
        if self.worker_pid is not None and pid != self.worker_pid:
            self.reloads_seen += 1
        self.worker_pid = pid
        uptime = obs.info.get("Uptime_sec", "")
        if obs.config_mtime is None or not uptime.isdigit():
            return False
        worker_start = obs.at - int(uptime)
        return obs.config_mtime > worker_start + 1 and \
            obs.at - obs.config_mtime > self.config.haproxy.reload_grace

    def apply(self, obs: Observation) -> Snapshot:
        c, h, now = self.config, self.hysteresis, obs.at
        self.probes.update(obs.probes)
        names = {"haproxy"}
        haproxy = h.observe("haproxy", obs.haproxy_error is None,
                            f"haproxy: runtime API {obs.haproxy_error}", now)
        rates = self._rates(obs)
        pending = self._reloads(obs)
        warnings: list[str] = []
        services: list[dict[str, Any]] = []
        bridges: list[tuple[str, str]] = []  # (service, backup region) relayed to a backup
        failing: list[str] = [] if haproxy.up else [haproxy.reason or "haproxy down"]
        for s in c.services:
            key = f"backend:{s.hostname}"
            names.add(key)
            hkey = f"home:{s.hostname}"
            names.add(hkey)
            b = obs.backends.get(s.backend) if obs.backends is not None else None
            if obs.backends is not None:
                if b is None:
                    ok, why = False, f"{s.hostname}: backend {s.backend} is not in haproxy.cfg"
                else:
                    # Requests succeed while any server, home or backup, is usable.
                    ok = b.usable_servers > 0
                    detail = "; ".join(f"{_server_label(s, sv.name, sv.backup)} {sv.status} "
                                       f"{sv.check_status} {sv.check_desc}".strip()
                                       for sv in b.servers)
                    why = f"{s.hostname}: no usable server in {s.backend} ({detail})"
                    home_ok = any(sv.usable for sv in b.active_servers)
                    h.observe(hkey, home_ok, f"{s.hostname}: home gateway {s.home} is not "
                              "usable", now)
                    warnings += _agreement(s, b)
                h.observe(key, ok, why, now)
            st = h.get(key)
            hst = h.get(hkey) if b is not None else None
            bridging: dict[str, Any] | None = None
            if hst is not None and hst.up:
                self.bridged.pop(s.hostname, None)
            elif b is not None and st and st.up and hst:
                # HAProxy sends to the first usable backup, in config order. When none is
                # usable now the backend check is falling: until it has fallen, the backup
                # that served last is still the answer (never "healthy" with the home down).
                serving = next((sv for sv in b.backup_servers if sv.usable), None)
                if serving is not None:
                    self.bridged[s.hostname] = (s.backup_region(serving.name) or serving.name,
                                                serving.name)
                last = self.bridged.get(s.hostname)
                if last is not None:
                    bridging = {"region": last[0], "server": last[1], "since": hst.since}
                    bridges.append((s.hostname, last[0]))
                elif haproxy.up:  # the home is down and nothing ever took over
                    failing.append(st.last_reason or f"{s.hostname}: home gateway {s.home} "
                                   "is not usable and no backup took over")
            home_sv = None if b is None else next(
                (sv for sv in b.active_servers if sv.name == s.home),
                b.active_servers[0] if b.active_servers else None)
            entry: dict[str, Any] = {
                "hostname": s.hostname, "backend": s.backend, "domain": s.domain,
                "up": st.up if st else False, "reason": st.reason if st else "not observed",
                "since": st.since if st else None, "status": b.status if b else None,
                "usable_servers": b.usable_servers if b else 0,
                "servers": [{"name": sv.name, "status": sv.status,
                             "check_status": sv.check_status, "check_code": sv.check_code,
                             "check_desc": sv.check_desc,
                             "last_change": None if sv.last_change_s is None
                             else now - sv.last_change_s,
                             "backup": sv.backup,
                             "region": s.backup_region(sv.name) if sv.backup else c.region}
                            for sv in (b.servers if b else [])],
                "home": None if b is None else {
                    "server": home_sv.name if home_sv else s.home,
                    "status": home_sv.status if home_sv else None,
                    "usable": any(sv.usable for sv in b.active_servers),
                    "up": hst.up if hst else False, "since": hst.since if hst else None},
                "bridging": bridging,
                "requests_total": b.requests_total if b else None,
                "http_5xx_total": b.http_5xx_total if b else None,
                "cache_lookups": b.cache_lookups if b else None,
                "cache_hits": b.cache_hits if b else None,
                "errors": {"connect": b.errors_connect, "response": b.errors_response,
                           "retries": b.retries} if b else None,
                "http_5xx_ratio": rates.get(s.backend), "probe": None}
            # A one-box without a usable server is a warning only: regular serves its users.
            entry["onebox"], more = onebox.judge(s, obs.backends, obs.onebox)
            warnings += more
            # The deploy version of its edge cache: reported, never judged.
            versions = obs.edge.versions
            entry["edge_cache"] = None if s.edge_cache is None else {
                "version_map": s.edge_cache.version_map,
                "version": versions.get(s.hostname) if versions is not None else None}
            if st and not st.up and haproxy.up:
                failing.append(st.reason or key)
            ratio = rates.get(s.backend)
            if ratio is not None and ratio > c.check.http_5xx_warn_ratio:
                warnings.append(f"{s.hostname}: {ratio:.1%} of requests answered 5xx in "
                                f"the last {RATE_WINDOW_S:g}s")
            result = self.probes.get(s.hostname) if s.probe_path and c.probe.enabled else None
            if result is not None:
                pkey = f"probe:{s.hostname}"
                names.add(pkey)
                if s.hostname in obs.probes:
                    h.observe(pkey, result.ok, f"{s.hostname}: probe GET {s.probe_path} "
                              f"through the proxy failed: {result.error}", now)
                pst = h.get(pkey)
                entry["probe"] = {"path": s.probe_path, "ok": result.ok,
                                  "status": result.status, "duration_s": result.duration_s,
                                  "error": result.error, "at": result.at,
                                  "cert_not_after": result.cert_not_after,
                                  "up": pst.up if pst else result.ok}
                if pst and not pst.up and haproxy.up and st and st.up:
                    failing.append(pst.reason or pkey)
                if result.cert_not_after is not None:
                    days = (result.cert_not_after - now) / 86400
                    if days < c.check.cert_warn_days:
                        warnings.append(f"{s.hostname}: certificate expires in {days:.1f} days")
            services.append(entry)
        h.forget(names)

        proc = obs.proc
        if proc is not None:
            self.failure_pending = pending_reload_failure(proc, self.last_failed,
                                                          self.failure_pending)
            self.last_failed = proc.failed_reloads
            if self.failure_pending is not None:
                warnings.append(reload_failure_warning(proc))
        if pending:
            warnings.append("haproxy: haproxy.cfg changed after the running worker started "
                            "and no reload took it: the reload failed or never ran")
        all_drains = obs.drains
        on = active(all_drains, now)
        bridged = bridging_reason(bridges, len(c.services) > 1) if bridges else None
        if failing:
            state, reason = "unhealthy", failing[0]
        elif on:
            more = f" (+{len(on) - 1} more)" if len(on) > 1 else ""
            state, reason = "draining", f"draining: {on[0].reason}{more}"
        elif bridged:
            state, reason = "bridging", bridged
        else:
            state, reason = "healthy", None
        if bridged and state != "bridging":
            warnings.insert(0, bridged)  # still worth knowing behind another reason
        in_dns = state == "healthy" or (state == "bridging" and c.bridging_keeps_in_dns)
        if state != self.state:
            self.state, self.since = state, now
        info = obs.info or {}
        doc: dict[str, Any] = {
            "schema_version": STATUS_SCHEMA_VERSION, "generated": now, "agent": self._agent(),
            "state": state, "healthy": in_dns, "reason": reason,
            "since": self.since,
            "haproxy": {"up": haproxy.up, "error": obs.haproxy_error,
                        "pid": int(info["Pid"]) if info.get("Pid", "").isdigit() else None,
                        "version": info.get("Version"),
                        "uptime_s": int(info["Uptime_sec"])
                        if info.get("Uptime_sec", "").isdigit() else None,
                        "reloads_seen": self.reloads_seen,
                        "reloads": proc.reloads if proc else None,
                        "failed_reloads": proc.failed_reloads if proc else None,
                        "config_pending": pending},
            "services": services,
            "ip_ranges": _ip_ranges(c, obs),
            "drains": [{**d.to_json(), "active": d.active(now)} for d in all_drains],
            "warnings": warnings,
            "collection": {"at": obs.at, "duration_s": obs.duration_s,
                           "problems": obs.problems}}
        return Snapshot(state, reason, now, time.monotonic(), doc, tuple(warnings), in_dns)
