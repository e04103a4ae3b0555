"""A proxy's management listener (README "Monitoring"): where Prometheus scrapes HAProxy's
own exporter (/metrics) and the health agent (/agent/metrics), and who may.

The listener is HAProxy's, separate from the public ones: its own address and port
(`georelay_metrics_listen`), an allow-list of source networks (`georelay_metrics_allow`),
and optional basic auth (`georelay_metrics_basic_auth`). Read by load.py for each proxy.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from georelay_model.fleet import Endpoint, Management
from georelay_model.reader import DEFAULTS, Reader, is_jinja

LISTEN = "georelay_metrics_listen"
ALLOW = "georelay_metrics_allow"
AUTH = "georelay_metrics_basic_auth"
USER_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LISTEN_FIX = ("give ip:port of a management address of this host, e.g. 127.0.0.1:8404 or "
              "[fd00::5]:8404 (a name is not resolved)")


def read_management(r: Reader, host: str, hv: dict[str, Any], *, bind: str, ports: set[int],
                    public_ip: str | None, agent: Endpoint) -> Management | None:
    """The listener of host, or None after recording each problem. ``bind`` and ``ports``
    are the public listeners' address ("" or "*": every address) and ports."""
    before = len(r.problems)
    listen = _listen(r, host, hv.get(LISTEN))
    if listen is not None:
        everywhere = bind in ("", "*") or listen.host in ("0.0.0.0", "::")
        if listen.port in ports and (everywhere or _same(listen.host, bind)):
            r.problem(host, LISTEN, f"{listen.haproxy} is also a public listener",
                      "give the management listener a port of its own (default 8404)")
        if public_ip and _same(listen.host, public_ip):
            r.problem(host, LISTEN, f"{listen.host} is the proxy's public_ip",
                      "listen on a management address (a private network, or 127.0.0.1): "
                      "the public address must not serve the metrics")
        if listen.port == agent.port and (_same(listen.host, agent.host)
                                          or listen.host in ("0.0.0.0", "::")):
            r.problem(host, LISTEN, f"{listen.haproxy} is the health agent's address",
                      "give the management listener a port the agent does not use")
    allow = _allow(r, host, hv.get(ALLOW))
    user, password = _auth(r, host, hv.get(AUTH)) if r.rendered else (None, None)
    if len(r.problems) > before:
        return None
    return Management(listen=listen or Management().listen, allow=allow, user=user,
                      password=password)


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _listen(r: Reader, host: str, raw: object) -> Endpoint | None:
    value = r.string(host, LISTEN, raw, required=False) or str(DEFAULTS[LISTEN])
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$", value) or re.match(
        r"^([0-9.]+):(\d{1,5})$", value)
    if not m:
        r.problem(host, LISTEN, f"{value!r} is not ip:port", LISTEN_FIX)
        return None
    address, port = m.group(1), int(m.group(2))
    try:
        ipaddress.ip_address(address)
    except ValueError:
        r.problem(host, LISTEN, f"{address!r} is not an IP address", LISTEN_FIX)
        return None
    if not 1 <= port <= 65535:
        r.problem(host, LISTEN, f"port {port} is out of range", "use a TCP port from 1 to 65535")
        return None
    return Endpoint(address, port)


def _allow(r: Reader, host: str, raw: object) -> tuple[str, ...]:
    default = tuple(str(n) for n in DEFAULTS[ALLOW])  # type: ignore[attr-defined]
    if raw is None or raw == [] or (not r.rendered and is_jinja(raw)):
        return default
    fix = ("give a list of networks allowed to scrape, e.g. [10.20.0.0/16, 127.0.0.1/32] "
           "(default: loopback only)")
    if not isinstance(raw, list):
        r.problem(host, ALLOW, f"must be a list, not {type(raw).__name__}", fix)
        return default
    networks: list[str] = []
    for i, item in enumerate(raw):
        try:
            networks.append(str(ipaddress.ip_network(str(item).strip(), strict=True)))
        except ValueError as e:
            r.problem(host, f"{ALLOW}[{i}]", f"{item!r} is not a network ({e})",
                      "write the network address with its prefix, e.g. 10.20.0.0/16 or "
                      "192.0.2.7/32")
    return tuple(dict.fromkeys(networks))


def _auth(r: Reader, host: str, raw: object) -> tuple[str | None, str | None]:
    if raw is None or raw == {}:
        return None, None
    fix = ("set {user: NAME, password: SECRET} (keep the password in Ansible Vault), or "
           "leave it unset for no authentication")
    if not isinstance(raw, dict) or set(raw) != {"user", "password"}:
        r.problem(host, AUTH, "must be a mapping of exactly user and password", fix)
        return None, None
    user, password = raw["user"], raw["password"]
    if not isinstance(user, str) or not USER_RE.match(user):
        r.problem(host, f"{AUTH}.user", f"{user!r} is not a user name",
                  "use 1-64 letters, digits, '.', '_' or '-'")
        return None, None
    if not isinstance(password, str) or not password or "'" in password \
            or any(c in password for c in "\r\n"):
        r.problem(host, f"{AUTH}.password", "is empty, not a string, or holds a single quote "
                  "or a line break", "use a non-empty password without ' or line breaks")
        return None, None
    return user, password
