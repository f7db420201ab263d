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

$(BIN)/phoenix: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

demo: setup
	$(BIN)/phoenix demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/rotation.py --write bench/RESULTS.md
	$(BIN)/python bench/warmup.py --write bench/RESULTS.md
	$(BIN)/python bench/strategies.py --write bench/RESULTS.md
	$(BIN)/python bench/heal.py --write bench/RESULTS.md
	$(BIN)/python bench/doctor.py --write bench/RESULTS.md

clean:
	rm -rf $(VENV) .phoenix build src/*.egg-info
