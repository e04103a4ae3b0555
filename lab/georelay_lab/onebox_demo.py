"""The one-box split as users see it: simulated users through one proxy of the lab.

Each user is a browser with its own User-Agent on its own kept-alive connection. Its first
request carries no cookie: the proxy buckets it (a stable hash of the User-Agent and the
client address), routes it and answers with the bucket in a Set-Cookie. Its second request
sends that cookie back: the same bucket and partition, and no Set-Cookie. The lab gateway
echoes what it received, so each line shows the partition the gateway was told
(X-Req-Partition), the gateway domain that answered (one-box or regular), and the headers a
cache would see (Set-Cookie, Vary).

Then many more users (first requests only) measure the split against the percentage set:
the inventory's onebox_percent and, where the proxy's admin socket is on this machine (the
demo's proxies), the value HAProxy uses now (a rollout may have changed it).
"""

from __future__ import annotations

import contextlib
import http.client
import math
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

from georelay_agent import haproxy_runtime as rt
from georelay_agent import onebox_map as ob
from georelay_lab import client
from georelay_lab.stand_ins import StandIns
from georelay_model import Proxy, Service

PATH = "/anything"


class SplitError(ValueError):
    """A service or proxy the split cannot be shown for; ``field`` names the option."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def user_agent(n: int) -> str:
    """The User-Agent of simulated user n: browser-like, different for every user."""
    return (f"Mozilla/5.0 (X11; Linux x86_64; demo user {n}) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) Chrome/{120 + n % 7}.0.0.0 Safari/537.36")


@dataclass
class Answer:
    """One response through the proxy, as a browser and the gateway saw it."""

    status: int
    headers: list[tuple[str, str]]
    echo: dict[str, object] = field(default_factory=dict)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]

    def set_cookies(self, cookie: str) -> list[str]:
        return [v for v in self.all("set-cookie") if v.startswith(cookie + "=")]

    @property
    def vary(self) -> list[str]:
        """Every name of every Vary line, in order."""
        return [n.strip() for v in self.all("vary") for n in v.split(",") if n.strip()]

    @property
    def partition(self) -> list[str]:
        seen = self.echo.get("x_req_partition")
        return [str(p) for p in seen] if isinstance(seen, list) else []

    @property
    def gateway_domain(self) -> str:
        return str(self.echo.get("host", "?"))

    @property
    def gateway_region(self) -> str:
        return str(self.echo.get("region", "?"))


def _get(conn: http.client.HTTPSConnection, headers: dict[str, str]) -> Answer:
    conn.request("GET", PATH, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    answer = Answer(resp.status, resp.getheaders())
    if resp.status == 200:
        with contextlib.suppress(ValueError):
            answer.echo = client.Reply(resp.status, {}, body).json()
    return answer


@dataclass
class Split:
    """The one-box split of one service, shown through one proxy of a lab."""

    lab: StandIns
    service: Service
    proxy: Proxy

    @classmethod
    def of(cls, lab: StandIns, service: str | None, proxy: str | None) -> Split:
        """The split of service (None: the first with a one-box) through proxy (None: the
        first proxy of a region with one-box on); SplitError naming what to give instead."""
        fleet = lab.fleet
        with_onebox = [s for s in fleet.services if s.onebox_domain_pattern]
        if service is None:
            if not with_onebox:
                raise SplitError("service", "no service of the inventory has a one-box: add "
                                 "onebox_domain: '{region}-onebox-...' and onebox_percent to "
                                 "one of georelay_services")
            svc = with_onebox[0]
        else:
            found = [s for s in fleet.services if s.hostname == service.lower()]
            if not found:
                raise SplitError("service", f"{service} is not a service of the inventory: "
                                 f"give one of {', '.join(s.hostname for s in fleet.services)}")
            svc = found[0]
            if not svc.onebox_domain_pattern:
                others = ", ".join(s.hostname for s in with_onebox) or "none has one"
                raise SplitError("service", f"{svc.hostname} has no onebox_domain in the "
                                 f"inventory, so no one-box split: give a service with one "
                                 f"({others}) or add onebox_domain to it")
        proxies = {p.name: p for p in fleet.proxies}
        if proxy is None:
            on = [p for p in fleet.proxies if fleet.onebox_domain(svc, p.region)]
            chosen = (on or list(fleet.proxies))[0]
        elif proxy in proxies:
            chosen = proxies[proxy]
        else:
            raise SplitError("proxy", f"{proxy} is not a proxy of the inventory: give one of "
                             f"{', '.join(proxies)}")
        return cls(lab, svc, chosen)

    @property
    def cookie(self) -> str:
        return self.lab.fleet.onebox.cookie

    def connect(self) -> http.client.HTTPSConnection:
        return client.PinnedHTTPSConnection(self.proxy.public_address, self.proxy.https_port,
                                            self.service.hostname,
                                            client.context(str(self.lab.ca_file)))

    def kind(self, answer: Answer) -> str:
        """Which gateway domain answered: one-box or regular (or what else it was)."""
        domain, region = answer.gateway_domain, answer.gateway_region
        if domain == self.service.onebox_domain(region):
            return "one-box"
        if domain == self.service.apigw_domain(region):
            return "regular"
        return f"unexpected {domain}"

    def live_percent(self) -> int | None:
        """The percentage the proxy's HAProxy uses now, when its admin socket is on this
        machine below <lab dir>/proxies/<proxy> (the demo's georelay_root); else None."""
        root = self.lab.lab_dir / "proxies" / self.proxy.name
        sock = root / "run/haproxy/admin.sock"
        if not sock.exists():
            return None
        try:
            return ob.get_onebox_percent(str(sock), str(root / "etc/haproxy/onebox-percent.map"),
                                         self.service.hostname)
        except (OSError, rt.RuntimeAPIError):
            return None

    def percent(self) -> tuple[int, str]:
        """The percentage to measure against, and where it comes from."""
        live = self.live_percent()
        where = f"onebox_percent {self.service.onebox_percent}% in the inventory"
        if live is None:
            return self.service.onebox_percent, where
        return live, f"{live}% live in {self.proxy.name}'s HAProxy ({where})"

    def header(self, percent: int, where: str) -> str:
        onebox = self.lab.fleet.onebox_domain(self.service, self.proxy.region)
        rule = f"one-box while bucket < {percent}" if onebox else "everyone regular"
        return "\n".join([
            f"https://{self.service.hostname}{PATH} through {self.proxy.name} "
            f"({self.proxy.public_address}:{self.proxy.https_port}, {self.proxy.region}): "
            f"{rule}; set: {where}",
            f"   gateways: one-box {onebox or '(switched off in this region)'}, regular "
            f"{self.service.apigw_domain(self.proxy.region)}; the bucket's cookie: "
            f"{self.cookie}",
            f"   each user: its own User-Agent (\"{user_agent(0).split('; demo')[0]}; demo user N) "
            "...\"), its own connection, a request without a cookie, then one with it"])

    def users(self, count: int, percent: int) -> Iterator[tuple[str, bool]]:
        """Per user: its first and second request, checked."""
        for n in range(1, count + 1):
            try:
                yield self._user(n, percent)
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                yield (f"user {n}: FAILED: {exc} (is the lab fleet up? make demo)"), False

    def _user(self, n: int, percent: int) -> tuple[str, bool]:
        agent = user_agent(n)
        conn = self.connect()
        try:
            first = _get(conn, {"User-Agent": agent})
            cookies = first.set_cookies(self.cookie)
            bucket = cookies[0].split(";")[0].split("=", 1)[1] if len(cookies) == 1 else "?"
            second = _get(conn, {"User-Agent": agent, "Cookie": f"{self.cookie}={bucket}"})
        finally:
            conn.close()
        problems = []
        for which, a in (("1st", first), ("2nd", second)):
            if a.status != 200:
                problems.append(f"{which} answered HTTP {a.status}")
            if [v.lower() for v in a.vary].count("x-req-partition") != 1:
                problems.append(f"{which} Vary is {a.vary} (X-Req-Partition once expected)")
        if len(cookies) != 1:
            problems.append(f"1st response set {len(cookies)} {self.cookie} cookies, not one")
        if second.set_cookies(self.cookie):
            problems.append("2nd response set the cookie again")
        partition = ", ".join(first.partition) or "(none)"
        expected = "one-box" if bucket.isdigit() and int(bucket) < percent else "regular"
        if not self.lab.fleet.onebox_domain(self.service, self.proxy.region):
            expected = "regular"
        for which, a in (("1st", first), ("2nd", second)):
            if a.partition != [expected] or self.kind(a) != expected:
                problems.append(f"{which}: gateway saw X-Req-Partition {a.partition} at "
                                f"{a.gateway_domain}, expected {expected} (bucket {bucket})")
        second_cookies = "; ".join(second.set_cookies(self.cookie)) or "(none)"
        lines = [
            f"user {n:<2} bucket {bucket:>2}   gateway got X-Req-Partition: {partition:8} "
            f"answered by {first.gateway_domain} ({self.kind(first)})",
            f"   1st, no cookie:      Set-Cookie: {'; '.join(cookies) or '(none)'}   "
            f"Vary: {', '.join(first.vary) or '(none)'}",
            f"   2nd, with cookie {bucket:>2}: Set-Cookie: {second_cookies}   "
            f"Vary: {', '.join(second.vary) or '(none)'}   X-Req-Partition: "
            f"{', '.join(second.partition) or '(none)'} at {second.gateway_domain}",
        ]
        lines += [f"   PROBLEM: {p}" for p in problems]
        return "\n".join(lines), not problems

    def measure(self, count: int, percent: int) -> tuple[str, bool]:
        """First requests of count users on one kept-alive connection: the measured split
        against percent; one-box exactly for the buckets below it."""
        onebox = mismatched = 0
        conn = None
        try:
            conn = self.connect()
            for n in range(1, count + 1):
                answer = _get(conn, {"User-Agent": user_agent(n)})
                cookies = answer.set_cookies(self.cookie)
                bucket = cookies[0].split(";")[0].split("=", 1)[1] if cookies else ""
                kind = self.kind(answer)
                onebox += kind == "one-box"
                in_onebox = bucket.isdigit() and int(bucket) < percent and \
                    self.lab.fleet.onebox_domain(self.service, self.proxy.region) is not None
                mismatched += (answer.status != 200 or answer.partition != [kind]
                               or in_onebox != (kind == "one-box"))
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            return f"split: FAILED after {onebox} one-box users: {exc}", False
        finally:
            if conn is not None:
                conn.close()
        share = 100 * onebox / count
        spread = 100 * math.sqrt(min(percent, 100) / 100 * (1 - min(percent, 100) / 100) / count)
        line = (f"split over {count} users: {onebox} one-box ({share:.1f}%), {count - onebox} "
                f"regular; set: {percent}% (sampling: +/- {spread:.1f} points at {count} users)")
        if mismatched:
            line += (f"\n   PROBLEM: {mismatched} users were not in the partition of their "
                     f"bucket (one-box exactly below {percent})")
        return line, not mismatched


    def lines(self, users: int, measure: int) -> Iterator[tuple[str, bool]]:
        """What `georelay-lab onebox-split` prints, each line with whether it is as
        expected: the setup, each of users users, the split over measure users (0: none)."""
        percent, where = self.percent()
        yield self.header(percent, where), True
        if not self.lab.ca_file.exists():
            yield (f"no lab CA at {self.lab.ca_file}: the lab is not up; start it (make demo, "
                   "or georelay-lab up and deploy the fleet)"), False
            return
        yield from self.users(users, percent)
        if measure:
            yield self.measure(measure, percent)
