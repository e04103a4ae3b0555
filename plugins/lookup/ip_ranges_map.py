"""Lookup georelay.relay.ip_ranges_map: AWS's ip-ranges.json as the proxies' map text.

Runs on the control node; georelay_model.ip_ranges parses and checks the file (a malformed or
truncated one fails the play before any host is touched) and writes the map HAProxy's
map_ip reads (README "Edge rules").
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: ip_ranges_map
author: georelay
short_description: The HAProxy map of AWS ip-ranges.json (prefix -> region)
description:
  - Reads a control-node copy of https://ip-ranges.amazonaws.com/ip-ranges.json, checks it and
    returns the map text, one C(<prefix> <region>) line per distinct IPv4 and IPv6 prefix
    (GLOBAL rows kept), after a header recording syncToken and createDate.
options:
  _terms:
    description: The control-node path of ip-ranges.json.
    required: true
"""

EXAMPLES = r"""
- name: Render the map
  ansible.builtin.copy:
    content: "{{ lookup('georelay.relay.ip_ranges_map', '/srv/aws/ip-ranges.json') }}"
    dest: /etc/haproxy/aws-ip-ranges.map
    mode: "0644"
"""

RETURN = r"""
_raw:
  description: The map text.
  type: list
  elements: str
"""


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: dict[str, Any] | None = None,
            **kwargs: Any) -> list[str]:
        try:
            from georelay_model.ip_ranges import IpRangesError, load, map_text
        except ImportError as exc:
            raise AnsibleError(f"georelay_model is not importable ({exc}): install georelay "
                               "into the Python that runs ansible-playbook") from exc
        out = []
        for term in terms:
            try:
                out.append(map_text(load(str(term))))
            except IpRangesError as exc:
                raise AnsibleError(f"georelay_ip_ranges_file: {exc}") from exc
        return out
