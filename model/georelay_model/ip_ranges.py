"""AWS's published address ranges (ip-ranges.json) as the map of regional redirects.

AWS publishes https://ip-ranges.amazonaws.com/ip-ranges.json: ``syncToken`` (seconds since
the epoch of the publication), ``createDate`` (YYYY-MM-DD-hh-mm-ss), ``prefixes[]`` with
``ip_prefix``/``region``/``service`` and ``ipv6_prefixes[]`` with ``ipv6_prefix``. The same
prefix repeats once per service, and regional prefixes lie inside GLOBAL ones.

map_text() writes what HAProxy's ``map_ip`` reads: one ``<prefix> <region>`` line per distinct
prefix, IPv4 and IPv6 in one file (HAProxy keeps a tree per family and answers the longest
match, so a regional prefix inside a GLOBAL one wins), GLOBAL rows kept (a client only in
GLOBAL space is answered GLOBAL, which no origin names). A header of comment lines records
the syncToken and createDate, so a proxy's map says how old it is.

A malformed or truncated file raises IpRangesError naming the file, the field and the fix.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$")
REGION_RE = re.compile(r"^([a-z]{2}(-[a-z]+)+-\d{1,2}|GLOBAL)$")
HEADER = "# georelay aws ip-ranges map"


class IpRangesError(ValueError):
    """The file is not a usable ip-ranges.json; the text says where and what to do."""


@dataclass(frozen=True)
class IpRanges:
    sync_token: int
    create_date: str
    entries: tuple[tuple[str, str], ...]  # (prefix, region), IPv4 first, sorted, distinct
    ipv4: int
    ipv6: int
    conflicts: int = 0  # prefixes listed under two regions: the first listed kept


def parse(text: str, source: str) -> IpRanges:
    """The ranges of an ip-ranges.json document's text (source names it in errors)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IpRangesError(f"{source}: is not complete JSON ({exc.msg} at line {exc.lineno}): "
                            "a truncated download? Fetch "
                            "https://ip-ranges.amazonaws.com/ip-ranges.json again") from exc
    if not isinstance(doc, dict):
        raise IpRangesError(f"{source}: is not an ip-ranges.json object")
    token = doc.get("syncToken")
    if not (isinstance(token, str) and token.isdigit()) and not isinstance(token, int):
        raise IpRangesError(f"{source}: syncToken: {token!r} is not a number: this is not "
                            "AWS's ip-ranges.json")
    date = doc.get("createDate")
    if not isinstance(date, str) or not DATE_RE.match(date):
        raise IpRangesError(f"{source}: createDate: {date!r} is not YYYY-MM-DD-hh-mm-ss")
    found: dict[str, str] = {}
    conflicts = 0
    for field, key, family in (("prefixes", "ip_prefix", 4), ("ipv6_prefixes", "ipv6_prefix", 6)):
        rows = doc.get(field)
        if not isinstance(rows, list):
            raise IpRangesError(f"{source}: {field}: is missing or not a list")
        for i, row in enumerate(rows):
            where = f"{source}: {field}[{i}]"
            if not isinstance(row, dict):
                raise IpRangesError(f"{where}: is not an object")
            region = row.get("region")
            if not isinstance(region, str) or not REGION_RE.match(region):
                raise IpRangesError(f"{where}.region: {region!r} is not a region code")
            try:
                net = ipaddress.ip_network(str(row.get(key)), strict=True)
            except ValueError as exc:
                raise IpRangesError(f"{where}.{key}: {row.get(key)!r} is not a network "
                                    f"({exc})") from exc
            if net.version != family:
                raise IpRangesError(f"{where}.{key}: {net} is not IPv{family}")
            prefix = str(net)
            old = found.get(prefix)
            if old is None or (old == "GLOBAL" and region != "GLOBAL"):
                found[prefix] = region
            elif old != region and region != "GLOBAL":
                conflicts += 1
    if not found:
        raise IpRangesError(f"{source}: lists no prefix: fetch the file again")
    nets = sorted(found, key=lambda p: (ipaddress.ip_network(p).version,
                                        ipaddress.ip_network(p)))
    v4 = sum(1 for p in nets if ":" not in p)
    return IpRanges(int(token), date, tuple((p, found[p]) for p in nets), v4, len(nets) - v4,
                    conflicts)


def load(path: str | Path) -> IpRanges:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise IpRangesError(f"{p}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise IpRangesError(f"{p}: is not UTF-8 text: fetch the file again") from exc
    return parse(text, str(p))


def map_text(ranges: IpRanges) -> str:
    head = [HEADER, f"# syncToken: {ranges.sync_token}", f"# createDate: {ranges.create_date}",
            f"# prefixes: {ranges.ipv4} ipv4, {ranges.ipv6} ipv6"]
    return "\n".join(head + [f"{p} {r}" for p, r in ranges.entries]) + "\n"


def map_header(text: str) -> dict[str, str | None]:
    """syncToken and createDate of a map file's header (None where absent)."""
    out: dict[str, str | None] = {"syncToken": None, "createDate": None}
    for line in text.splitlines()[:8]:
        for name in out:
            if line.startswith(f"# {name}: "):
                out[name] = line.split(": ", 1)[1].strip()
    return out


def realistic(n4: int = 9000, n6: int = 4400, seed: int = 19) -> dict[str, Any]:
    """A synthetic document of AWS's size and shape: several services per prefix, GLOBAL
    supernets containing regional prefixes, real region codes. Deterministic."""
    rnd = random.Random(seed)
    regions = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1",
               "ap-southeast-1", "ap-northeast-1", "sa-east-1", "ap-south-1"]
    services = ["AMAZON", "EC2", "S3", "CLOUDFRONT", "ROUTE53_HEALTHCHECKS"]
    v4: list[dict[str, str]] = []
    seen4: set[str] = set()
    while len(seen4) < n4:
        net = ipaddress.ip_network((rnd.randrange(1 << 8, 223 << 24) & ~0xFF,
                                    rnd.choice((20, 22, 24))), strict=False)
        if str(net) in seen4:
            continue
        seen4.add(str(net))
        region = "GLOBAL" if rnd.random() < 0.02 else rnd.choice(regions)
        for svc in rnd.sample(services, rnd.randint(1, 2)):
            v4.append({"ip_prefix": str(net), "region": region, "service": svc,
                       "network_border_group": region})
    v6: list[dict[str, str]] = []
    seen6: set[str] = set()
    while len(seen6) < n6:
        net = ipaddress.ip_network((0x2600_1F00 << 96 | rnd.getrandbits(40) << 72,
                                    rnd.choice((40, 44, 48, 56))), strict=False)
        if str(net) in seen6:
            continue
        seen6.add(str(net))
        region = "GLOBAL" if rnd.random() < 0.02 else rnd.choice(regions)
        for svc in rnd.sample(services, rnd.randint(1, 2)):
            v6.append({"ipv6_prefix": str(net), "region": region, "service": svc,
                       "network_border_group": region})
    return {"syncToken": "1764547200", "createDate": "2026-12-01-00-00-00",
            "prefixes": v4, "ipv6_prefixes": v6}
