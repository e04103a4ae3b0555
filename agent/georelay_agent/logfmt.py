"""The agent's one log format: logfmt, one line per record, no timestamp (journald, or the
process-mode log's reader, adds the time).

    level=warning msg="state changed" event=transition from=healthy to=unhealthy reason="..."

Every line starts with ``level`` and ``msg``; structured fields follow in the order the log
call gave them (``extra=fields(event="transition", from_="healthy", ...)``: a trailing
underscore is dropped, so Python keywords can be keys). A value is quoted when it is empty
or holds a space, ``=``, ``"``, a backslash or a control character; inside quotes ``\\``,
``"``, newline, carriage return and tab are escaped as ``\\\\``, ``\\"``, ``\\n``, ``\\r``,
``\\t``, other control characters as ``\\u00XX``. A field whose value is None is left out.
An exception adds ``error`` (type: message) and ``traceback`` (escaped, on the same line).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from typing import Any

FIELDS = "georelay_fields"  # the LogRecord attribute holding a call's structured fields
_BARE = re.compile(r'^[^\s="\\\x00-\x1f\x7f]+$')
_KEY_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """The ``extra`` of a log call with structured fields: fields(event="x", from_="a")."""
    return {FIELDS: {k[:-1] if k.endswith("_") else k: v for k, v in values.items()}}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


def quote(value: Any) -> str:
    """One logfmt value: bare when it can be, else quoted and escaped."""
    text = _text(value)
    if _BARE.match(text):
        return text
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return _KEY_BAD.sub("_", name) or "_"


def line(level: str, msg: str, values: dict[str, Any] | None = None) -> str:
    """A logfmt line: level, msg, then the values that are not None."""
    pairs = [("level", level), ("msg", msg)]
    pairs += [(key(k), v) for k, v in (values or {}).items()
              if v is not None and key(k) not in ("level", "msg")]
    return " ".join(f"{k}={quote(v)}" for k, v in pairs)


class LogfmtFormatter(logging.Formatter):
    """logging's records as logfmt lines (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        values: dict[str, Any] = dict(getattr(record, FIELDS, None) or {})
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if values.get("error") is None:
                values["error"] = f"{type(exc).__name__}: {exc}"
            values["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return line(record.levelname.lower(), record.getMessage(), values)


def configure(level: str = "info") -> None:
    """Every log line of this process as logfmt on stderr, and uncaught exceptions (main
    thread or another) logged the same way instead of Python's own traceback print."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    log = logging.getLogger("georelay_agent")

    def uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        log.critical("uncaught exception", exc_info=(kind, exc, tb))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            log.critical("uncaught exception in a thread",
                         exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
                         extra=fields(thread=args.thread.name if args.thread else None))

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
