# Each target sets itself up on a fresh clone: a virtualenv in .venv with portctl and its test tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
DEBIAN_PACKAGES := miniupnpd-nftables miniupnpc natpmpc nftables iproute2 git openssh-client curl
# The second real router (miniupnpd-iptables) conflicts with the first as a package: system-deps unpacks it
# here (once; a second run downloads nothing), and tests/routerlab.py runs it from here.
PORTCTL_LAB_IPTABLES ?= $(CURDIR)/.lab/miniupnpd-iptables
export PORTCTL_LAB_IPTABLES

.PHONY: demo test lint typecheck system-deps soak bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

## demo: plan and apply examples/demo.yaml on the built-in emulator; with ROUTER=URL it asks first
## (owner portctl-demo, never prunes; without a terminal it changes nothing and exits 1)
demo: $(STAMP)
	$(BIN)/portctl demo $(if $(ROUTER),--router $(ROUTER)) $(or $(FILE),examples/demo.yaml)

## test: lint, then every test; as root it installs what the real-router tests need
test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q $(PYTEST_ARGS)

## soak: thousands of agent reconcile cycles against the emulator, with random drift and reboots
soak: $(STAMP)
	$(BIN)/python bench/agent_soak.py --cycles $(or $(CYCLES),3000)

## bench: portctl plan against upnpc -l on real miniupnpd in namespaces (root; about 25 min with 300)
SIZES ?= 0,100,300
REPEAT ?= 3
bench: $(STAMP) system-deps
	$(BIN)/python bench/plan_vs_upnpc.py --sizes $(SIZES) --repeat $(REPEAT)

lint: $(STAMP)
	$(BIN)/ruff check reconciler action tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The real-router tests run miniupnpd in network namespaces; they need root and these packages.
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	  .ci/miniupnpd-iptables "$(PORTCTL_LAB_IPTABLES)"; \
	else echo "not root: the real-router tests will be skipped"; fi

clean:
	rm -rf $(VENV) build *.egg-info
