"""A Route53 stand-in for the demo: moto_server on loopback, with the fleet's hosted zone.

georelay-dns reaches it the standard boto3 way, AWS_ENDPOINT_URL_ROUTE_53; nothing in
georelay-dns knows it is not AWS. Its state lives in memory: a restart starts empty.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

import boto3

from georelay_lab import processes

ENV = {"AWS_ACCESS_KEY_ID": "georelay-lab", "AWS_SECRET_ACCESS_KEY": "georelay-lab",
       "AWS_DEFAULT_REGION": "us-east-1"}


def endpoint(listen: str) -> str:
    return f"http://{listen}"


def start(lab_dir: Path, listen: str, zone: str) -> list[str]:
    """Start moto_server at listen (ip:port) unless it runs; make sure the zone exists."""
    host, _, port = listen.rpartition(":")
    pid_file, log_file = lab_dir / "route53/moto.pid", lab_dir / "route53/moto.log"
    lines = []
    if processes.running(pid_file):
        lines.append(f"route53 stand-in already running on {listen}")
    else:
        moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
        pid = processes.start([moto, "-H", host, "-p", port], pid_file, log_file)
        if not processes.wait_port(host, int(port), timeout=20):
            raise SystemExit(f"georelay-lab: moto_server did not start; see {log_file}")
        lines.append(f"route53 stand-in (moto_server) on {listen} (pid {pid})")
    client = boto3.client("route53", endpoint_url=endpoint(listen),
                          aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
                          region_name=ENV["AWS_DEFAULT_REGION"])
    names = [z["Name"] for z in client.list_hosted_zones()["HostedZones"]]
    if f"{zone}." not in names:
        client.create_hosted_zone(Name=zone, CallerReference=f"georelay-lab-{uuid.uuid4()}")
        lines.append(f"created hosted zone {zone}")
    lines.append(f"export AWS_ENDPOINT_URL_ROUTE_53={endpoint(listen)} " +
                 " ".join(f"{k}={v}" for k, v in ENV.items()))
    return lines
