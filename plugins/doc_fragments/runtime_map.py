"""Options every module that changes a running HAProxy map through the Runtime API shares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  socket:
    description: HAProxy's admin socket, C(georelay_proxy.paths.admin_socket).
    type: path
    required: true
"""
