"""The role's argument spec, its defaults and the model's contract name the same variables."""

from __future__ import annotations

from pathlib import Path

import yaml

from georelay_model.contract import ROLE_TUNABLES, VARS
from georelay_testing.fleet import REPO

ROLE = REPO / "roles/haproxy"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_argument_spec_covers_the_contract_and_the_tunables() -> None:
    spec = set(load(ROLE / "meta/argument_specs.yml")["argument_specs"]["main"]["options"])
    role_reads = {v.name for v in VARS if not v.name.startswith(("georelay_dns_",
                                                                 "georelay_agent_",
                                                                 "georelay_lab_"))}
    assert role_reads - spec == set(), "contract variables missing from argument_specs"
    assert set(ROLE_TUNABLES) <= spec
    assert spec - role_reads - set(ROLE_TUNABLES) == set(), "spec options unknown to the model"


def test_role_defaults_are_exactly_the_tunables() -> None:
    defaults = set(load(ROLE / "defaults/main.yml"))
    assert defaults == set(ROLE_TUNABLES)


def test_service_keys_match_the_spec() -> None:
    from georelay_model.contract import SERVICE_KEYS

    options = load(ROLE / "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(options["georelay_services"]["options"]) == set(SERVICE_KEYS)
