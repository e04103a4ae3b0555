# georelay: `make demo` runs the demo fleet on this machine, `make test` runs every test.
# Both set everything up first (Debian packages, a virtualenv with the Python deps).

PY ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INVENTORY ?= inventories/demo
LAB ?= .lab
# The checkout is the collection georelay.relay (galaxy.yml): Ansible finds it by FQCN
# through this link, named in ansible.cfg's collections_path.
COLLECTION_LINK := .collections/ansible_collections/georelay/relay
# Every Debian package the demo, the tests and the bench need: the first column of the list.
DEBIAN_PACKAGES := lab/debian-packages.txt
DEBS := $(shell awk '$$1 !~ /^\#/ && NF && !seen[$$1]++ {print $$1}' $(DEBIAN_PACKAGES))
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The demo's Route53 is a local moto_server, reached the standard boto3 way.
ROUTE53 ?= 127.0.9.1:5300
# The demo's Prometheus (georelay-lab prometheus): its web UI and HTTP API.
PROMETHEUS ?= 127.0.9.9:9090
LAB_AWS := AWS_ENDPOINT_URL_ROUTE_53=http://$(ROUTE53) AWS_ACCESS_KEY_ID=georelay-lab \
	AWS_SECRET_ACCESS_KEY=georelay-lab AWS_DEFAULT_REGION=us-east-1
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup system debian-packages demo demo-down demo-hosts demo-hosts-down drill demo-rollout \
	lint test test-fresh bench bench-rules bench-edge clean

setup: system $(VENV)/.installed $(COLLECTION_LINK)

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

system:
	@missing=""; for p in $(DEBS); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null)" = installed ] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages ($(DEBIAN_PACKAGES)):$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

debian-packages:
	@echo $(DEBS)

# Four distributions, each from its own pyproject.toml: georelay (the control-node runtime: the
# fleet model and georelay-dns), georelay-agent (the wheel proxy hosts run), and the
# development-only georelay-lab (stand-ins, host lab) and georelay-tools (bench, drill, scale).
$(VENV)/.installed: pyproject.toml agent/pyproject.toml lab/pyproject.toml tools/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e . -e ./agent -e ./lab -e ./tools -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/georelay-lab up -i $(INVENTORY) --lab-dir $(LAB)
	$(BIN)/georelay-lab route53 -i $(INVENTORY) --lab-dir $(LAB) --listen $(ROUTE53)
	$(LAB_AWS) $(BIN)/ansible-playbook -i $(INVENTORY) playbooks/site.yml
	@echo; echo "== A request through every proxy, as the regional gateway received it =="
	$(BIN)/georelay-lab show -i $(INVENTORY) --lab-dir $(LAB)
	@echo; echo "== Each proxy's health agent: /healthz as Route53 asks it, and the cron check =="
	$(BIN)/georelay-lab health -i $(INVENTORY) --lab-dir $(LAB)
	@echo; echo "== Monitoring: the lab's Prometheus scrapes every proxy's HAProxy exporter and agent, with the shipped alert rules =="
	$(BIN)/georelay-lab prometheus -i $(INVENTORY) --lab-dir $(LAB) --listen $(PROMETHEUS)
	@echo; echo "== One-box canary: 20% of users to fast.example.com's one-box, sticky by cookie =="
	$(BIN)/georelay-lab onebox-split -i $(INVENTORY) --lab-dir $(LAB) --users 8
	@echo; echo "== Route53 (stand-in): the live tree =="
	$(LAB_AWS) $(BIN)/georelay-dns status -i $(INVENTORY)
	@echo; echo "== What Route53 answers users near us-east-1 when use1-a dies =="
	$(BIN)/georelay-dns simulate -i $(INVENTORY) --from us-east-1 --down use1-a --service fast.example.com
	@echo; echo "Try it:  curl --cacert $(LAB)/certs/lab-ca.pem --resolve fast.example.com:443:127.0.1.1 https://fast.example.com/hello"
	@echo "Route53: export $(LAB_AWS); $(BIN)/georelay-dns plan -i $(INVENTORY)"
	@echo "Prometheus: http://$(PROMETHEUS)/alerts (rules: monitoring/rules; dashboard: monitoring/dashboards)"
	@echo "Stop it: make demo-down"

# The same demo fleet on real Debian 12 hosts (root): 4 systemd-nspawn hosts of the host lab
# `demo` on a bridge of this machine, deployed over SSH as a sudo user, HAProxy under Debian's
# haproxy.service, one proxy at a time; then the same evidence as make demo. Its lab state
# (certificates, gateways, Route53 stand-in) is apart from make demo's, so both can run.
HOSTS_INVENTORY ?= inventories/demo-hosts
HOSTS_LAB ?= .lab-hosts
HOSTS_ROUTE53 ?= 127.0.9.2:5300
HOSTS_AWS := $(subst $(ROUTE53),$(HOSTS_ROUTE53),$(LAB_AWS))

demo-hosts: setup
	$(BIN)/georelay-lab hosts up -i $(HOSTS_INVENTORY) --lab demo
	$(BIN)/georelay-lab up -i $(HOSTS_INVENTORY) --lab-dir $(HOSTS_LAB)
	$(BIN)/georelay-lab route53 -i $(HOSTS_INVENTORY) --lab-dir $(HOSTS_LAB) --listen $(HOSTS_ROUTE53)
	$(HOSTS_AWS) $(BIN)/ansible-playbook -i $(HOSTS_INVENTORY) playbooks/site.yml
	@echo; echo "== A request through every proxy host, as the regional gateway received it =="
	$(BIN)/georelay-lab show -i $(HOSTS_INVENTORY) --lab-dir $(HOSTS_LAB)
	@echo; echo "== Each host's health agent: /healthz as Route53 asks it, and the check over SSH =="
	$(BIN)/georelay-lab health -i $(HOSTS_INVENTORY) --lab-dir $(HOSTS_LAB) --hosts-lab demo
	@echo; echo "== Route53 (stand-in): the live tree =="
	$(HOSTS_AWS) $(BIN)/georelay-dns status -i $(HOSTS_INVENTORY)
	@echo; echo "== What Route53 answers users near us-east-1 when use1-a dies =="
	$(BIN)/georelay-dns simulate -i $(HOSTS_INVENTORY) --from us-east-1 --down use1-a --service fast.example.com
	@echo; echo "On a host: ssh -F /var/lib/georelay-lab/demo/ssh_config use1-a 'systemctl status haproxy georelay-agent'"
	@echo "Try it:  curl --cacert $(HOSTS_LAB)/certs/lab-ca.pem --resolve fast.example.com:443:10.213.0.11 https://fast.example.com/hello"
	@echo "Stop it: make demo-hosts-down"

demo-hosts-down:
	@if [ -x $(BIN)/georelay-lab ]; then $(BIN)/georelay-lab down --lab-dir $(HOSTS_LAB); \
	  $(BIN)/georelay-lab hosts down --lab demo; fi

demo-down:
	@if [ -x $(BIN)/georelay-lab ]; then $(BIN)/georelay-lab down --lab-dir $(LAB); fi

# Against the running demo (make demo first): kill a proxy, stop a region's gateway, evacuate
# and restore a region, showing Route53's answers, the agents and real requests at each step;
# everything is put back (docs/runbooks/).
drill: setup
	$(LAB_AWS) $(BIN)/georelay-tools drill -i $(INVENTORY) --lab-dir $(LAB)

# Against the running demo (make demo first): a staged rollout (georelay-rollout) with
# simulated users whose one-box starts failing at step 2; the controller aborts it and every
# user is checked back on regular (docs/ROLLOUT.md).
demo-rollout: setup
	$(BIN)/georelay-tools rollout-demo -i $(INVENTORY) --lab-dir $(LAB)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ansible-lint --profile production

# Lint, every test, then the fresh-machine stage.
test: setup lint
	$(BIN)/pytest
	@$(MAKE) --no-print-directory test-fresh

# In a freshly made Debian 12 root (debootstrap, cached in /var/cache/georelay-lab/): git clone
# this checkout, make demo, make demo-down, run every program of lab/debian-packages.txt and a
# few tests that use them. A missing install step fails it (ci/fresh-machine/run.sh, root).
test-fresh: system
	$(SUDO) ci/fresh-machine/run.sh

# Side by side on this machine: georelay's HAProxy, an nginx relay, the seed config, direct.
# Writes docs/bench/latest.md; run it on a quiet machine (it takes about 10 minutes).
bench: setup
	@mkdir -p docs/bench
	$(SUDO) $(BIN)/georelay-tools bench --duration $${BENCH_SECONDS:-10} --reps $${BENCH_REPS:-3} \
	  --json docs/bench/latest.json | tee docs/bench/latest.log
	@sed -n '/^wrk -t1/,$$p' docs/bench/latest.log > docs/bench/latest.md
	@echo "Results: docs/bench/latest.md"

# What each rule of the generated haproxy.cfg costs: the config with single features switched
# off, a minimal HAProxy relay and the nginx relay in one run; req/s, CPU and instructions
# (callgrind) per request. Writes docs/bench/rules.md; a quiet machine, about 15 minutes.
bench-rules: setup
	@mkdir -p docs/bench
	$(SUDO) $(BIN)/georelay-tools bench-rules --duration $${BENCH_SECONDS:-10} \
	  --reps $${BENCH_REPS:-3} --json docs/bench/rules.json | tee docs/bench/rules.log
	@sed -n '/^georelay-tools bench-rules/,$$p' docs/bench/rules.log > docs/bench/rules.md
	@echo "Results: docs/bench/rules.md"

# What each edge rule family costs (README "Edge rules"): the same service with none, denied
# paths, Accept classes, regional redirects (an AWS-sized ip-ranges map) and the edge cache
# (every request a HIT), each measured right beside the nginx relay, on /dl/small.iso (a
# listed suffix, so the redirect rule looks the client up), and callgrind's instructions per
# request of each (a count the machine's load does not move). Writes docs/bench/edge.md.
EDGE_VARIANTS := --variant 'none:' \
  --variant "deny:deny_paths=['^/\\.git','^/\\.env','^/wp-admin','\\.php$$','\\.\\./','\\x00']" \
  --variant "accept:accept_classes=[{contains: image/webp, value: 'image/webp,*/*'}]" \
  --variant "redirect:regional_redirects={suffixes: [.iso], origins: {us-east-1: 'https://us-east-1-dl.example.com'}}" \
  --variant "cache-hit:edge_cache={header: X-Cache}"
bench-edge: setup
	@mkdir -p docs/bench
	$(SUDO) $(BIN)/georelay-tools bench --duration $${BENCH_SECONDS:-10} --reps $${BENCH_REPS:-3} \
	  --instructions 2000 --variant-path /dl/small.iso $(EDGE_VARIANTS) | tee docs/bench/edge.log
	@(echo "# make bench-edge, $$(date -u +%F)"; echo; echo '```'; cat docs/bench/edge.log; echo '```') > docs/bench/edge.md
	@echo "Results: docs/bench/edge.md"

clean: demo-down demo-hosts-down
	rm -rf $(LAB) $(HOSTS_LAB)
