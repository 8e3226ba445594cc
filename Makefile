# bids-qsm developer entry points. Needs only Python >= 3.10 and make (plus network access to
# PyPI the first time, to install the dependencies into .venv).
#
#   make demo            simulate a small cohort, run the participant and group levels on it
#   make test            ruff check + the whole test suite (except the container test)
#   make test-fast       the tests not marked slow, 2 pytest workers (PYTEST_JOBS; ~2 min on 2 cores)
#   make lint            ruff check + ruff format --check (+ hadolint on the Dockerfile)
#   make bench           run every benchmarks/bench_*.py
#   make test-container  build the container and smoke-test it (scripts/container-smoke.sh)
#   make clean           remove the demo outputs and caches (keeps .venv)
#
# Variables worth overriding, e.g. `make demo DEMO_SIM_ARGS="--preset small --n-controls 8"`.
# The participant level runs several subjects at once (--nprocs, default: all CPUs; threads per
# subject: --omp-nthreads, default CPUs / subjects at once), see docs/usage.md.

PYTHON          ?= python3
VENV            ?= .venv
DEMO_DIR        ?= demo
DEMO_SIM_ARGS   ?= --preset tiny --n-controls 4 --n-patients 4 --seed 1 --lesions --effect-scale 2
DEMO_PART_ARGS  ?= --sloppy
DEMO_GROUP_ARGS ?= --n-permutations 100
PYTEST_ARGS     ?= -m "not container"
PYTEST_FAST     ?= -m "not slow and not container and not slurm"
PYTEST_JOBS     ?= 2
DEMO_ABS        := $(abspath $(DEMO_DIR))

VPY    := $(VENV)/bin/python
STAMP_RUN  := $(VENV)/.stamp-install
STAMP_TEST := $(VENV)/.stamp-install-test

.PHONY: demo demo-data demo-participant demo-group test test-fast lint bench test-container clean venv

$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

venv: $(STAMP_RUN)

# Stamps: reinstall only when pyproject.toml changes (a second `make test` does not reinstall).
$(STAMP_RUN): pyproject.toml | $(VPY)
	$(VPY) -m pip install --quiet -e .
	@touch $@

$(STAMP_TEST): pyproject.toml | $(VPY)
	$(VPY) -m pip install --quiet -e ".[test]"
	@touch $@ $(STAMP_RUN)

# ---------------------------------------------------------------------------- demo
demo: demo-data demo-participant demo-group
	@echo ""
	@echo "== bids-qsm demo finished =="
	@echo "Input BIDS dataset:  $(DEMO_DIR)/bids"
	@echo "Derivatives:         $(DEMO_DIR)/derivatives"
	@echo "Reports:"
	@ls $(DEMO_DIR)/derivatives/sub-*.html $(DEMO_DIR)/derivatives/group/group.html 2>/dev/null | sed 's/^/  /'
	@echo "Logs and settings:   $(DEMO_DIR)/derivatives/sub-*/log/ and $(DEMO_DIR)/derivatives/group/log/"

demo-data: $(STAMP_RUN)
	@if [ -f $(DEMO_DIR)/bids/dataset_description.json ]; then \
	  echo "Using the existing simulated dataset in $(DEMO_DIR)/bids (make clean to regenerate)"; \
	else \
	  echo "$(VENV)/bin/bids-qsm-simulate $(DEMO_ABS)/bids $(DEMO_SIM_ARGS)"; \
	  $(VENV)/bin/bids-qsm-simulate $(DEMO_ABS)/bids $(DEMO_SIM_ARGS); \
	fi

demo-participant: $(STAMP_RUN)
	$(VENV)/bin/bids-qsm $(DEMO_ABS)/bids $(DEMO_ABS)/derivatives participant \
	  -w $(DEMO_ABS)/work --lesion-masks $(DEMO_ABS)/bids/derivatives/lesions $(DEMO_PART_ARGS)

demo-group: $(STAMP_RUN)
	$(VENV)/bin/bids-qsm $(DEMO_ABS)/bids $(DEMO_ABS)/derivatives group $(DEMO_GROUP_ARGS)

# ---------------------------------------------------------------------------- checks
test: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VPY) -m pytest $(PYTEST_ARGS) -n $(PYTEST_JOBS) --dist loadfile; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

test-fast: $(STAMP_TEST)
	$(VPY) -m pytest $(PYTEST_FAST) -q -n $(PYTEST_JOBS) --dist loadfile

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@if [ -f Dockerfile ] && [ -x $(VENV)/bin/hadolint ]; then $(VENV)/bin/hadolint Dockerfile; fi

bench: $(STAMP_RUN)
	@set -e; for script in benchmarks/bench_*.py; do \
	  echo "== $$script"; $(VPY) $$script; \
	done

test-container:
	bash scripts/container-smoke.sh

clean:
	rm -rf $(DEMO_DIR) build dist .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print | xargs rm -rf
