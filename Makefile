# The commands developers and CI share. `make studio` and `make test` do all set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

NPM_STAMP := node_modules/.installed

.PHONY: studio test install assets voice backup-engine browser lint typecheck pytest bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# torch is pinned in pyproject.toml (the CPU build comes from the machine's local wheel).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

# Front-end files (htmx, uPlot, the Vazirmatn font) from the npm registry, copied into
# the package's static/vendor/ (ignored by git) and served by the studio itself.
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $(NPM_STAMP)

assets: $(NPM_STAMP) $(STAMP)
	$(BIN)/python -m lastedocation.web.assets node_modules

# espeak-ng is the studio's offline Persian voice (Debian package); without root or apt
# the studio still starts, and its speech page says the voice is missing.
voice:
	@command -v espeak-ng >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) || echo "note: could not install espeak-ng; text-to-speech with espeak will be unavailable"

# restic (Debian package) is the backup engine; rclone, its transport, comes from pip.
backup-engine:
	@command -v restic >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq restic >/dev/null) || echo "note: could not install restic; backups will be unavailable"

install: $(STAMP) assets voice backup-engine

# The end-to-end tests drive Debian's Chromium; a load test uploads with curl; the
# PostgreSQL tests start a private server from Debian's binaries; the reverse-proxy tests
# start Debian's nginx (in the foreground, never its service) with a throwaway certificate.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	@command -v curl >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq curl >/dev/null)
	@command -v espeak-ng >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)
	@test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx >/dev/null)
	@command -v openssl >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq openssl >/dev/null)

## Install everything and start the studio on http://127.0.0.1:8000 (data in ./studio-data)
studio: install
	$(BIN)/lastedocation serve

## Install everything the tests need, then lint, type-check and run the tests
test: install browser lint typecheck pytest

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/dataset_bench.py

## Screenshots of the main pages (Persian/light, English/dark; desktop and phone) into screenshots/
screenshots: install browser
	$(BIN)/python -m tests.e2e.screenshots screenshots

clean:
	rm -rf node_modules $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
