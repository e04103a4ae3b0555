"""Simulated users of a service, sending requests through the lab's proxies in the background.

Each user is a browser: its own User-Agent (onebox_demo.user_agent), a cookie jar that keeps
the one-box bucket cookie the proxy set, and the partition its last request was served in,
as the stand-in gateway echoed it (X-Req-Partition) and by which gateway domain answered
(one-box or regular). Users take turns, spread over the proxies given, at a bounded rate and
for a bounded time: for the rollout demo (georelay-tools rollout-demo) and the rollout tests.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from georelay_lab import client
from georelay_lab.onebox_demo import user_agent

BOUND_S = 600.0  # no loop runs longer than this, whatever happens


@dataclass(frozen=True)
class Target:
    """A proxy's public listener and the service's names there."""

    address: str
    port: int
    hostname: str  # the public name (SNI and Host)
    onebox_domains: frozenset[str]  # the gateway domains that are the one-box
    ca_file: str


@dataclass
class User:
    n: int
    cookie: str | None = None  # "name=bucket" as the proxy set it
    partition: str | None = None  # one-box | regular, from the gateway's echo
    gateway: str | None = None  # the gateway domain that answered
    status: int | None = None


@dataclass
class Users:
    targets: list[Target]
    count: int = 100
    rate: float = 50.0  # requests per second, all users together
    cookie_name: str = "georelay_partition"
    path: str = "/anything"
    users: list[User] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.users = [User(n) for n in range(1, self.count + 1)]

    def request(self, user: User, target: Target) -> None:
        """One request of user through target; updates the user and the counters."""
        headers = {"User-Agent": user_agent(user.n)}
        if user.cookie:
            headers["Cookie"] = user.cookie
        ctx = self._contexts.get(target.ca_file)
        if ctx is None:
            ctx = self._contexts[target.ca_file] = client.context(target.ca_file)
        conn = client.PinnedHTTPSConnection(target.address, target.port, target.hostname, ctx,
                                            timeout=5)
        try:
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
            for k, v in resp.getheaders():
                if k.lower() == "set-cookie" and v.startswith(self.cookie_name + "="):
                    user.cookie = v.split(";", 1)[0]
            del body
            domain = resp.getheader("x-lab-received-host") or ""
        except (OSError, ssl.SSLError, http.client.HTTPException):
            with self._lock:
                self.errors += 1
            return
        finally:
            conn.close()
        with self._lock:
            self.statuses[status] += 1
            user.status = status
            if domain:
                user.gateway = domain
                user.partition = ("one-box" if domain in target.onebox_domains
                                  else "regular")

    def _loop(self) -> None:
        end = time.monotonic() + BOUND_S
        gap = 1.0 / self.rate
        i = 0
        while not self._stop.is_set() and time.monotonic() < end:
            started = time.monotonic()
            user = self.users[i % len(self.users)]
            self.request(user, self.targets[i % len(self.targets)])
            i += 1
            self._stop.wait(max(0.0, gap - (time.monotonic() - started)))

    def __enter__(self) -> Users:
        self._thread = threading.Thread(target=self._loop, name="users", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def everyone_once(self) -> dict[str, int]:
        """One more request of every user (in the caller's thread): partitions counted."""
        for i, user in enumerate(self.users):
            self.request(user, self.targets[i % len(self.targets)])
        return self.partitions()

    def partitions(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(u.partition or "none" for u in self.users))
