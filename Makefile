# Two commands matter: `make demo` (lab cluster + live failover drill) and `make test`.
# Both set everything up first: Debian packages, a venv with the Python deps, the generated gRPC code.
SHELL := /bin/bash
PY ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
DEB_PKGS := etcd-server iproute2 nftables ethtool netsniff-ng iperf3 tcpdump python3-venv python3-pip \
  conntrack conntrackd util-linux systemd git chromium
PROTOS := $(wildcard proto/*.proto)

.PHONY: setup test lint typecheck pytest demo chaos bench fuzz proto lab-up lab-down clean

setup: .stamp-deb .stamp-venv .stamp-proto

.stamp-deb:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

# Same versions on every machine: everything (build requirements included) from constraints.txt.
.stamp-venv: pyproject.toml constraints.txt setup.py .stamp-deb
	@echo "==> venv $(VENV) from $(PY)"
	@[ -x $(VPY) ] || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q -c constraints.txt --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt --build-constraint constraints.txt -e '.[dev,lab]'
	@touch $@

# The editable install above already generated lbd_pb (setup.py's build hook); this redoes it when a
# .proto changes, with the same recipe.
.stamp-proto: $(PROTOS) setup.py .stamp-venv
	@echo "==> generating gRPC code into lbd_pb"
	$(VPY) -c 'import setup; setup.generate("lbd_pb")'
	@touch $@

proto: .stamp-proto

lint: setup
	$(VENV)/bin/ruff check director syncd tests bench deploy

typecheck: setup
	$(VENV)/bin/mypy director syncd deploy

pytest: setup
	$(VPY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: lint typecheck pytest

demo: setup
	$(VPY) -m deploy.drill --report demo-report.json --html demo-report.html

# seeded random faults under load, judged from the fabric and the clients (docs/CHAOS.md);
# `make chaos SEED=s MINUTES=m` replays a run; exit code 1 on any violation
MINUTES ?= 15
chaos: setup
	$(VPY) -m deploy.chaos --minutes $(MINUTES) $(if $(SEED),--seed $(SEED)) $(if $(KINDS),--kinds $(KINDS)) \
	  --report chaos-report.json

bench: setup
	$(VPY) -m bench.run

# the property tests of every operator-written document, with many more examples than `make test`
fuzz: setup
	LBD_FUZZ_EXAMPLES=$${LBD_FUZZ_EXAMPLES:-5000} $(VPY) -m pytest -q -p no:cacheprovider tests/director/config/test_fuzz.py

lab-up: setup
	$(VPY) -m deploy.lab up

lab-down: setup
	$(VPY) -m deploy.lab down

clean:
	rm -rf $(VENV) .stamp-* lbd_pb/*_pb2*.py lbd_pb/*_pb2*.pyi
