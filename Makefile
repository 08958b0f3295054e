# MLX Portal: `make run` starts the portal, `make test` runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

# Django 6 needs Python 3.12+. Take the newest one found on PATH or under pyenv.
PYTHON ?= $(shell for c in python3.13 python3.12 python3.14 python3 \
	$$HOME/.pyenv/versions/3.13*/bin/python3 $$HOME/.pyenv/versions/3.12*/bin/python3; do \
	  p=$$(command -v $$c 2>/dev/null) || continue; \
	  $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; \
	done)

REDIS_URL ?= redis://127.0.0.1:6379/0
CHROMIUM ?= /usr/bin/chromium

.PHONY: help run address test lint format check venv redis static browser front node clean bench

help:
	@echo "make run    start the portal (web, worker, beat) on PORTAL_BIND (default $(PORTAL_BIND_DEFAULT))"
	@echo "make test   run the whole test suite"
	@echo "make lint   ruff (lint + format), import contracts, mypy, Django checks (make test runs it too)"
	@echo "make bench  the benchmarks of docs/benchmarks.md (a few minutes each; not part of test)"

$(VENV)/.installed: requirements.txt
	@test -n "$(PYTHON)" || { echo "Python 3.12 or newer is needed (python3.12 / python3.13 on PATH)."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	@touch $@

venv: $(VENV)/.installed

# Redis must answer at REDIS_URL. A local one is started when redis-server is installed.
redis: venv
	@REDIS_URL="$(REDIS_URL)" $(PY) -m config.redis_check || { \
	  case "$(REDIS_URL)" in \
	    redis://127.0.0.1:*|redis://localhost:*) \
	      if command -v redis-server >/dev/null; then \
	        port=$$(echo "$(REDIS_URL)" | sed -E 's#redis://[^:]+:([0-9]+).*#\1#'); \
	        echo "Starting the local redis-server on port $$port."; \
	        mkdir -p var && redis-server --daemonize yes --bind 127.0.0.1 --port $$port \
	          --save "" --appendonly no --dir "$(CURDIR)/var" --logfile "$(CURDIR)/var/redis.log"; \
	        for i in $$(seq 50); do REDIS_URL="$(REDIS_URL)" $(PY) -m config.redis_check -q && exit 0; sleep 0.1; done; \
	      fi;; \
	  esac; \
	  echo "No Redis answers at $(REDIS_URL)."; \
	  echo "Start one (macOS: 'brew install redis && brew services start redis';"; \
	  echo "Debian/Ubuntu: 'sudo apt-get install redis-server') or set REDIS_URL."; \
	  exit 1; }

static: venv
	$(PY) -m config.secret_key
	$(PY) manage.py collectstatic --noinput --verbosity 0

# The data directory (./var, or MLX_PORTAL_DATA_DIR) and the secret key in it, unless
# DJANGO_SECRET_KEY is set: the settings only read them (config/secret_key.py).
run: venv redis
	$(PY) -m config.secret_key
	$(PY) manage.py migrate --noinput
	$(PY) manage.py createcachetable
	$(PY) manage.py collectstatic --noinput --verbosity 0
	@$(MAKE) --no-print-directory address
	REDIS_URL="$(REDIS_URL)" PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho start -f Procfile

# Where `make run` serves: PORTAL_BIND as honcho gives it to the Procfile (the environment, .env
# over it), else the Procfile's own default.
PORTAL_BIND_DEFAULT := $(shell sed -nE 's/^web:.*\$$\{PORTAL_BIND:-([^}]*)\}.*/\1/p' Procfile)
address:
	@$(VENV)/bin/honcho run sh -c 'echo "MLX Portal: http://$${PORTAL_BIND:-$(PORTAL_BIND_DEFAULT)}  (the first account to sign up becomes the admin)"'

# The browser tests drive Debian's Chromium; install it when it is missing and apt-get is here.
browser:
	@test -x "$(CHROMIUM)" || { \
	  if command -v apt-get >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "Installing chromium for the browser tests (apt-get)."; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser tests need Chromium or Chrome: set CHROMIUM=/path/to/chrome."; exit 1; \
	  fi; }

# The single sign-on tests run a real OpenID provider (the oidc-provider npm package, which
# tests/support/oidc_provider.py installs into the test cache) on Node.js; install Node and npm
# when they are missing and apt-get is here.
node:
	@command -v npm >/dev/null || { \
	  if command -v apt-get >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "Installing Node.js and npm for the single sign-on tests (apt-get)."; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nodejs npm >/dev/null; \
	  else \
	    echo "The single sign-on tests need Node.js and npm (macOS: brew install node)."; exit 1; \
	  fi; }

# The front's tests (tests/ops/test_front.py) run nginx with deploy/nginx/mlx-portal.conf, as the
# current user on free ports. Install it when it is missing and apt-get is here, and leave no
# system nginx running on port 80 (Debian's package starts and enables one).
front:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  if command -v apt-get >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "Installing nginx for the front's tests (apt-get); its system service is stopped and disabled."; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nginx >/dev/null; \
	    $$SUDO systemctl disable --now nginx >/dev/null 2>&1 || { \
	      $$SUDO systemctl disable nginx >/dev/null 2>&1; $$SUDO service nginx stop >/dev/null 2>&1; true; }; \
	  else \
	    echo "nginx is not installed: the front's tests are skipped (macOS: brew install nginx)."; \
	  fi; }

# The suite uses its own Redis databases and data directory so it never touches `make run`'s
# (database 0, ./var). Both can be overridden to run two suites side by side.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_DATA_DIR ?= $(CURDIR)/var/test
# The whole suite runs in TEST_WORKERS pytest-xdist workers: most tests wait on real servers,
# browsers and workers, and the escaping walk (~3 minutes of CPU) is one worker's load among
# others. --dist loadfile keeps each file in one worker, so a module's model server starts once;
# the files with slow tests are handed out first (tests/conftest.py), the short ones fill the end.
# Worker gwN owns Redis database 15-N (gw0 15, gw1 14, gw2 13: counted down from
# TEST_REDIS_URL's), the data directory var/test/gwN, the test database test_…_gwN and a slice
# of the model servers' ports (config/test_workers.py; tests/README.md).
# With PYTEST_ARGS (the fast path), one process runs what it names (add -n 2 for workers).
TEST_WORKERS ?= 3
PYTEST_ALL := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: venv browser front node
	@REDIS_URL="$(TEST_REDIS_URL)" $(PY) -m config.redis_check || { echo "The tests need Redis at $(TEST_REDIS_URL)."; exit 1; }
	REDIS_URL="$(TEST_REDIS_URL)" MLX_PORTAL_DATA_DIR="$(TEST_DATA_DIR)" CHROMIUM="$(CHROMIUM)" \
	  $(PY) -m pytest $(or $(PYTEST_ARGS),$(PYTEST_ALL))
	@$(MAKE) --no-print-directory lint

# Seconds once mypy's cache is warm. The layering contracts are in .importlinter, mypy's files in
# pyproject.toml. Django's checks run on the test settings (a fixed key, so they need no
# `make run` first) and an in-memory database: makemigrations --check compares the models with
# the migration files and needs no data.
LINT_DJANGO := DJANGO_SETTINGS_MODULE=config.test_settings DATABASE_URL=sqlite://:memory:
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/mypy
	$(LINT_DJANGO) $(PY) manage.py check
	$(LINT_DJANGO) $(PY) manage.py makemigrations --check --dry-run

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Benchmarks (docs/benchmarks.md): each starts its own portal processes on free loopback ports,
# uses Redis database 7 and a throwaway data directory, and prints ratios against a baseline.
# Needs an installed venv (`make venv`, or VENV=path/to/venv); it installs nothing.
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/7
BENCHES ?= gateway_stream status_poll start_overhead download catalog tiles_cpu usage_page structured
bench:
	@REDIS_URL="$(BENCH_REDIS_URL)" $(PY) -m config.redis_check || { echo "The benches need Redis at $(BENCH_REDIS_URL)."; exit 1; }
	@for b in $(BENCHES); do echo "== python -m bench.$$b"; \
	  BENCH_REDIS_URL="$(BENCH_REDIS_URL)" $(PY) -m bench.$$b || exit 1; done

clean:
	rm -rf $(VENV) var/staticfiles var/test
