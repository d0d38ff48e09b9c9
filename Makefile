# The project's entry points. `make demo` and `make test` are the README's contract.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The local-cluster harness (hack/localcluster) is test infrastructure, not part of the package.
export PYTHONPATH := $(CURDIR)/hack$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help venv test test-unit lint demo cluster-up cluster-down cluster-bins env bench bench-backfill bench-sync bench-operator bench-lint bench-ha bench-scale clean

help:  ## list the targets
	@grep -E '^[a-z%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)  ## create .venv with the project and its test tools

cluster-bins:  ## build (or reuse from the cache) etcd, the Kubernetes servers, kwok, kubectl, helm
	@bin=$$(hack/build-cluster-bins.sh) && echo "cluster binaries: $$bin"

cluster-up: venv cluster-bins  ## start the local cluster; kubeconfig in .local-cluster/kubeconfig
	$(PY) -m localcluster up

cluster-down: venv  ## stop every process the local cluster started
	$(PY) -m localcluster down

env: venv  ## print the line that puts the local cluster's kubectl, helm, plugin and kubeconfig in a shell
	@$(PY) -m localcluster env

example-%: venv cluster-up  ## e.g. make example-01: PostgreSQL with the example's tables, Secret shop-db, Deployment shop-api
	$(PY) hack/example.py $*

test: venv cluster-bins  ## all tests: unit, PostgreSQL and end-to-end on the local cluster
	$(PY) -m pytest

test-unit: venv cluster-bins  ## only the tests that need neither PostgreSQL nor the cluster
	$(PY) -m pytest -m 'not pg and not e2e'

lint: venv  ## ruff, mypy --strict, import-linter layering contracts
	$(VENV)/bin/ruff check operator hack tests bench
	$(VENV)/bin/ruff format --check operator hack tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

demo: venv cluster-bins  ## local cluster + PostgreSQL + operator + sample app + rename migration, to Succeeded
	$(PY) hack/demo.py

bench: bench-backfill bench-sync bench-operator bench-lint  ## every benchmark

bench-backfill: venv  ## runner backfill vs one UPDATE on 1M rows (JSON line last)
	$(PY) bench/backfill.py

bench-sync: venv  ## renameColumn backfill with its sync trigger vs one UPDATE on 1M rows (JSON line last)
	$(PY) bench/sync.py

bench-operator: venv cluster-bins  ## operator reaction latency and memory (JSON line last)
	$(PY) bench/operator_reaction.py

bench-ha: venv cluster-bins  ## leader failover under repeated SIGKILLs of three operators, duplicates (JSON line last)
	$(PY) bench/ha.py

bench-scale: venv cluster-bins  ## 1,000 migrations, 50 namespaces: start-up, RSS, idle API rate, fan-out, all Succeeded (JSON line last)
	$(PY) bench/scale.py $(BENCH_SCALE_ARGS)

bench-lint: venv  ## kubectl datamigration lint of 50 steps x 64 KiB of SQL vs pglast alone (JSON line last)
	$(PY) bench/lint.py

clean:  ## stop the cluster and remove local state
	-$(PY) -m localcluster down
	rm -rf .local-cluster
