# voicegw developer commands. Every target bootstraps what it needs, idempotently.
SHELL := /bin/bash
PYTHON ?= python3.11
UV_VERSION := 0.13.9
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv

UV := .tools/bin/uv
VENV_STAMP := .venv/.synced
# The browser widget's test driver (Playwright); installed only where npm is.
NPM_STAMP := clients/web/node_modules/.installed
NPM := $(shell command -v npm 2>/dev/null)

.PHONY: run test gen lint bench install clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV_STAMP): $(UV) uv.lock pyproject.toml clients/python/pyproject.toml
	$(UV) sync --frozen --all-groups
	touch $(VENV_STAMP)

$(NPM_STAMP): clients/web/package.json clients/web/package-lock.json
	cd clients/web && npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

install: $(VENV_STAMP) $(if $(NPM),$(NPM_STAMP))

run: install
	.venv/bin/voicegw dev

test: install
	.venv/bin/python -m pytest $(PYTEST_ARGS)

gen: install
	.venv/bin/python -m gateway.tools.gen_protos

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy gateway pipelines transports billing clients/python/voicegw_client
	.venv/bin/python -m gateway.tools.gen_protos --check --lint

# Not part of `make test`: minutes long, and wants an otherwise idle machine with 2+ CPUs.
# BENCH_ARGS go to the call benchmark, e.g. BENCH_ARGS="--calls-only --n 1,10 --profile 10";
# BENCH_ARGS="--ledger-only [--n 1,4,16,64 --seconds 5]" runs only the ledger throughput one.
bench: install
	.venv/bin/python -m tests.bench.run $(BENCH_ARGS)

clean:
	rm -rf .venv .tools clients/web/node_modules
