"""Route53 access: the client (standard boto3 chain, botocore's retries), record sets to
and from :class:`Record`, and the paginated reads.

Retries are botocore's alone, configured the standard AWS way: ``AWS_RETRY_MODE`` and
``AWS_MAX_ATTEMPTS``, or ``retry_mode`` and ``max_attempts`` in the profile's section of the
shared config file (``AWS_PROFILE``, ``AWS_CONFIG_FILE``). What the user sets is never
overridden; what they leave unset gets georelay-dns's default, adaptive mode with 8 attempts
in all (:data:`DEFAULT_RETRIES`). A retries value passed in botocore's ``Config`` wins over
the environment and the config file, key by key, so only the unset keys are passed.

botocore's standard and adaptive modes retry Throttling and PriorRequestNotComplete (both
in their throttling list, with the 1 s throttling backoff scale; legacy mode has a Route53
policy for each in ``_retry.json``), so georelay-dns adds no retry loop of its own: an
error that reaches :func:`call` has used up the attempts the user allows.

Reads are whole-zone paginated lists (ListResourceRecordSets, ListHealthChecks), never a
call per record, so a plan costs ceil(records/300) + ceil(health checks/1000) + 1 calls.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError, ProfileNotFound

from georelay_dns.records import Alias, Live, LiveHealthCheck, Record, norm_name

log = logging.getLogger(__name__)

RETRY_MODES = ("legacy", "standard", "adaptive")
# Used for what the user did not set. Adaptive: standard retries plus client-side rate
# limiting once Route53 throttles (5 requests/s per account, shared by every tool of it).
# 8 attempts: 7 waits of rand(0, 1) * min(2**i, 20) s (i = 0..6) on throttling: at most
# 71 s of waiting in one call, 35 s on average.
DEFAULT_RETRIES = {"mode": "adaptive", "total_max_attempts": 8}
# Where botocore reads each retry setting: (environment variable, shared config key).
_SETTINGS = {"mode": ("AWS_RETRY_MODE", "retry_mode"),
             "total_max_attempts": ("AWS_MAX_ATTEMPTS", "max_attempts")}

Sleep = Callable[[float], None]


class AwsConfigError(ValueError):
    """An AWS setting georelay-dns reads (profile, retries) is unusable; names the fix."""


def _user_setting(core: botocore.session.Session, key: str) -> tuple[str, str] | None:
    """(where, value) of a retry setting the user gave, in botocore's order (environment,
    then the profile's section of the shared config file), or None."""
    env, conf = _SETTINGS[key]
    if env in os.environ:
        return env, os.environ[env]
    try:
        value = core.get_scoped_config().get(conf)
    except ProfileNotFound as e:
        raise AwsConfigError(
            f"{e}. Fix: set AWS_PROFILE to a profile of "
            f"{core.get_config_variable('config_file')} (or AWS_CONFIG_FILE), or unset "
            "it") from e
    if value is None:
        return None
    return f"{conf} of profile {core.profile or 'default'} in " \
        f"{core.get_config_variable('config_file')}", str(value)


def retry_config(core: botocore.session.Session) -> dict[str, Any]:
    """The ``retries`` to pass to botocore: the defaults the user did not set, checked
    values for those they did (botocore itself would fail with a traceback on them)."""
    retries: dict[str, Any] = {}
    for key, default in DEFAULT_RETRIES.items():
        given = _user_setting(core, key)
        if given is None:
            retries[key] = default
            continue
        where, value = given
        value = value.strip()
        if key == "mode" and value not in RETRY_MODES:
            raise AwsConfigError(
                f"{where}: {value!r} is not a botocore retry mode. Fix: use one of "
                f"{', '.join(RETRY_MODES)}, or unset it (georelay-dns then uses "
                f"{DEFAULT_RETRIES['mode']})")
        if key == "total_max_attempts" and not (value.isdigit() and int(value) >= 1):
            raise AwsConfigError(
                f"{where}: {value!r} is not a number of attempts. Fix: a whole number, 1 or "
                "more, counting the first attempt (1 = no retry), or unset it (georelay-dns "
                f"then makes {DEFAULT_RETRIES['total_max_attempts']})")
    return retries


def make_client() -> Any:
    """A Route53 client from the standard chain (AWS_PROFILE, AWS_ENDPOINT_URL_ROUTE_53...)
    with botocore's retries as the user configured them, else :data:`DEFAULT_RETRIES`.

    A new session each time, so the environment and config file of the moment count.
    """
    core = botocore.session.get_session()
    retries: Any = retry_config(core) or None  # botocore's keys, checked by Config
    cfg = Config(retries=retries, connect_timeout=10, read_timeout=60,
                 user_agent_extra="georelay-dns")
    return boto3.session.Session(botocore_session=core).client("route53", config=cfg)


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def call(client: Any, op: str, sleep: Sleep | None = None, **kwargs: Any) -> Any:
    """client.<op>(**kwargs): botocore retries it (no loop here); a call that needed
    retries is logged, so throttling shows before it fails.

    ``sleep`` is accepted for callers that pass one and unused: botocore waits between its
    attempts.
    """
    del sleep
    got = getattr(client, op)(**kwargs)
    retries = got.get("ResponseMetadata", {}).get("RetryAttempts", 0) if isinstance(
        got, dict) else 0
    if retries:
        log.warning("%s: succeeded after %d retr%s", op, retries,
                    "y" if retries == 1 else "ies")
    return got


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


def read_live(client: Any, zone_id: str) -> Live:
    by_key: dict[tuple[str, str, str], Record] = {}
    raw: dict[tuple[str, str, str], dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"HostedZoneId": zone_id, "MaxItems": "300"}
    while True:  # manual paging: a check that the endpoint makes progress
        page = call(client, "list_resource_record_sets", **kwargs)
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
        page = call(client, "list_health_checks", **hc_kwargs)
        for hc in page["HealthChecks"]:
            checks.append(LiveHealthCheck(hc["Id"], hc["CallerReference"],
                                          int(hc.get("HealthCheckVersion", 1)),
                                          hc["HealthCheckConfig"]))
        if not page.get("IsTruncated"):
            break
        hc_kwargs["Marker"] = page["NextMarker"]
    return Live(zone_id, list(by_key.values()), raw, checks)
