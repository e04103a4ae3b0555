"""The least-privilege IAM policy georelay-dns needs for one hosted zone."""

from __future__ import annotations

from typing import Any

from georelay_dns.state_record import state_name
from georelay_dns.tree import Tree


def policy(tree: Tree, zone_id: str, owner: str = "georelay") -> dict[str, Any]:
    """Records: only this zone, only georelay's names and types (evacuated regions' latency
    records and the operator state TXT record included: evacuate/restore/weight write
    them). Health checks: Route53 has no resource-level or tag conditions for them, so
    those actions need "*"."""
    records = [*tree.records, *tree.withheld]
    names = sorted({r.name for r in records} | {state_name(owner, tree.zone)})
    types = sorted({r.type for r in records} | {"TXT"})
    zone_arn = f"arn:aws:route53:::hostedzone/{zone_id}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadZone", "Effect": "Allow",
             "Action": ["route53:GetHostedZone", "route53:ListResourceRecordSets"],
             "Resource": zone_arn},
            {"Sid": "ChangeGeorelayRecords", "Effect": "Allow",
             "Action": "route53:ChangeResourceRecordSets", "Resource": zone_arn,
             "Condition": {"ForAllValues:StringEquals": {
                 "route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
                 "route53:ChangeResourceRecordSetsRecordTypes": types,
                 "route53:ChangeResourceRecordSetsActions": ["CREATE", "UPSERT", "DELETE"]}}},
            {"Sid": "FindZoneAndWait", "Effect": "Allow",
             "Action": ["route53:ListHostedZonesByName", "route53:GetChange"],
             "Resource": "*"},
            {"Sid": "HealthChecks", "Effect": "Allow",
             "Action": ["route53:CreateHealthCheck", "route53:UpdateHealthCheck",
                        "route53:DeleteHealthCheck", "route53:GetHealthCheck",
                        "route53:GetHealthCheckStatus", "route53:ListHealthChecks",
                        "route53:ChangeTagsForResource", "route53:ListTagsForResource"],
             "Resource": "*"},
        ],
    }
