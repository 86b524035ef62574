# The two entry points of the README: `make conformance` and `make test`.
# Each does its own set-up on a fresh machine: a venv in .venv with the project installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
M0_SPEC ?= $(abspath ../shared/spec/01_M0_worker_orcd.md)
export M0_SPEC

.PHONY: install test conformance

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Unit, property, real-model and harness self-tests (CUDA tests skip themselves, with the
# reason, without a GPU), then the conformance suite against the reference worker on three
# synthetic models, each in about a minute: a qwen2-style one with every weight type, a phi3 one
# (SentencePiece vocabulary, fused weights), a gpt2 one (the GPT-style adapter, M0-W-1215), and a
# gpt-oss one (MXFP4 experts, tokenizer.json beside it) that takes the GPT-OSS path. The phi3
# model's seed is one whose long job (steps/jobs.py LONG_JOB) samples no end-of-generation token
# before max_tokens: with 3 such tokens in 640, most random phi3 models end it early, and the
# scenarios that need a running job then fail for the harness's reason, not the worker's.
test: install
	$(BIN)/python -m pytest -q -ra
	model=$$(mktemp -d)/synthetic.gguf && $(BIN)/python -m reference_worker.synthetic --out "$$model" --quant mixed && \
	$(BIN)/python -m pytest features -q -ra -p no:cacheprovider --model "$$model"
	phi3=$$(mktemp -d)/phi3.gguf && \
	$(BIN)/python -m reference_worker.synthetic --out "$$phi3" --arch phi3 --quant mixed --seed 5 && \
	$(BIN)/python -m pytest features -q -ra -p no:cacheprovider --model "$$phi3"
	gpt2=$$(mktemp -d)/synthetic-gpt2.gguf && $(BIN)/python -m reference_worker.synthetic --out "$$gpt2" --arch gpt2 \
	--quant mixed && $(BIN)/python -m pytest features -q -ra -p no:cacheprovider --model "$$gpt2"
	model=$$(mktemp -d)/gpt-oss.gguf && \
	$(BIN)/python -m reference_worker.synthetic --arch gpt-oss --tokenizer-json --out "$$model" && \
	$(BIN)/python -m pytest features -q -ra -p no:cacheprovider --model "$$model"

# The conformance suite against the reference worker on the default (real) model, on CUDA when
# this machine has it, else NumPy (the run's header says which). Results go under reports/:
# cucumber JSON, JUnit XML and results JSON from pytest, then the coverage report. The exit
# status is the suite's: non-zero only when an M0 scenario fails (informational ones never do).
conformance: install
	rm -f reports/cucumber.json reports/junit.xml reports/results.json
	model=$$($(BIN)/python -m reference_worker.models fetch) && \
	$(BIN)/python -m pytest features -q -ra --model "$$model" --results-json reports/results.json; \
	status=$$?; $(BIN)/m0-conformance report --results reports/cucumber.json reports/junit.xml --out reports \
	&& exit $$status
