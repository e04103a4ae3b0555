"""Route53 access: the client (standard boto3 chain), retries (every call, reads and
writes, goes through :func:`call`), record sets to and from :class:`Record`, and the
paginated reads.

Reads are whole-zone paginated lists (ListResourceRecordSets, ListHealthChecks), never a
call per record, so a plan costs ceil(records/300) + ceil(health checks/1000) + 1 calls.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from georelay_dns.records import Alias, Live, LiveHealthCheck, Record, norm_name

log = logging.getLogger(__name__)

# Errors worth another try after botocore's own retries gave up: Route53 answers
# PriorRequestNotComplete while an earlier change is propagating, and throttles at 5 req/s.
RETRYABLE = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete",
                       "RequestLimitExceeded", "ServiceUnavailable", "InternalError"})
ATTEMPTS = 8
BASE_DELAY = 1.0
MAX_DELAY = 30.0

Sleep = Callable[[float], None]


def make_client() -> Any:
    """A Route53 client from the standard chain (AWS_PROFILE, AWS_ENDPOINT_URL_ROUTE_53...).

    Adaptive retry mode: client-side rate limiting plus retries of throttling and transient
    errors (PriorRequestNotComplete included) before :func:`call` adds its own.
    """
    cfg = Config(retries={"mode": "adaptive", "max_attempts": 6}, connect_timeout=10,
                 read_timeout=60, user_agent_extra="georelay-dns")
    return boto3.client("route53", config=cfg)


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def call(client: Any, op: str, sleep: Sleep = time.sleep, **kwargs: Any) -> Any:
    """client.<op>(**kwargs), retried with full-jitter exponential backoff on RETRYABLE."""
    for attempt in range(ATTEMPTS):
        try:
            return getattr(client, op)(**kwargs)
        except ClientError as e:
            if error_code(e) not in RETRYABLE or attempt == ATTEMPTS - 1:
                raise
            delay = random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2 ** attempt))
            log.warning("%s: %s, retrying in %.1fs", op, error_code(e), delay)
            sleep(delay)
    raise AssertionError("unreachable")


class ZoneError(RuntimeError):
    """The hosted zone cannot be found or is ambiguous."""


def find_zone(client: Any, zone: str, zone_id: str | None) -> str:
    """The hosted zone id: georelay_dns_zone_id if set (checked), else the one zone named so."""
    if zone_id:
        try:
            got = call(client, "get_hosted_zone", Id=zone_id)
        except ClientError as e:
            raise ZoneError(f"hosted zone {zone_id} (georelay_dns_zone_id): "
                            f"{e.response['Error'].get('Message', error_code(e))}") from e
        name = norm_name(got["HostedZone"]["Name"])
        if name != zone:
            raise ZoneError(f"hosted zone {zone_id} is {name}, not georelay_zone {zone}: fix "
                            "georelay_dns_zone_id or georelay_zone")
        return zone_id
    got = call(client, "list_hosted_zones_by_name", DNSName=zone + ".", MaxItems="100")
    ids = [z["Id"].removeprefix("/hostedzone/") for z in got["HostedZones"]
           if norm_name(z["Name"]) == zone]
    if not ids:
        raise ZoneError(f"no Route53 hosted zone is named {zone}: create it, or fix "
                        "georelay_zone")
    if len(ids) > 1:
        raise ZoneError(f"{len(ids)} hosted zones are named {zone} ({', '.join(ids)}): set "
                        "georelay_dns_zone_id to the one georelay manages")
    return str(ids[0])


def record_from_rrset(rr: dict[str, Any]) -> Record:
    rtype = rr["Type"]
    values = tuple(sorted(
        norm_name(v["Value"]) if rtype == "CNAME" else v["Value"]
        for v in rr.get("ResourceRecords", [])))
    alias = None
    if "AliasTarget" in rr:
        at = rr["AliasTarget"]
        alias = Alias(at["HostedZoneId"].removeprefix("/hostedzone/"), norm_name(at["DNSName"]),
                      bool(at.get("EvaluateTargetHealth")))
    weight = rr.get("Weight")
    return Record(norm_name(rr["Name"]), rtype, rr.get("SetIdentifier", ""),
                  weight=int(weight) if weight is not None else None, region=rr.get("Region"),
                  # an alias has no TTL of its own (moto reports 0 for some)
                  ttl=None if alias else rr.get("TTL"), values=values, alias=alias,
                  health_check=rr.get("HealthCheckId"))


def rrset_from_record(r: Record) -> dict[str, Any]:
    rr: dict[str, Any] = {"Name": r.name + ".", "Type": r.type, "SetIdentifier": r.set_id}
    if r.weight is not None:
        rr["Weight"] = r.weight
    if r.region:
        rr["Region"] = r.region
    if r.alias:
        rr["AliasTarget"] = {"HostedZoneId": r.alias.zone_id, "DNSName": r.alias.dns_name + ".",
                             "EvaluateTargetHealth": r.alias.evaluate}
    else:
        rr["TTL"] = r.ttl
        rr["ResourceRecords"] = [{"Value": v} for v in r.values]
    if r.health_check:
        rr["HealthCheckId"] = r.health_check
    return rr


def read_live(client: Any, zone_id: str, sleep: Sleep = time.sleep) -> Live:
    by_key: dict[tuple[str, str, str], Record] = {}
    raw: dict[tuple[str, str, str], dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"HostedZoneId": zone_id, "MaxItems": "300"}
    while True:  # manual paging so each page goes through call()'s retries
        page = call(client, "list_resource_record_sets", sleep=sleep, **kwargs)
        new = 0
        for rr in page["ResourceRecordSets"]:
            rec = record_from_rrset(rr)
            new += rec.key not in by_key
            by_key[rec.key] = rec
            raw[rec.key] = rr
        if not page.get("IsTruncated"):
            break
        if not new:  # an endpoint that ignores StartRecordIdentifier would loop forever
            raise RuntimeError("ListResourceRecordSets paging made no progress at "
                               f"{page.get('NextRecordName')} {page.get('NextRecordType')}")
        kwargs["StartRecordName"] = page["NextRecordName"]
        kwargs["StartRecordType"] = page["NextRecordType"]
        if page.get("NextRecordIdentifier"):
            kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]
        else:
            kwargs.pop("StartRecordIdentifier", None)
    checks: list[LiveHealthCheck] = []
    hc_kwargs: dict[str, Any] = {"MaxItems": "1000"}
    while True:
        page = call(client, "list_health_checks", sleep=sleep, **hc_kwargs)
        for hc in page["HealthChecks"]:
            checks.append(LiveHealthCheck(hc["Id"], hc["CallerReference"],
                                          int(hc.get("HealthCheckVersion", 1)),
                                          hc["HealthCheckConfig"]))
        if not page.get("IsTruncated"):
            break
        hc_kwargs["Marker"] = page["NextMarker"]
    return Live(zone_id, list(by_key.values()), raw, checks)
