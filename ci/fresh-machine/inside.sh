#!/usr/bin/env bash
# Runs inside the fresh Debian 12 root that ci/fresh-machine/run.sh made: what someone does
# on a fresh machine (README "The two commands"), then proof that every program the suite
# runs is there and works, then a few tests that run several of them.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Tests that run dnsmasq (a gateway name that moves), haproxy relaying to nginx stand-in
# gateways over HTTP/2 (curl as the client), the runbook checks (bash, curl, openssl,
# haproxy, systemctl, journalctl), the list's own guard, and the collection from the user's
# side (ansible-galaxy collection build and install, a user's own playbook outside the
# checkout, ansible-doc of every module). `make demo` above has already relayed a request
# through each of its 4 proxies.
DEFAULT_TESTS="tests/reliability/test_gateway_moves.py
tests/reliability/test_backup_failover_h2.py::test_the_h2_stand_in_is_as_strict_as_api_gateway
tests/reliability/test_backup_failover_h2.py::test_home_gateway_gets_http2_with_its_own_authority_and_sni
tests/runbooks/test_runbook_docs.py
tests/lab/test_programs.py
tests/collection/test_user_side.py"
step() { printf '\n== fresh-machine [%3d s] %s\n' "$SECONDS" "$*"; }

step "git clone /src/georelay (read-only) at ${FRESH_COMMIT:0:12}"
git config --global --add safe.directory '*'
git clone -q --no-checkout file:///src/georelay /root/georelay
cd /root/georelay
git checkout -q --detach "$FRESH_COMMIT"

step "make demo (make setup: pip install -e . -e ./agent -e ./lab -e ./tools -e '.[dev]')"
make demo
step "make demo-down"
make demo-down

step "every program of lab/debian-packages.txt is installed and runs"
.venv/bin/python -m georelay_lab.programs check

step "tests"
# shellcheck disable=SC2086  # one test id per word
.venv/bin/pytest -p no:cacheprovider -q --durations=5 ${FRESH_TESTS:-$DEFAULT_TESTS}
step "done"
