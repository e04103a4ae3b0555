"""Configurations of the benchmark's peers: the nginx gateway, the nginx relay, the seed,
the minimal HAProxy relay (bench-rules).

The gateway is nginx (SNI-strict like API Gateway) so that it is not the bottleneck. The
nginx relay does the same job as georelay's HAProxy (TLS in, Host and SNI rewritten,
verified TLS out, kept-alive upstream). The seed is seed 001's configuration as written,
plus what HAProxy 2.6 needs to accept it (a CA for `verify`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from georelay_lab.nginx_gateway import KEEPALIVE_REQUESTS

PUBLIC = "fast.example.com"
DOMAIN = "us-east-1-fast.example.com"
SMALL_BODY = '{"message":"hello from us-east-1","padding":"' + "x" * 48 + '"}'
LARGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Addresses:
    relay: str = "127.0.20.1"  # georelay's HAProxy
    nginx: str = "127.0.20.2"
    seed: str = "127.0.20.3"
    gateway: str = "127.0.20.10"
    management: str = "127.0.20.20"  # georelay's management listener (metrics)
    gateway_port: int = 9443


def nginx_gateway(work: Path, a: Addresses, pem: Path,
                  keepalive_requests: int = KEEPALIVE_REQUESTS) -> str:
    """keepalive_requests: the gateway closes a connection after that many requests (as load
    balancers in front of real gateways do on schedules of their own)."""
    return f"""
worker_processes 1;
pid {work}/gateway.pid;
error_log {work}/gateway-error.log warn;
events {{ worker_connections 16000; }}
http {{
    access_log off;
    keepalive_requests {keepalive_requests};
    keepalive_timeout 60s;
    server {{
        listen {a.gateway}:{a.gateway_port} ssl default_server;
        ssl_reject_handshake on;          # an unknown SNI fails the handshake
    }}
    server {{
        listen {a.gateway}:{a.gateway_port} ssl http2;   # ALPN: h2 for those who offer it
        server_name {DOMAIN};
        ssl_certificate {pem};
        ssl_certificate_key {pem};
        ssl_session_cache shared:gw:10m;
        default_type application/json;
        if ($host != "{DOMAIN}") {{
            return 403 '{{"message":"Forbidden"}}';
        }}
        location = /ping {{ return 200 '{{"ping":"pong"}}'; }}
        location = /small {{ return 200 '{SMALL_BODY}'; }}
        # The same answer under a file name a regional_redirects rule lists (.iso): a
        # non-AWS client asking for it costs the ip-ranges lookup and passes (bench variants).
        # It carries an expiry, so an edge_cache variant may store it (HAProxy 2.6 stores
        # only answers with max-age/Expires or a validator).
        location = /dl/small.iso {{
            add_header Cache-Control "max-age=60";
            return 200 '{SMALL_BODY}';
        }}
        location = /large {{ alias {work}/large.json; }}
    }}
}}
"""


def nginx_relay(work: Path, a: Addresses, pem: Path, ca: Path) -> str:
    return f"""
worker_processes 1;
pid {work}/nginx-relay.pid;
error_log {work}/nginx-relay-error.log warn;
events {{ worker_connections 16000; }}
http {{
    access_log {work}/nginx-relay-access.log combined buffer=64k flush=1s;
    keepalive_requests 1000000;
    upstream gateway {{
        server {a.gateway}:{a.gateway_port};
        keepalive 256;
    }}
    server {{
        listen {a.nginx}:443 ssl http2;
        server_name {PUBLIC};
        ssl_certificate {pem};
        ssl_certificate_key {pem};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:relay:10m;
        location / {{
            proxy_pass https://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {DOMAIN};
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_ssl_server_name on;
            proxy_ssl_name {DOMAIN};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_session_reuse on;
        }}
    }}
}}
"""


def seed_haproxy(work: Path, a: Addresses, pem: Path, ca: Path) -> str:
    """Seed 001's snippet; `verify ... ca-file` added because 2.6 refuses it otherwise."""
    return f"""
global
    nbthread 1
    pidfile {work}/seed.pid
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend https
    bind {a.seed}:443 ssl crt {pem}
    mode http
    http-request deny if !{{ ssl_fc }}
    option forwardfor
    default_backend api_gateway
backend api_gateway
    mode http
    option httpclose
    http-request replace-value Host .* {DOMAIN}
    server apig1 {a.gateway}:{a.gateway_port} ssl sni str({DOMAIN}) verify required ca-file {ca}
"""


def minimal_haproxy(address: str, pem: Path, ca: Path, gateway: str,
                    timeouts: dict[str, str]) -> str:
    """The least an HAProxy relay does (bench-rules' floor): TLS in with the public
    certificate, Host set to the gateway's domain, verified TLS out (SNI, verifyhost) on
    pooled connections, one thread; `timeouts` (name -> value) as georelay's config has them."""
    timeout_lines = "".join(f"    timeout {name} {value}\n" for name, value in timeouts.items())
    tls_out = f"ssl verify required ca-file {ca} sni str({DOMAIN}) verifyhost {DOMAIN}"
    return f"""
global
    nbthread 1
defaults
    mode http
    option http-keep-alive
{timeout_lines}frontend https
    bind {address}:443 ssl crt {pem} alpn h2,http/1.1
    default_backend gateway
backend gateway
    http-request set-header Host {DOMAIN}
    http-reuse always
    server gateway {gateway} {tls_out} alpn http/1.1
"""


# -- a rendered config as a process of its own (bench-rules, bench --instructions) --------

class RuleError(ValueError):
    """A variant's edit matched nothing in the config: the template moved."""


@dataclass(frozen=True)
class Edit:
    """A regular expression (multi-line) and its replacement; must match unless not required."""

    what: str
    pattern: str
    repl: str = ""
    required: bool = True

    def apply(self, text: str) -> str:
        new, count = re.subn(self.pattern, self.repl, text, flags=re.M)
        if not count and self.required:
            raise RuleError(f"{self.what}: nothing matches {self.pattern!r}")
        return new


def runnable(text: str, relay: str, address: str, run_dir: Path, callgrind: bool = False) -> str:
    """A variant's config as a process of its own: listeners (the management listener's
    too, on its own port) on `address`, its own runtime sockets and state file in run_dir,
    no chroot or user switch (the same for every variant). Under callgrind the checks run
    at start only (inter 1h): a check costs time, not requests, and a slowed process would
    count ~50 times more of them per request."""
    edits = [Edit("listeners", rf"^([ \t]*bind )(?:{re.escape(relay)}|[0-9.]+):",
                  rf"\g<1>{address}:"),
             Edit("runtime sockets", r"^([ \t]*stats socket )\S*/([^/\s]+)",
                  rf"\g<1>{run_dir}/\2", required=False),
             Edit("state file", r"^([ \t]*server-state-file )\S+", rf"\g<1>{run_dir}/state",
                  required=False),
             Edit("chroot and user", r"^[ \t]*(chroot|user|group)[ \t].*\n?", required=False)]
    if callgrind:
        edits.append(Edit("check interval", r"(?<![\w-])inter \S+", "inter 1h", required=False))
    for edit in edits:
        text = edit.apply(text)
    return text
