"""Configurations of the benchmark's peers: the nginx gateway, the nginx relay, the seed,
the minimal HAProxy relay (bench-rules).

The gateway is nginx (SNI-strict like API Gateway) so that it is not the bottleneck. The
nginx relay does the same job as georelay's HAProxy (TLS in, Host and SNI rewritten,
verified TLS out, kept-alive upstream). The seed is seed 001's configuration as written,
plus what HAProxy 2.6 needs to accept it (a CA for `verify`).
"""

from __future__ import annotations

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
