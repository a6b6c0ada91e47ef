# EnvelopePay. The two commands that matter:
#   make run    install what is missing, start everything, print the URL; Ctrl-C stops it all
#   make test   install what is missing, run the whole suite on SQLite and PostgreSQL
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY := .venv/bin/python
BOOTSTRAP := bash scripts/bootstrap.sh
ARTIFACTS := test-artifacts
# Extra pytest arguments, e.g. `make test ARGS="-k mailer -x"`.
ARGS =

# `make run DATABASE_URL_TEMPLATE=postgresql+asyncpg://postgres@127.0.0.1:5432/envelopepay_{service}`
# runs the services on PostgreSQL, one database each (created when missing).
ifdef DATABASE_URL_TEMPLATE
export DATABASE_URL_TEMPLATE
endif

.PHONY: help run test setup lint bench clean

help:
	@echo "make run     install what is missing, start the whole system on http://127.0.0.1:8000"
	@echo "             (log in as demo@demolaw.example / demo-password); Ctrl-C stops it"
	@echo "make test    install what is missing, run every test on SQLite and PostgreSQL"
	@echo "make setup   install only: the Python environment and system libraries"
	@echo "make lint    ruff"
	@echo "make bench   run bench/*.py, if there are any"
	@echo "make clean   remove var/ (local databases, logs, mail) and $(ARTIFACTS)/"

run:
	@$(BOOTSTRAP) run
	@if [ -n "$$DATABASE_URL_TEMPLATE" ]; then $(PY) -m devtools.pgcreate; fi
	@$(PY) -m devtools.run

test:
	@$(BOOTSTRAP) test
	@mkdir -p $(ARTIFACTS)
	@TEST_ARTIFACTS_DIR="$(CURDIR)/$(ARTIFACTS)" $(PY) -m pytest -q -rfE \
		--junitxml=$(ARTIFACTS)/junit.xml $(ARGS); \
	rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

setup:
	@$(BOOTSTRAP) setup

lint:
	@test -x .venv/bin/ruff || $(BOOTSTRAP) setup
	.venv/bin/ruff check .

bench:
	@$(BOOTSTRAP) run
	@shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "no benchmarks in bench/"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PY) "$$f" || exit $$?; done

clean:
	rm -rf var $(ARTIFACTS)
