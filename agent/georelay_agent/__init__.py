"""georelay-agent: the health agent beside every georelay HAProxy.

It tells Route53 (through HAProxy's public listener), cron/Nagios and Prometheus whether
this proxy can really serve its users right now.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version source: the installed distribution (agent/pyproject.toml)
    __version__ = version("georelay-agent")
except PackageNotFoundError:  # the source tree on sys.path without an install
    __version__ = "0+unknown"

# Version of the JSON documents the agent emits (/status.json, `check --json`).
STATUS_SCHEMA_VERSION = 1
