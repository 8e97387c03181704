# pAirZero testbed. Quick start: `make demo` (set up + loopback experiment), `make test`.
VENV ?= .venv
export PAIRZERO_VENV := $(VENV)
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow lint bench grc clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/pairzero loopback --config configs/loopback.yaml

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs grc_flowgraphs/build .pytest_cache .ruff_cache
