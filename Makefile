# Every target creates the local virtual environment (.venv) when it is missing
# or older than what the install builds from, so each one works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOG := data/elastic-examples_apache_logs.log.gz
# The install builds the C hot path of the memory storage; a build error stops
# it (instead of leaving the tests to run on the Python path alone).
BUILD_INPUTS := pyproject.toml setup.py src/sliding_window_throttler/storage/_hot_path.c
export SWT_REQUIRE_EXTENSIONS := 1

.PHONY: demo test check lint typecheck unit bench clean redis-binaries

$(STAMP): $(BUILD_INPUTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,redis]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/swt replay $(LOG) --limit 20/10s --limit 60/minute --top 5

test: check unit

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) redis-binaries
	$(BIN)/pytest

# The Redis tests start their own redis-server processes; install the binaries
# from the system's packages when they are missing (needs root, as in CI).
redis-binaries:
	@if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; \
		else \
			echo "redis-server and redis-cli are needed by the tests: install them (Debian/Ubuntu: sudo apt-get install redis-server redis-tools)"; exit 1; \
		fi; \
	fi

# The benchmarks run in an environment of their own: the peers they measure are
# pinned in bench/requirements.txt, and limits 5.x needs redis-py below 8.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCHES := bench/memory_decisions.py bench/replay_speed.py \
	$(wildcard bench/breaker_open.py) bench/redis_decisions.py

$(BENCH_STAMP): $(BUILD_INPUTS) bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[redis]' -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) redis-binaries
	@set -e; for script in $(BENCHES); do \
		echo "== $$script"; $(BENCH_VENV)/bin/python $$script; echo; \
	done

clean:
	rm -rf $(VENV) .venv-bench .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	find src -name '*.so' -delete
