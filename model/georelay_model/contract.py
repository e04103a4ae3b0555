"""The inventory contract: every variable georelay reads, where it is set, and its default.

Add a variable here when a part of georelay (role, dns, agent) starts reading it: the
loader uses this list to catch misspelt georelay_* variables.

README.md documents the same table for people; tests check the two agree with the role's
meta/argument_specs.yml.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Var:
    name: str
    scope: str  # "all", "region" or "host"
    default: object
    doc: str


VARS: tuple[Var, ...] = (
    Var("georelay_zone", "all", None, "Route53 hosted zone name, e.g. example.com"),
    Var("georelay_services", "all", None,
        "list of {hostname, apigw_domain, health_path, onebox_domain, onebox_percent}"),
    Var("georelay_tls_pem", "all", None, "control-node path to the PEM (chain + key)"),
    Var("georelay_backend_ca", "all", None,
        "control-node CA bundle to verify gateways (default: the host's system store)"),
    Var("georelay_region_latency", "all", {},
        "round trips in ms between regions, {from: {to: ms}}, over the shipped measurements "
        "(georelay-dns latency import writes it)"),
    Var("georelay_region_latency_source", "all", "",
        "where georelay_region_latency's numbers come from (shown beside orders)"),
    Var("georelay_onebox_cookie", "all", "georelay_partition",
        "cookie that keeps a user's one-box bucket (0-99)"),
    Var("georelay_onebox_cookie_max_age", "all", 86400 * 30,
        "Max-Age of that cookie in seconds"),
    Var("georelay_onebox_cookie_samesite", "all", "Lax", "SameSite of that cookie: Lax, "
        "Strict or None"),
    Var("georelay_onebox_hash", "all", ["src", "user-agent"],
        "what buckets a user without a valid cookie: src, user-agent, header:NAME"),
    Var("georelay_ip_ranges_file", "all", None,
        "control-node path of AWS's ip-ranges.json: the map of regional_redirects"),
    Var("georelay_proxy_protocol", "all", False,
        "listeners take the PROXY protocol (v1/v2) header of a load balancer in front"),
    Var("georelay_proxy_protocol_from", "all", [],
        "networks whose connections must start with a PROXY header; empty: every address "
        "but loopback (the health agent's probe)"),
    Var("aws_region", "region", None, "AWS region of the group, e.g. us-east-1"),
    Var("georelay_apigw_address", "region", None, "ip:port (or host:port) of the gateway"),
    Var("georelay_backup_regions", "region", None,
        "regions whose gateways back this region's up, in order; default: the "
        "georelay_backup_limit nearest other regions; [] for none"),
    Var("georelay_backup_limit", "region", 3,
        "without georelay_backup_regions: how many of the nearest other regions back up"),
    Var("georelay_bridging_keeps_in_dns", "region", False,
        "keep a proxy in DNS (/healthz 200) while it bridges through a backup region"),
    Var("georelay_onebox_enabled", "region", True,
        "false: this region's proxies send every user to the regular gateway"),
    Var("public_ip", "host", None, "address Route53 hands out for this proxy"),
    Var("public_dns", "host", None, "DNS name Route53 hands out (CNAME) instead of an IP"),
    Var("dns_weight", "host", 1, "weight within the region, 0-255"),
    Var("haproxy_bind_address", "host", "", "address HAProxy listens on (default: all)"),
    Var("haproxy_https_port", "host", 443, "TLS listener port"),
    Var("haproxy_http_port", "host", 80, "plain HTTP listener port (redirects to https)"),
    Var("georelay_service_manager", "host", "systemd", "systemd or process"),
    Var("georelay_root", "host", "/", "filesystem prefix for config, certs, sockets"),
    Var("georelay_agent_bind_address", "host", "127.0.0.1",
        "address the health agent listens on; HAProxy routes /healthz there"),
    Var("georelay_agent_port", "host", 8405, "port the health agent listens on"),
    # The management listener (model/georelay_model/management.py, README "Monitoring").
    Var("georelay_metrics_listen", "host", "127.0.0.1:8404",
        "ip:port of the management listener: HAProxy's Prometheus exporter at /metrics, "
        "the agent's metrics at /agent/metrics; never a public listener"),
    Var("georelay_metrics_allow", "host", ["127.0.0.0/8", "::1/128"],
        "source networks allowed to scrape the management listener (others get 403)"),
    Var("georelay_metrics_basic_auth", "host", None,
        "{user, password}: basic auth on the management listener (password in Vault)"),
    # Tunables of roles/georelay_agent (defaults in its defaults/main.yml, types in its
    # meta/argument_specs.yml; docs/AGENT.md).
    Var("georelay_agent_python", "host", "/usr/bin/python3", "interpreter of the agent's venv"),
    Var("georelay_agent_requirements", "all", "",
        "control-node requirements file of the agent's dependencies, hash-pinned; "
        "empty: the collection's agent/requirements-host.txt"),
    Var("georelay_agent_wheelhouse", "all", "",
        "control-node directory of those dependencies' wheels, copied to hosts that cannot "
        "reach PyPI (pip --no-index); empty: PyPI"),
    Var("georelay_agent_wheel_dir", "all", "~/.cache/georelay/wheels",
        "control node: where the agent's wheel is built"),
    Var("georelay_agent_venv_package", "host", "python3-venv",
        "package installed when the interpreter has no venv module"),
    Var("georelay_agent_user", "host", "georelay-agent", "systemd mode: the agent's user"),
    Var("georelay_agent_haproxy_group", "host", "haproxy",
        "systemd mode: group giving the agent the read-only Runtime API socket"),
    Var("georelay_agent_interval", "all", 1.0, "seconds between the agent's observations"),
    Var("georelay_agent_rise", "all", 2, "good observations before the agent says healthy"),
    Var("georelay_agent_fall", "all", 2, "bad observations before unhealthy (rise <= fall)"),
    Var("georelay_agent_stale_after", "all", 0,
        "seconds after which an old snapshot fails /healthz; 0: derived"),
    Var("georelay_agent_probe", "all", True,
        "end-to-end probe of each service's health_path through HAProxy"),
    Var("georelay_agent_probe_interval", "all", 0, "seconds between probes; 0: every observation"),
    Var("georelay_agent_probe_timeout", "all", 2.0, "seconds a probe may take"),
    Var("georelay_agent_probe_ca_file", "all", "",
        "control-node CA file verifying the public certificate, copied to the host; "
        "empty: the host's system store (lab: lab CA)"),
    Var("georelay_agent_ok_body", "all", "georelay-healthy",
        "/healthz body when healthy (set georelay_dns_health_search to it)"),
    Var("georelay_agent_api_connect_timeout", "all", 0.5, "Runtime API connect timeout (s)"),
    Var("georelay_agent_api_read_timeout", "all", 1.0, "Runtime API read timeout (s)"),
    Var("georelay_agent_reload_grace", "all", 120,
        "seconds haproxy.cfg may be newer than the running worker before a warning"),
    Var("georelay_agent_cert_warn_days", "all", 21, "check warns this many days before expiry"),
    Var("georelay_agent_http_5xx_warn_ratio", "all", 0.05, "check warns above this 5xx share"),
    Var("georelay_agent_log_level", "all", "info", "debug, info, warning or error"),
    Var("georelay_agent_start_timeout", "all", 30, "seconds to wait for /live after a start"),
    Var("georelay_agent_cron", "all", True, "install the cron entry of check where cron exists"),
    Var("georelay_agent_cron_dir", "host", "/etc/cron.d",
        "cron directory (below georelay_root when that is not /)"),
    Var("georelay_agent_cron_every_minutes", "all", 1, "minutes between cron checks"),
    Var("georelay_agent_textfile_dir", "host", "",
        "node_exporter's textfile directory (must exist): the cron check's georelay_check_* "
        "metrics are linked there as georelay-agent.prom; empty: none"),
    Var("georelay_agent_nrpe", "all", False,
        "install NRPE's check_georelay_agent command (run through sudo as the check's user)"),
    Var("georelay_agent_nrpe_dir", "host", "/etc/nagios/nrpe.d",
        "NRPE's include directory (below georelay_root when that is not /)"),
    Var("georelay_agent_nrpe_user", "all", "nagios", "the user NRPE runs its commands as"),
    Var("georelay_lab_dir", "all", None, "lab only: where the demo keeps certificates and roots"),
    # Read by playbooks/proxies.yml, given with -e (serial cannot read inventory variables).
    Var("georelay_rollout_batch", "all", 1,
        "playbooks/proxies.yml: proxies deployed at once in a rolling deploy (-e)"),
    # Read by georelay-dns (dns/georelay_dns/settings.py validates them; docs/DNS.md).
    Var("georelay_dns_mode", "all", "proxy",
        "proxy (latency -> weighted proxies) or direct (latency -> API Gateway regional)"),
    Var("georelay_dns_owner", "all", "georelay",
        "ownership marker: SetIdentifier prefix and health-check tag/CallerReference"),
    Var("georelay_dns_zone_id", "all", None,
        "hosted zone id; default: the one zone named georelay_zone"),
    Var("georelay_dns_ttl", "all", 60, "TTL of the weighted proxy records, 1-60 s"),
    Var("georelay_dns_regional_name", "all", "proxy-{region}-{label}.{parent}",
        "name of a region's weighted set; {region} {label} {parent} {hostname}"),
    Var("georelay_dns_health_path", "all", "/healthz", "path Route53 health checks GET"),
    Var("georelay_dns_health_interval", "all", 10, "health check RequestInterval: 10 or 30"),
    Var("georelay_dns_health_threshold", "all", 2, "health check FailureThreshold: 1-10"),
    Var("georelay_dns_health_regions", "all", [],
        "Route53 checker regions (>= 3); default: Route53's default set"),
    Var("georelay_dns_health_search", "all", None,
        "string the health response body must contain (HTTPS_STR_MATCH)"),
    Var("georelay_dns_direct_targets", "all", None,
        "direct mode: {region: {hostname: {domain_name, hosted_zone_id}}}"),
    Var("georelay_dns_force", "all", False,
        "playbooks/dns.yml: force: true to route53_fleet (apply past the 30% threshold)"),
)

# Tunables of roles/haproxy (defaults in its defaults/main.yml, types in its
# meta/argument_specs.yml). Listed so a misspelt one is caught, not silently ignored.
ROLE_TUNABLES: tuple[str, ...] = (
    "haproxy_binary", "haproxy_package", "haproxy_user",
    "haproxy_group", "haproxy_nbthread", "haproxy_maxconn", "haproxy_log_level",
    "haproxy_log_normal_requests",
    "haproxy_hard_stop_after",
    "haproxy_close_spread_time", "haproxy_timeout_connect", "haproxy_timeout_client",
    "haproxy_timeout_server", "haproxy_timeout_http_request",
    "haproxy_timeout_http_keep_alive", "haproxy_timeout_queue", "haproxy_timeout_check",
    "haproxy_retries", "haproxy_retry_on", "haproxy_http_reuse", "haproxy_check_interval",
    "haproxy_check_fastinter", "haproxy_backend_alpn", "haproxy_backend_max_reuse",
    "haproxy_tune",
    "haproxy_backup_check_interval", "haproxy_error_limit",
    "haproxy_check_fall", "haproxy_check_rise", "haproxy_resolvers",
    "haproxy_dns_hold_valid", "haproxy_dns_hold_obsolete", "haproxy_reload_timeout",
)

KNOWN: frozenset[str] = frozenset(v.name for v in VARS) | frozenset(ROLE_TUNABLES)

# Variables earlier releases read, with what replaces them: setting one is an error whose
# fix says what to do instead.
RETIRED: dict[str, str] = {
    "georelay_dns_cli": (
        "remove it: since 0.3.0 playbooks/dns.yml applies through the collection's module "
        "georelay.relay.route53_fleet, in the Python that runs Ansible, not a georelay-dns "
        "executable"),
    "georelay_agent_pip_extra_args": (
        "remove it: since 0.2.0 the agent installs from its wheel with hash-pinned "
        "dependencies; for hosts that cannot reach PyPI set georelay_agent_wheelhouse (a "
        "control-node directory of the wheels, README 'Pointing it at real hosts'), for a "
        "private index the host's /etc/pip.conf"),
    "haproxy_templates_dir": "remove it: since 0.2.0 the role holds its own templates",
    "georelay_agent_templates_dir": "remove it: since 0.2.0 the role holds its own templates",
    "georelay_agent_source_dir": (
        "remove it: since 0.2.0 the agent's wheel is built from the collection's agent/"),
}

SERVICE_KEYS: frozenset[str] = frozenset({
    "hostname", "apigw_domain", "health_path", "onebox_domain", "onebox_percent",
    # Edge rules (model/georelay_model/edge.py, README "Edge rules")
    "deny_paths", "deny_status", "accept_classes", "accept_default", "edge_cache",
    "regional_redirects"})

