"""The least-privilege IAM policy georelay-dns needs for one hosted zone."""

from __future__ import annotations

from typing import Any

from georelay_dns.tree import Tree


def policy(tree: Tree, zone_id: str) -> dict[str, Any]:
    """Records: only this zone, only georelay's names and types. Health checks: Route53 has
    no resource-level or tag conditions for them, so those actions need "*"."""
    names = sorted({r.name for r in tree.records})
    types = sorted({r.type for r in tree.records})
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
