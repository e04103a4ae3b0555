"""An HTTP/2 stand-in for one region's API Gateway: Debian's nginx, as strict as gateway.py.

The Python stand-in (gateway.py) speaks HTTP/1.1 only; this one offers ALPN ``h2,http/1.1``
so a proxy with ``haproxy_backend_alpn: "h2,http/1.1"`` really talks HTTP/2 to it. Same
rules, same answers, same ``x-lab-*`` header names:

- the TLS handshake fails unless the SNI names one of its custom domains
  (``ssl_reject_handshake`` on the default server);
- a request whose Host (HTTP/1.1) or ``:authority`` (HTTP/2; nginx 1.22 turns it into the
  request's host, and answers 400 when both are sent) is not the domain the connection's
  SNI named gets 403 ``{"message":"Forbidden"}`` with ``x-amzn-ErrorType:
  ForbiddenException``;
- otherwise 200, echoing region, host, SNI, protocol (``HTTP/1.1`` or ``HTTP/2.0``),
  X-Forwarded-*, connection and request number on it, as JSON and as ``x-lab-*`` headers
  (``x-lab-protocol`` is this stand-in's addition; a header whose value would be empty is
  left out, nginx sends none); ``GET /ping`` answers ``{"ping":"pong",...}``.

Every request is also written to ``<region>-access.log`` beside the pid file (protocol,
host, SNI, connection, path, status, X-Forwarded-For or ``-``), so a test can see what
reached the gateway, health checks (no X-Forwarded-For) included. The Python stand-in's
fault knobs (``delay_ms``, ``status``, ``bytes``, ``reset``) and its runtime faults
(``georelay-lab gateway-fault``, which refuses a domain of an nginx gateway) are not offered
here. Its domains are the ones :meth:`StandIns.domains` gives, one-box domains included.

It runs unprivileged: everything nginx writes (temporary directories, error and access
log, pid file) is below the lab directory, ``daemon off`` with the master process started
and stopped by :mod:`georelay_lab.processes` through the same pid file as the Python one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from georelay_lab import processes, programs

KIND = "nginx"
FORBIDDEN = '{"message":"Forbidden"}'
KEEPALIVE_REQUESTS = 1_000_000  # requests per connection: practically unlimited
KEEPALIVE_TIMEOUT_S = 60.0  # seconds a connection may stay idle before the gateway closes it
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def binary() -> str:
    """The nginx executable (Debian installs it in /usr/sbin, often not on a user's PATH);
    ProgramError naming the package when it is not installed."""
    return programs.path("nginx")


def _echo_headers(region: str) -> str:
    pairs = [("x-lab-region", region), ("x-lab-received-host", "$host"),
             ("x-lab-sni", "$ssl_server_name"), ("x-lab-protocol", "$server_protocol"),
             ("x-lab-connection", "$connection"), ("x-lab-xff", "$http_x_forwarded_for"),
             ("x-lab-xfh", "$http_x_forwarded_host")]
    return "\n".join(f'            add_header {name} "{value}" always;' for name, value in pairs)


def _forbidden_unless_host_is_sni() -> str:
    return (
        "            if ($host != $ssl_server_name) {\n"
        "                add_header x-amzn-ErrorType ForbiddenException always;\n"
        '                add_header x-amzn-RequestId "lab-$connection" always;\n'
        f"                return 403 '{FORBIDDEN}';\n"
        "            }")


def config(*, run_dir: Path, listen: str, region: str, domains: list[str], pem: Path,
           pid_file: Path, access_log: Path,
           keepalive_requests: int = KEEPALIVE_REQUESTS,
           keepalive_timeout: float = KEEPALIVE_TIMEOUT_S) -> str:
    """nginx.conf of one stand-in gateway; run_dir holds its temporary directories. The
    gateway closes a connection after keepalive_requests requests (over HTTP/2: GOAWAY after
    that many streams), as load balancers in front of real gateways do, and one that stayed
    idle keepalive_timeout seconds (HTTP/1.1 and, nginx >= 1.19.7, HTTP/2: GOAWAY)."""
    if keepalive_timeout <= 0:
        raise ValueError(f"keepalive_timeout must be > 0 seconds, not {keepalive_timeout}")
    echo = (
        '{"connection":$connection,"host":"$host","method":"$request_method",'
        '"path":"$request_uri","protocol":"$server_protocol",'
        f'"region":"{region}",'
        '"request_on_connection":$connection_requests,"sni":"$ssl_server_name",'
        '"x_forwarded_for":$lab_xff,"x_forwarded_host":$lab_xfh,"x_forwarded_proto":$lab_xfp}')
    ping = f'{{"ping":"pong","protocol":"$server_protocol","region":"{region}"}}'
    temp = "\n".join(f"    {name}_temp_path {run_dir}/tmp/{name};" for name in TEMP_PATHS)
    names = " ".join(domains)
    guard = _forbidden_unless_host_is_sni()
    headers = _echo_headers(region)
    return f"""# Stand-in API Gateway for {region}, written by georelay-lab (nginx_gateway.py).
daemon off;
master_process on;
worker_processes 1;
pid {pid_file};
lock_file {run_dir}/nginx.lock;
error_log stderr warn;
events {{ worker_connections 1024; }}  # a common open-file limit: no warning
http {{
{temp}
    log_format lab '$server_protocol host=$host sni=$ssl_server_name '
                   'conn=$connection req=$connection_requests $request_method $request_uri '
                   'status=$status xff=$http_x_forwarded_for';
    access_log {access_log} lab;
    server_tokens off;
    default_type application/json;
    keepalive_timeout {round(keepalive_timeout * 1000)}ms;
    keepalive_requests {keepalive_requests};
    map $http_x_forwarded_for $lab_xff {{ "" null; default "\\"$http_x_forwarded_for\\""; }}
    map $http_x_forwarded_host $lab_xfh {{ "" null; default "\\"$http_x_forwarded_host\\""; }}
    map $http_x_forwarded_proto $lab_xfp {{ "" null; default "\\"$http_x_forwarded_proto\\""; }}
    server {{
        # No SNI, or an SNI naming none of its domains: the handshake fails. A request
        # whose Host or :authority names none of them, on a connection another server
        # took, is chosen this server too (nginx does so for HTTP/2): it is forbidden.
        listen {listen} ssl default_server;
        ssl_reject_handshake on;
        location / {{
            add_header x-amzn-ErrorType ForbiddenException always;
            add_header x-amzn-RequestId "lab-$connection" always;
            return 403 '{FORBIDDEN}';
        }}
    }}
    server {{
        listen {listen} ssl http2;
        server_name {names};
        ssl_certificate {pem};
        ssl_certificate_key {pem};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
{guard}
{headers}
            return 200 '{echo}';
        }}
        location = /ping {{
{guard}
{headers}
            return 200 '{ping}';
        }}
    }}
}}
"""


def start(*, run_dir: Path, listen: str, region: str, domains: list[str], pem: Path,
          pid_file: Path, log_file: Path, keepalive_requests: int = KEEPALIVE_REQUESTS,
          keepalive_timeout: float = KEEPALIVE_TIMEOUT_S) -> int:
    """Write the configuration, check it, start nginx in the background; its pid.

    The pid file is the one :func:`georelay_lab.processes.stop` reads (nginx writes the
    same pid there itself, and removes the file when it exits); its error log is log_file.
    """
    try:
        executable = binary()
    except programs.ProgramError as exc:
        raise SystemExit(f"georelay-lab: {exc}") from None
    for name in TEMP_PATHS:
        (run_dir / "tmp" / name).mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(config(run_dir=run_dir, listen=listen, region=region, domains=domains,
                           pem=pem, pid_file=pid_file, access_log=access_log(pid_file),
                           keepalive_requests=keepalive_requests,
                           keepalive_timeout=keepalive_timeout))
    base = [executable, "-p", str(run_dir), "-e", "stderr", "-c", str(conf)]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        checked = subprocess.run([*base, "-t", "-q"], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=log, timeout=30, check=False)
    if checked.returncode != 0:
        raise SystemExit(f"georelay-lab: nginx rejected {conf}; see {log_file}")
    return processes.start(base, pid_file, log_file)


def access_log(pid_file: Path) -> Path:
    """The access log of the gateway whose pid file is pid_file."""
    return pid_file.with_name(f"{pid_file.stem}-access.log")
