"""A strict logfmt reader for the agent's tests, written apart from the agent's writer
(georelay_agent.logfmt), so the two check each other."""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z0-9_.-]+=")
_ESCAPED = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
# A time at the start of a line or in a field: journald adds the time, the agent never does.
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def parse(line: str) -> dict[str, str]:
    """The key/value pairs of one logfmt line; AssertionError naming what is wrong."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        m = _KEY.match(line, i)
        assert m, f"no key=value at column {i}: {line!r}"
        key, i = m.group()[:-1], m.end()
        if i < n and line[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                assert i < n, f"unterminated quoted value of {key}: {line!r}"
                ch = line[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\":
                    nxt = line[i + 1]
                    if nxt == "u":
                        chars.append(chr(int(line[i + 2:i + 6], 16)))
                        i += 6
                        continue
                    assert nxt in _ESCAPED, f"unknown escape \\{nxt} in {line!r}"
                    chars.append(_ESCAPED[nxt])
                    i += 2
                    continue
                assert ch >= " ", f"raw control character in {line!r}"
                chars.append(ch)
                i += 1
            value = "".join(chars)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            value = line[i:end]
            assert value and not set(value) & set('"=\\'), f"bad bare value of {key}: {line!r}"
            i = end
        assert key not in out, f"{key} twice in {line!r}"
        out[key] = value
        if i < n:
            assert line[i] == " " and i + 1 < n, f"no single space after {key}: {line!r}"
            i += 1
    return out


def agent_line(line: str) -> dict[str, str]:
    """One of the agent's log lines: logfmt, level and msg first, no timestamp."""
    fields = parse(line)
    assert list(fields)[:2] == ["level", "msg"], line
    assert fields["level"] in ("debug", "info", "warning", "error", "critical"), line
    assert not {"time", "ts", "timestamp", "asctime"} & set(fields), line
    assert not _TIME.match(line) and not _TIME.match(fields["msg"]), line
    return fields
