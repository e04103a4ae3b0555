"""georelay-agent: the health agent beside every georelay HAProxy.

It tells Route53 (through HAProxy's public listener), cron/Nagios and Prometheus whether
this proxy can really serve its users right now.
"""

__version__ = "0.1.0"

# Version of the JSON documents the agent emits (/status.json, `check --json`).
STATUS_SCHEMA_VERSION = 1
