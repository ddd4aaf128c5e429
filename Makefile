# Video-Beratung gateway – the commands a newcomer and CI need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# Debian packages the tests talk to (real peers nobody here wrote) and the yardsticks.
# haxe builds the Flash client (make swf and its test); npm installs Ruffle for the tests
# (checked as a command: a NodeSource nodejs brings its own npm, which Debian's conflicts with).
# tesseract-ocr(-deu) reads the German labels off the Ruffle screenshot (the UI is drawn, not only traced).
APT_PACKAGES := ffmpeg rtmpdump chromium nginx libnginx-mod-rtmp openssl haxe tesseract-ocr tesseract-ocr-deu baresip sip-tester redis-server postgresql sox espeak-ng
STAMP  := $(VENV)/.installed
# Ruffle (npm @ruffle-rs/ruffle), test-only: renders the SWF's UI in Chromium, served by
# the test from this folder on the gateway's own origin (never from a CDN).
RUFFLE := tests/node/node_modules/@ruffle-rs/ruffle/ruffle.js

.PHONY: venv run test unit lint bench attack soak deps clean swf cluster

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m gateway serve

# Cluster mode on one machine (docs/cluster.md): redis-server, PostgreSQL and three nodes
# on loopback (HTTP 8081-8083, RTMP 1941-1943); prints the links; Ctrl-C stops all.
cluster: $(STAMP)
	$(PY) -m bench.testkit.cluster_demo

# Installs what the tests need. With root, apt-get; without, name the command and fail.
deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

# Form PDFs embed DejaVu Sans (umlauts, „“, €; gateway/forms/document.py).
APT_PACKAGES += fonts-dejavu-core

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The Flash client: rebuild web/static/flash/videoberatung.swf from web/flash/ and record
# its source hash (make test fails while the committed SWF is older than its sources).
# `make run` serves the committed copy, so a fresh machine needs no Haxe.
swf: $(STAMP)
	$(PY) -m web.swf build

$(RUFFLE): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: deps $(STAMP) $(RUFFLE) lint
	$(VENV)/bin/pytest -q

# The unit run: every test that stays in this process (no gateway, browser, ffmpeg or other
# process; tests/conftest.py marks those e2e and fails an unmarked test that starts one).
# VB_FUZZ=quick runs the property tests on a tenth of their examples (tests/fuzzing.py);
# make test runs them in full.
unit: $(STAMP)
	VB_FUZZ=quick $(VENV)/bin/pytest -q -m "not e2e"

bench: deps $(STAMP)
	$(PY) -m bench.run
	@echo "Not part of this run: make attack (issue 11's attack suite, a few minutes;"
	@echo "root for the small-disk attack), make soak (churn soak, SOAK_SECONDS=1800)."

# Issue 11: each attack against the real gateway beside an honest Flash-style
# consultation; PASS/FAIL per attack (docs/operations.md).
# As root it runs in a network namespace of its own (unshare --net), where only loopback
# exists and a /64 routed to lo lets one attacker spread over IPv6 addresses (item 4)
# without adding a route to the machine's own tables.
attack: deps $(STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null; then \
	  unshare --net sh -c 'ip link set lo up && ip -6 route add local fd00:11::/64 dev lo && exec $(PY) -m bench.attack'; \
	else \
	  $(PY) -m bench.attack; \
	fi

# Churn soak: consultations with media for SOAK_SECONDS (default 30 min); RSS, fds and
# threads at the end within 5 % of their level after warm-up.
SOAK_SECONDS ?= 1800
soak: deps $(STAMP)
	$(PY) -m bench.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis tests/node/node_modules
