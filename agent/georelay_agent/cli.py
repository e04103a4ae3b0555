"""Command line of georelay-agent (argparse: the agent depends on prometheus_client only).

Exit codes: 0 success; `check` 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios); 1 a drain
to remove is not there; 64 (EX_USAGE) a usage error (unknown option, missing or bad
argument); 77 (EX_NOPERM) drain/undrain without the right to write the spool; 78
(EX_CONFIG) the config file is missing or invalid.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from georelay_agent import __version__, drains, logfmt
from georelay_agent.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    default_config_path,
    load,
)

EX_USAGE = 64  # sysexits: the command was used incorrectly
EX_CONFIG = 78  # sysexits: configuration error (systemd: RestartPreventExitStatus)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors exiting EX_USAGE (64), not 2: for `check`, 2 is CRITICAL."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


_EPILOG = f"""\
config file: --config FILE, else ${CONFIG_ENV}, else
  <root>/etc/georelay-agent/agent.json when this interpreter's virtualenv is
  <root>/opt/georelay-agent/venv (as the role installs it: {DEFAULT_CONFIG} on a host),
  else {DEFAULT_CONFIG}.
  Here: {{config}}
exit codes: check 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; 64 usage error; 1 undrain of a
  drain that is not there; 77 drain or undrain without the right to write the spool;
  78 config file missing or invalid.
"""


def _parser() -> argparse.ArgumentParser:
    default = os.environ.get(CONFIG_ENV) or default_config_path()
    parser = _Parser(
        prog="georelay-agent",
        description="Health agent beside a georelay HAProxy: /healthz for Route53, Nagios "
                    "checks, Prometheus metrics, drains.",
        epilog=_EPILOG.format(config=default),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", default=default, metavar="FILE",
                       help=f"config file (default here: {default.replace('%', '%%')}; "
                            "`georelay-agent -h` says how it is found)")
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
    p.add_argument("--textfile", metavar="FILE",
                   help="also write the result in Prometheus text format to FILE (for "
                        "node_exporter's textfile collector; replaced atomically, mode 0644)")
    p = command("drain", "drain this proxy: /healthz answers 503 'draining: REASON' (root)")
    p.add_argument("--reason", required=True, help="why (shown in /healthz and status)")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 30m, 2h, 1d (default never)")
    p.add_argument("--id", help="name of this drain (default: time-based); repeating a drain "
                   "with the same id, reason and duration changes nothing")
    _change_options(p)
    p = command("undrain", "remove one drain, or all of them (root)")
    p.add_argument("id", nargs="?", help="the drain to remove (default: all)")
    p.add_argument("--missing-ok", action="store_true",
                   help="no drain ID is not an error (nothing to do)")
    _change_options(p)
    p = command("drains", "list the drains in the spool")
    p.add_argument("--json", action="store_true")
    command("validate", "check the config file and exit (0 valid, 78 invalid)")
    text = "print the JSON Schema of the status document"
    sub.add_parser("schema", help=text, description=text)
    return parser


def _change_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="say what would change, change nothing")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: changed, drain(s), what the agent answers")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS until the running agent has seen the change")


def _config(path: str, log: bool = False) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        if log:
            logging.getLogger("georelay_agent").error(
                str(exc), extra=logfmt.fields(event="config_invalid", config=path,
                                              exit_code=EX_CONFIG))
        else:
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
    if args.command in ("serve", "supervise"):
        # A daemon: every line it writes (an invalid config too) is a logfmt log line.
        logfmt.configure(args.log_level)
        config = _config(args.config, log=True)  # refuse to start on an invalid config
        if args.command == "serve":
            from georelay_agent.server import serve
            return serve(config)
        from georelay_agent.supervise import supervise
        return supervise(args.config, args.pid_file, args.log_level)
    config = _config(args.config)
    if args.command == "validate":
        print(f"{args.config}: valid ({len(config.services)} service(s))")
        return 0
    if args.command == "check":
        logfmt.configure("warning")  # stdout is the Nagios line; stderr log lines only
        return _check(config, args.json, args.write, args.textfile)
    spool = Path(config.drain_dir)
    try:
        if args.command == "drain":
            return _drain(config, spool, args)
        if args.command == "undrain":
            return _undrain(config, spool, args)
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
        return exc.exit_code
    return 0


def _agent_view(config: Config, seen: Callable[[dict[str, Any]], bool] | None,
                wait: float) -> dict[str, Any]:
    """What the running agent says after a drain change: whether its status shows the
    change (polled up to `wait` seconds) and what its /healthz answers then."""
    from georelay_agent.check import ask_agent

    ok: bool | None = None
    if seen is not None and wait > 0:
        deadline = time.monotonic() + wait
        while True:
            status = _agent_status(config)
            ok = status is not None and seen(status)
            if ok or time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, config.interval / 2))
    code, text = ask_agent(config)
    return {"seen": ok, "http_status": code, "answer": text}


def _agent_status(config: Config) -> dict[str, Any] | None:
    host = config.listen_address
    conn = http.client.HTTPConnection(f"[{host}]" if ":" in host else host, config.listen_port,
                                      timeout=config.check.agent_timeout)
    try:
        conn.request("GET", "/status.json", headers={"Connection": "close"})
        resp = conn.getresponse()
        data = json.loads(resp.read()) if resp.status == 200 else None
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _active_ids(status: dict[str, Any]) -> set[str]:
    return {str(d.get("id")) for d in status.get("drains", []) if d.get("active")}


def _describe(d: drains.Drain) -> str:
    return f"{d.reason} (id {d.id}, by {d.who}, expires {_when(d.expires)})"


def _drain(config: Config, spool: Path, args: argparse.Namespace) -> int:
    expires = drains.parse_duration(args.expires) if args.expires else None
    d, changed = drains.ensure(spool, args.reason, expires, args.id, dry_run=args.dry_run)
    wait = 0.0 if args.dry_run or not changed else args.wait
    agent = _agent_view(config, lambda st: d.id in _active_ids(st), wait)
    if args.json:
        print(json.dumps({"proxy": config.proxy, "action": "drain", "changed": changed,
                          "dry_run": args.dry_run, "drain": d.to_json(), "agent": agent},
                         sort_keys=True))
        return 0
    if not changed:
        print(f"already drained {config.proxy}: {_describe(d)}; nothing changed")
    elif args.dry_run:
        print(f"would drain {config.proxy}: {_describe(d)} (dry run, nothing changed)")
    else:
        print(f"drained {config.proxy}: {_describe(d)}; /healthz answers 503 within "
              f"{config.interval:g}s")
    _say_agent(config, agent, wait)
    return 0


def _say_agent(config: Config, agent: dict[str, Any], waited: float) -> None:
    if waited and not agent["seen"]:
        print(f"georelay-agent: the agent on {config.listen_address}:{config.listen_port} did "
              f"not show the change within {waited:g}s (is it running?)", file=sys.stderr)
    if waited:
        print(f"the agent answers {agent['http_status'] or 'nothing'}: {agent['answer']}")


def _undrain(config: Config, spool: Path, args: argparse.Namespace) -> int:
    before = {d.id: d for d in drains.read(spool)[0]}
    removed = drains.remove(spool, args.id, missing_ok=args.missing_ok, dry_run=args.dry_run)
    wait = 0.0 if args.dry_run or not removed else args.wait
    agent = _agent_view(config, lambda st: not _active_ids(st) & set(removed), wait)
    if args.json:
        print(json.dumps({"proxy": config.proxy, "action": "undrain", "changed": bool(removed),
                          "dry_run": args.dry_run,
                          "drains": [before[i].to_json() for i in removed if i in before],
                          "remaining": sorted(set(before) - set(removed)), "agent": agent},
                         sort_keys=True))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} drain(s): {', '.join(removed)}" if removed else "no drains")
    _say_agent(config, agent, wait)
    return 0


def _check(config: Config, as_json: bool, write: str | None, textfile: str | None) -> int:
    """Run the check, write its JSON (--write) and Prometheus (--textfile) results, print
    it. A result that cannot be written is logged on stderr and turns OK into UNKNOWN (3):
    whoever reads the file would not see this run."""
    from georelay_agent.check import UNKNOWN, Result, run, unknown

    result: Result
    try:
        result = run(config)
    except Exception as exc:  # the plugin's own failure is UNKNOWN, never a false state
        result = unknown(f"check failed: {type(exc).__name__}: {exc}")
    payload = result.document if result.document is not None else {
        "check": {"status": "UNKNOWN", "exit_code": result.code, "summary": result.summary}}
    code = result.code
    outputs: list[tuple[str, str, Callable[[], str]]] = []
    if write:
        outputs.append(("--write", write, lambda: json.dumps(payload, sort_keys=True) + "\n"))
    if textfile:
        from georelay_agent.textfile import render

        services = result.document.get("services") if result.document else None
        outputs.append(("--textfile", textfile, lambda: render(
            config.proxy, config.region, result.code, time.time(), services)))
    for option, path, text in outputs:
        try:
            _write_atomically(path, text())
        except OSError as exc:
            logging.getLogger("georelay_agent").error(
                "cannot write the check's result", extra=logfmt.fields(
                    event="check_output_failed", option=option, path=path,
                    error=exc.strerror or str(exc),
                    fix="make its directory writable by the user cron runs the check as"))
            code = UNKNOWN if code == 0 else code
    print(json.dumps(payload, sort_keys=True, indent=2) if as_json else result.line)
    return code


def _write_atomically(path: str, text: str) -> None:
    from georelay_agent.haproxy_runtime import write_file_atomically

    write_file_atomically(path, text)
