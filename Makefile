# The two entry points of the README: `make conformance` and `make test`.
# Each does its own set-up on a fresh machine: a venv in .venv with the project installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
M0_SPEC ?= $(abspath ../shared/spec/01_M0_worker_orcd.md)
export M0_SPEC

.PHONY: install test conformance browser

install: $(VENV)/.installed

# Headless Chromium for the test that opens the HTML coverage report (Debian's package; installed
# when missing on a Debian machine where we are root, else that test skips with the reason).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || true

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Unit, property, real-model and harness self-tests (CUDA tests skip themselves, with the
# reason, without a GPU), then the conformance suite against the reference worker on a
# synthetic model: the harness and the worker checked end to end in under a minute. Without a GPU
# the worker runs on NumPy, in host memory: --allow-host-memory-worker excuses it from the VRAM
# scenarios, and the verdict says NOT VERIFIED with the requirements left unchecked.
test: install browser
	$(BIN)/python -m pytest -q -ra
	model=$$(mktemp -d)/synthetic.gguf && $(BIN)/python -m reference_worker.synthetic --out "$$model" --quant mixed && \
	$(BIN)/python -m pytest features -q -ra -p no:cacheprovider --model "$$model" --allow-host-memory-worker

# The conformance suite against the reference worker on the default (real) model, on CUDA when
# this machine has it, else NumPy (the run's header says which). Results go under reports/:
# cucumber JSON, JUnit XML and results JSON from pytest, then the coverage report. The exit
# status is the suite's: non-zero only when an M0 scenario fails (informational ones never do).
# On NumPy the VRAM scenarios are excused (--allow-host-memory-worker): the verdict is NOT VERIFIED.
conformance: install
	rm -f reports/cucumber.json reports/junit.xml reports/results.json
	model=$$($(BIN)/python -m reference_worker.models fetch) && \
	$(BIN)/python -m pytest features -q -ra --model "$$model" --results-json reports/results.json \
	  --allow-host-memory-worker; \
	status=$$?; $(BIN)/m0-conformance report --results reports/cucumber.json reports/junit.xml --out reports \
	&& exit $$status
