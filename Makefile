# Quick start: `make demo` (the main job) and `make test` (the whole suite).
# Debian's interpreter: servers that run as an unprivileged uid (phoenix as root) must reach
# the virtualenv's python, which an interpreter under /root (pyenv) would keep from them.
PY ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(BIN)/phoenix
	@command -v haproxy >/dev/null 2>&1 || { \
	  echo "installing haproxy with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
	@haproxy -v | head -n 1
	@# PostgreSQL for the shared state store's tests (a throwaway cluster each run, made with
	@# initdb as the postgres user); Debian keeps initdb in /usr/lib/postgresql/<version>/bin
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | head -n 1 || command -v initdb
	@# the dashboard's browser tests (tests/test_dashboard.py): Debian's headless Chromium and its driver
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@command -v rsyslogd >/dev/null 2>&1 || { \
	  echo "installing rsyslog with apt-get (the project's log aggregator)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog >/dev/null; }
	@rsyslogd -v | head -n 1

$(BIN)/phoenix: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

demo: setup
	$(BIN)/phoenix demo

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Every script in bench/ (tests/test_bench.py checks none is missing), each run even when an
# earlier one missed a target; the target fails at the end when any benchmark did.
BENCHMARKS := rotation warmup strategies heal doctor control_plane bake time_to_live dashboard recovery state_store logs

bench: setup
	@failed=""; for name in $(BENCHMARKS); do \
	  echo "== bench/$$name.py"; \
	  $(BIN)/python bench/$$name.py --write bench/RESULTS.md || failed="$$failed $$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "targets not met (or not measured) in:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) .phoenix build src/*.egg-info
