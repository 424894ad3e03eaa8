# mailgateway: `make demo` to see it work, `make test` to check it.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
EXAMPLE = config/example
DEMO_DB = $(CURDIR)/var/demo.db
KILLS ?= 250
FUZZ_RUNS ?= 1000000
FUZZ_JOBS ?= 1

.PHONY: venv demo run test lint bench soak fuzz clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/python scripts/demo.py --config $(EXAMPLE) --database $(DEMO_DB)

run: venv
	MAILGATEWAY_DATABASE_URL=sqlite:///$(DEMO_DB) $(BIN)/mailgateway db upgrade --config $(EXAMPLE)
	MAILGATEWAY_DATABASE_URL=sqlite:///$(DEMO_DB) $(BIN)/mailgateway serve --config $(EXAMPLE)

test: venv
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check mailgateway tests bench scripts
	$(BIN)/ruff format --check mailgateway tests bench scripts
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/bench_scale.py
	$(BIN)/python bench/bench_forwards.py
	$(BIN)/python bench/bench_imap.py

soak: venv
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/soak.py --kills $(KILLS) --out var/soak.json

fuzz: venv
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/fuzz.py --runs $(FUZZ_RUNS) --jobs $(FUZZ_JOBS) --out var/fuzz.json

clean:
	rm -rf var build *.egg-info .pytest_cache .mypy_cache .ruff_cache
