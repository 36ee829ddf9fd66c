# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-slow test-all

setup:
	@bash scripts/setup.sh

# The demo needs only the device install (no torch) and Mosquitto (installed via apt-get when root).
demo:
	@bash scripts/setup.sh --device --system
	$(VENV)/bin/smearscope demo

# The default suite (about 10 minutes on 2 cores); slow fault-injection and training tests excluded.
test:
	@bash scripts/setup.sh --system
	$(PY) -m pytest -m "not slow"

# The slow tests alone (CI runs them after `make test`).
test-slow:
	@bash scripts/setup.sh --system
	$(PY) -m pytest -m slow || [ $$? -eq 5 ]  # 5: no slow tests collected
