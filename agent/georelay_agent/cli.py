"""Command line of georelay-agent (argparse: the agent depends on prometheus_client only)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from georelay_agent import __version__, drains
from georelay_agent.config import DEFAULT_CONFIG, Config, ConfigError, load

EX_CONFIG = 78  # sysexits: configuration error (systemd: RestartPreventExitStatus)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="georelay-agent",
        description="Health agent beside a georelay HAProxy: /healthz for Route53, Nagios "
                    "checks, Prometheus metrics, drains.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    default = os.environ.get("GEORELAY_AGENT_CONFIG", DEFAULT_CONFIG)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", default=default,
                       help=f"config file (default $GEORELAY_AGENT_CONFIG or {DEFAULT_CONFIG})")
        return p

    for name, text in (("serve", "run the agent (HTTP endpoints, background collection)"),
                       ("supervise", "run `serve` and restart it when it exits (process mode)")):
        p = command(name, text)
        p.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
        if name == "supervise":
            p.add_argument("--pid-file", help="write the supervisor's pid here")
    p = command("check", "one-shot Nagios check (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)")
    p.add_argument("--json", action="store_true", help="print the status document instead")
    p.add_argument("--write", metavar="FILE", help="also write the JSON result to FILE")
    p = command("drain", "drain this proxy: /healthz answers 503 'draining: REASON' (root)")
    p.add_argument("--reason", required=True, help="why (shown in /healthz and status)")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 30m, 2h, 1d (default never)")
    p.add_argument("--id", help="name of this drain (default: time-based)")
    p = command("undrain", "remove one drain, or all of them (root)")
    p.add_argument("id", nargs="?", help="the drain to remove (default: all)")
    p = command("drains", "list the drains in the spool")
    p.add_argument("--json", action="store_true")
    command("validate", "check the config file and exit (0 valid, 78 invalid)")
    sub.add_parser("schema", help="print the JSON Schema of the status document")
    return parser


def _config(path: str) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        print(f"georelay-agent: {exc}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from exc


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        from georelay_agent.schema import STATUS_SCHEMA
        print(json.dumps(STATUS_SCHEMA, indent=2, sort_keys=True))
        return 0
    if args.command == "supervise":
        from georelay_agent.supervise import supervise
        _configure_logging(args.log_level)
        _config(args.config)  # refuse to start on an invalid config, clearly, once
        return supervise(args.config, args.pid_file, args.log_level)
    config = _config(args.config)
    if args.command == "validate":
        print(f"{args.config}: valid ({len(config.services)} service(s))")
        return 0
    if args.command == "serve":
        from georelay_agent.server import serve
        _configure_logging(args.log_level)
        return serve(config)
    if args.command == "check":
        return _check(config, args.json, args.write)
    spool = Path(config.drain_dir)
    try:
        if args.command == "drain":
            expires = drains.parse_duration(args.expires) if args.expires else None
            d = drains.add(spool, args.reason, expires, args.id)
            print(f"drained {config.proxy}: {d.reason} (id {d.id}, by {d.who}, expires "
                  f"{_when(d.expires)}); /healthz answers 503 within {config.interval:g}s")
        elif args.command == "undrain":
            removed = drains.remove(spool, args.id)
            print(f"removed drain(s): {', '.join(removed)}" if removed else "no drains")
        else:
            found, problems = drains.read(spool)
            now = time.time()
            if args.json:
                print(json.dumps([{**d.to_json(), "active": d.active(now)} for d in found]))
            for d in found if not args.json else []:
                state = "active" if d.active(now) else "expired"
                print(f"{d.id}\t{state}\t{d.who}\t{_when(d.created)}\texpires "
                      f"{_when(d.expires)}\t{d.reason}")
            for problem in problems:
                print(f"georelay-agent: {problem}", file=sys.stderr)
    except drains.DrainError as exc:
        print(f"georelay-agent: {exc}", file=sys.stderr)
        return 2
    return 0


def _check(config: Config, as_json: bool, write: str | None) -> int:
    from georelay_agent.check import run

    try:
        result = run(config)
    except Exception as exc:  # the plugin's own failure is UNKNOWN, never a false state
        print(f"GEORELAY-AGENT UNKNOWN - check failed: {type(exc).__name__}: {exc}")
        return 3
    payload = result.document if result.document is not None else {
        "check": {"status": "UNKNOWN", "exit_code": result.code, "summary": result.summary}}
    if write:
        tmp = Path(write + ".tmp")
        tmp.write_text(json.dumps(payload, sort_keys=True) + "\n")
        os.replace(tmp, write)
    print(json.dumps(payload, sort_keys=True, indent=2) if as_json else result.line)
    return result.code


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s georelay-agent[%(process)d] %(levelname)s "
                               "%(message)s")
