#!/usr/bin/python
"""Documentation of the action georelay.relay.route53_fleet (plugins/action/route53_fleet.py
runs it)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: route53_fleet
short_description: Keep the fleet's Route53 records and health checks true to the inventory
version_added: 0.3.0
author: georelay
description:
  - Runs on the control node (an action, nothing is sent to a host), once per play
    (C(run_once)), with the AWS credentials of C(ansible-playbook) (the standard boto3
    chain, C(AWS_PROFILE), C(AWS_ENDPOINT_URL_ROUTE_53), ...).
  - Builds the fleet from the variables of every inventory host, untemplated, as
    C(georelay-dns) reads them through C(ansible-inventory), then plans and applies with
    the planner of C(georelay-dns plan) and C(georelay-dns apply), so the same inventory
    gives the same plan and checksum from either (docs/DNS.md).
  - Reads the hosted zone and the operator state it holds (evacuated regions, weight
    overrides; C(georelay-dns evacuate), C(restore), C(weight)) and honours it, so applying
    never undoes an evacuation.
  - Touches only what georelay owns (record SetIdentifiers starting C(<owner>:), health
    checks whose CallerReference starts C(grl:<owner>:)). A record that georelay does not
    own in the way of a desired one fails the task, naming it.
  - Refuses to update or delete more than 30% of what georelay owns (when it owns at least
    10 records and health checks) unless O(force=true).
  - Needs the Python package C(georelay) (C(georelay_dns)) in the Python that runs Ansible,
    C(pip install georelay) (see the collection's requirements.txt).
options:
  force:
    description:
      - Apply even when the plan updates or deletes more than 30% of the records and health
        checks georelay owns. Check the plan (C(--check --diff)) first.
    type: bool
    default: false
  checksum:
    description:
      - Apply only if the plan still has this checksum (from C(georelay-dns plan) or an
        earlier C(--check) run of this module, RV(checksum)); otherwise fail without
        changing anything.
    type: str
  wait_timeout:
    description:
      - Seconds to wait for Route53 to report the record changes C(INSYNC) before the task
        fails. Health checks no longer used are deleted only after that.
    type: float
    default: 600
attributes:
  action:
    support: full
    details: The whole module is an action on the control node.
  check_mode:
    support: full
    details: Plans and reports what apply would change; writes nothing to Route53. A plan
      past the 30% threshold without O(force) is shown (and its diff) with a warning that
      the run would fail; conflicts and a changed O(checksum) fail in check mode as well.
  diff_mode:
    support: full
    details: One before/after per record set and health check the plan changes, as Route53
      holds it (YAML); empty before for a creation, empty after for a deletion.
  platform:
    platforms: posix
notes:
  - The inventory must be one that C(georelay-dns) reads, so that on-call can use the CLI on
    it (C(georelay-dns evacuate) when a region fails). DNS variables are therefore given
    literally, not as Jinja expressions. Variables from C(group_vars/) beside the playbook
    are not the inventory's; keep DNS settings in the inventory.
  - An AWS error fails the task with the one line C(georelay-dns) prints for it. Interrupted
    anywhere, a re-run converges.
seealso:
  - module: georelay.relay.fleet
  - name: georelay-dns and the record tree
    description: docs/DNS.md of the collection.
    link: https://github.com/georelay/georelay/blob/main/docs/DNS.md
"""

EXAMPLES = r"""
- name: Route53 records and health checks for the fleet
  georelay.relay.route53_fleet:
  delegate_to: localhost
  run_once: true

- name: Apply past the 30% threshold, only the plan reviewed before
  georelay.relay.route53_fleet:
    force: true
    checksum: sha256:0123456789abcdef0123456789abcdef
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
checksum:
  description: The plan's checksum (what O(checksum) and C(georelay-dns apply --checksum)
    compare).
  returned: when the plan was made
  type: str
  sample: sha256:6f1c0e0b1e7f4c1d9a2b3c4d5e6f7a8b
counts:
  description: Changes of the plan by kind.
  returned: when the plan was made
  type: dict
  sample: {healthcheck_create: 8, healthcheck_update: 0, healthcheck_delete: 0,
           record_create: 12, record_upsert: 0, record_delete: 0}
owned:
  description: Records and health checks georelay owned before this run.
  returned: when the plan was made
  type: int
destructive:
  description: Owned records and health checks the plan updates or deletes.
  returned: when the plan was made
  type: int
over_threshold:
  description: Whether the plan updates or deletes more than 30% of what is owned.
  returned: when the plan was made
  type: bool
changes:
  description: The plan, one line per change, grouped by service and region (as
    C(georelay-dns plan) prints it).
  returned: when the plan was made
  type: list
  elements: str
  sample: ["fast.example.com / us-east-1:",
           "  + fast.example.com A [georelay:lat:fast.example.com:us-east-1] latency ..."]
conflicts:
  description: Records georelay does not own that are in the way (the task then fails).
  returned: when the plan was made
  type: list
  elements: str
plan_warnings:
  description: What the plan warns about (e.g. a region whose proxies all have weight 0),
    also shown as warnings of the task.
  returned: when the plan was made
  type: list
  elements: str
operator_state:
  description: The operator state the plan honours (evacuated regions, weight overrides).
  returned: when the plan was made
  type: dict
zone:
  description: The hosted zone's name.
  returned: when the plan was made
  type: str
zone_id:
  description: The hosted zone's id.
  returned: when the plan was made
  type: str
applied:
  description: What apply did.
  returned: changed and not in check mode
  type: dict
  contains:
    healthchecks_created:
      description: The health checks created, their id by key (C(<hostname>/<proxy>)).
      type: dict
    healthchecks_updated:
      description: Ids of the health checks updated in place.
      type: list
      elements: str
    record_batches:
      description: ChangeResourceRecordSets requests made.
      type: int
    change_ids:
      description: Route53 change ids, each INSYNC when the task returns.
      type: list
      elements: str
    healthchecks_deleted:
      description: Ids of the health checks deleted (no record used them any more).
      type: list
      elements: str
problems:
  description: Every problem of the inventory, each naming the host or group, the variable
    and the fix.
  type: list
  elements: str
  returned: when the inventory has problems
"""
