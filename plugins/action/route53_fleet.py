"""Action georelay.relay.route53_fleet: keep the Route53 zone true to the inventory of the
play, with georelay-dns's own planner (documented in plugins/modules/route53_fleet.py).

Runs on the control node inside ansible-playbook, with the AWS credentials of that process
(standard boto3 chain), and imports georelay_dns from the Python that runs Ansible (install
georelay there: ``pip install georelay``). The steps are georelay_dns.workflow's, the ones
``georelay-dns plan`` and ``apply`` run, so the module and the CLI make the same plan (same
checksum) from the same inventory.

The inventory is read from the play's hostvars, untemplated (``HostVars.raw_get``), the
values ``ansible-inventory --list`` gives the CLI: what georelay-dns refuses (a Jinja
expression in a DNS variable) the module refuses too, so the inventory the play applies is
one on-call can drive with georelay-dns evacuate/restore/weight.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

# Registered results and facts of a host are the play's, not the inventory's.
from ansible_collections.georelay.relay.plugins.action.fleet import _runtime_names

display = Display()

ARGUMENT_SPEC: dict[str, Any] = {
    "force": {"type": "bool", "default": False},
    "checksum": {"type": "str"},
    "wait_timeout": {"type": "float", "default": 600.0},
}
FORCE_HINT = "force: true (playbooks/dns.yml: -e georelay_dns_force=true)"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if args["wait_timeout"] <= 0:
            raise AnsibleActionFail(f"wait_timeout: {args['wait_timeout']} is not a number of "
                                    "seconds. Fix: give more than 0 (default 600)")
        try:
            from georelay_dns import workflow
            from georelay_dns.inputs import load_inputs
            from georelay_model import InventoryError
        except ImportError as exc:
            result.update(failed=True, msg=f"georelay_dns is not importable ({exc}): install "
                          "georelay into the Python that runs ansible-playbook "
                          "(pip install georelay, or make setup in a checkout)")
            return result

        try:
            inputs = load_inputs(inventory_hostvars(task_vars))
        except InventoryError as exc:
            result.update(failed=True, msg=str(exc), problems=[str(p) for p in exc.problems])
            return result
        try:
            planned = workflow.plan_zone(inputs)
        except workflow.DnsError as exc:
            result.update(failed=True, msg=str(exc))
            return result

        plan = planned.plan
        summary = workflow.summary(plan)
        # "warnings" of a result are Ansible's own (shown, then dropped): the plan's are
        # returned as plan_warnings and shown as Ansible warnings too.
        summary["plan_warnings"] = summary.pop("warnings")
        result.update(summary, zone=plan.zone, zone_id=plan.zone_id, changed=not plan.empty)
        for warning in summary["plan_warnings"]:
            display.warning(f"route53_fleet: {warning}")
        for line in summary["changes"]:
            display.vv(f"route53_fleet: {line}")
        if self._task.diff and not plan.empty:
            result["diff"] = workflow.plan_diff(planned)
        refused = workflow.refusal(plan, checksum=args["checksum"], force=args["force"],
                                   force_hint=FORCE_HINT)
        if refused and refused.reason == "threshold" and self._task.check_mode:
            # A preview is how one reviews such a plan before passing force: it shows the
            # plan and its diff, and says that the run itself stops here.
            display.warning(f"route53_fleet: without --check this task fails: "
                            f"{refused.message}")
            result["msg"] = f"the run would fail: {refused.message} ({plan.checksum})"
            return result
        if refused:
            details = "".join(f"\n  CONFLICT {c}" for c in plan.conflicts)
            result.update(failed=True, changed=False, msg=refused.message + details)
            return result
        if plan.empty:
            result["msg"] = f"nothing to do: Route53 matches the inventory ({plan.checksum})"
            return result
        if self._task.check_mode:
            result["msg"] = f"would apply {_counted(summary['counts'])} ({plan.checksum})"
            return result
        try:
            res = workflow.apply_planned(planned, wait_timeout=args["wait_timeout"],
                                         progress=lambda m: display.v(f"route53_fleet: {m}"))
        except workflow.DnsError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        result.update(applied=res.to_dict(),
                      msg=f"{workflow.applied_line(res)} ({plan.checksum})")
        return result


def inventory_hostvars(task_vars: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every inventory host's variables, untemplated, as ``ansible-inventory --list`` gives
    them to georelay-dns: the names the fleet model reads (and misspellings of them, which it
    points out), without what the play gave a host."""
    from georelay_model.contract import KNOWN

    hostvars = task_vars["hostvars"]
    wanted = KNOWN | {"aws_region"}
    out: dict[str, dict[str, Any]] = {}
    for host in task_vars["groups"]["all"]:
        raw = hostvars.raw_get(host)
        runtime = _runtime_names(hostvars, host) - wanted
        out[host] = {name: _plain(value) for name, value in raw.items()
                     if name in wanted or (name.startswith(("georelay_", "haproxy_"))
                                           and name not in runtime)}
    return out


def _plain(value: Any) -> Any:
    """Plain JSON data, as ansible-inventory prints it (no Ansible string or tag types)."""
    return json.loads(json.dumps(value, default=str))


def _counted(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "nothing"
