"""georelay's test harness: what the tests share, apart from the tests themselves.

- ``fleet``: ``DeployedFleet``, a fleet on loopback (inventory, the lab's stand-ins, proxies
  deployed with the real ansible-playbook) and the helpers around it (``run``, ``Played``, ...);
- ``agent_fleet``, ``host_fleet``, ``runbook_lab``: that fleet with health agents, on the host
  lab's real Debian hosts, and for the runbooks;
- ``traffic``: bounded request loops; ``reliability``: fault and reload helpers;
- ``dns_zone``, ``dns_drive``: Route53 (moto_server) zones and georelay-dns driven as users do;
- ``cli_check``, ``runbook_doc``: the runbooks' commands and documents.

The lab's stand-ins for AWS (gateways, Route53, CA) are ``georelay_lab.stand_ins.StandIns``.
"""
