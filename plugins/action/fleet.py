"""Action georelay.relay.fleet: validate the whole inventory with the georelay fleet model and
hand this host its view, the georelay_proxy fact (documented in plugins/modules/fleet.py).

Runs on the control node inside ansible-playbook (an action, not a module), so it reads
the PEM and CA files where they are, and imports georelay_model from the Python that runs
Ansible (install georelay there: ``pip install georelay``). Nothing on any host is touched
when the inventory has a problem: the play stops here, listing every problem with its fix.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        try:
            from georelay_model import InventoryError, fleet_from_hostvars
            from georelay_model.contract import KNOWN
            from georelay_model.facts import proxy_facts
            from georelay_model.tls import file_problems, pem_problems
        except ImportError as exc:
            result.update(failed=True, msg=f"georelay_model is not importable ({exc}): install "
                          "georelay into the Python that runs ansible-playbook "
                          "(pip install georelay, or make setup in a checkout)")
            return result

        hostvars = task_vars["hostvars"]
        wanted = KNOWN | {"aws_region"}
        inventory: dict[str, dict[str, Any]] = {}
        for host in task_vars["groups"]["all"]:
            hv = hostvars[host]
            if "aws_region" not in hv:
                continue
            # Values are templated with that host's own variables; unknown georelay_*
            # names are kept (as None) so the model can point out misspellings. Names a
            # play gave the host (registered results, facts) are not the inventory's: in a
            # rolling deploy the proxies of earlier batches carry them.
            runtime = _runtime_names(hostvars, host) - wanted
            inventory[host] = {name: (hv[name] if name in wanted else None)
                               for name in hv if name in wanted or
                               (name.startswith(("georelay_", "haproxy_"))
                                and name not in runtime)}
        host = task_vars["inventory_hostname"]
        try:
            fleet = fleet_from_hostvars(inventory, rendered=True)
            if host not in {p.name for p in fleet.proxies}:
                result.update(failed=True, msg=f"{host} has no aws_region: put it in a region "
                              "group whose vars set aws_region")
                return result
            problems = pem_problems(fleet.tls_pem or "", [s.hostname for s in fleet.services])
            if fleet.backend_ca:
                problems += file_problems(fleet.backend_ca, "georelay_backend_ca")
            if problems:
                raise InventoryError(problems)
        except InventoryError as exc:
            result.update(failed=True, msg=str(exc),
                          problems=[str(p) for p in exc.problems])
            return result
        facts = proxy_facts(fleet, host)
        result.update(changed=False, ansible_facts={"georelay_proxy": facts},
                      msg=f"{host}: {len(fleet.services)} service(s), region {facts['region']}, "
                          f"{len(fleet.proxies)} proxies in the fleet")
        return result


def _runtime_names(hostvars: Any, host: str) -> set[str]:
    """Variables of a host that come from the play, not the inventory: registered results,
    set_fact and module facts (Ansible keeps them in its fact caches)."""
    manager = getattr(hostvars, "_variable_manager", None)
    names: set[str] = set()
    for cache in (getattr(manager, "_nonpersistent_fact_cache", None),
                  getattr(manager, "_fact_cache", None)):
        if cache is None:
            continue
        try:
            names.update(cache.get(host) or {})
        except (KeyError, TypeError):
            continue
    return names
