"""`georelay-agent check --textfile FILE`: the check's result for node_exporter's textfile
collector (Prometheus text format, no sample timestamps: the collector refuses them).

    georelay_check_status{proxy, region}                     Nagios code 0-3 of the last run
    georelay_check_last_run_timestamp_seconds{proxy, region} when it ran: a cron that stopped
                                                             shows as an old timestamp
    georelay_check_service_up{proxy, region, service}        1 when the service has a usable
                                                             server (home or backup)

`check` writes it with haproxy_runtime.write_file_atomically (a temporary file in the same
directory, fsync, rename; mode 0644), so the collector never reads half of it. Standard
library only: `check` never loads prometheus_client.
"""

from __future__ import annotations

from typing import Any

STATUS = "georelay_check_status"
LAST_RUN = "georelay_check_last_run_timestamp_seconds"
SERVICE_UP = "georelay_check_service_up"


def label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{label_value(v)}"' for k, v in pairs.items()) + "}"


def render(proxy: str, region: str, code: int, ran_at: float,
           services: list[dict[str, Any]] | None = None) -> str:
    """The textfile of one check run: status, last run and (when the check observed them)
    each service's up."""
    base = {"proxy": proxy, "region": region}
    lines = [
        f"# HELP {STATUS} Nagios code of the last georelay-agent check: 0 OK, 1 WARNING, "
        "2 CRITICAL, 3 UNKNOWN",
        f"# TYPE {STATUS} gauge",
        f"{STATUS}{_labels(base)} {int(code)}",
        f"# HELP {LAST_RUN} Unix time of the last georelay-agent check (cron runs it every "
        "minute: an old value is a check that no longer runs)",
        f"# TYPE {LAST_RUN} gauge",
        f"{LAST_RUN}{_labels(base)} {ran_at:.3f}",
    ]
    if services:
        lines += [f"# HELP {SERVICE_UP} 1 when the check saw a usable server (home or backup) "
                  "for the service",
                  f"# TYPE {SERVICE_UP} gauge"]
        lines += [f"{SERVICE_UP}{_labels({**base, 'service': str(s['hostname'])})} "
                  f"{1 if s.get('up') else 0}" for s in services]
    return "\n".join(lines) + "\n"
